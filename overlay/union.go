package overlay

import "errors"

// BuildUnion stacks the image's layers into the tree a container runtime
// would unpack, applying whiteouts and opaque directories per the OCI spec.
func BuildUnion(img *Image) (*Tree, error) {
	return nil, errors.New("overlay.BuildUnion: not implemented")
}

// BuildLayersView returns a tree whose root holds one directory per layer,
// named NN-<first 12 hex digits of the diff_id>, each showing that layer's
// entries exactly as stored (whiteout files included).
func BuildLayersView(img *Image) (*Tree, error) {
	return nil, errors.New("overlay.BuildLayersView: not implemented")
}
