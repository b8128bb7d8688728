package archive

import (
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ImageLayers is one image of a tarball and the diff_ids of its layers,
// base first.
type ImageLayers struct {
	Ref ImageRef
	// DiffIDs is nil when the tarball leaves out the image's config (a
	// platform saved without its blobs).
	DiffIDs []digest.Digest
}

// ListImageLayers lists every image of the tarball at path (each platform
// of a multi-platform image apart), as Image.Images does, with the
// diff_ids its config lists: it reads the metadata only, no layer.
// cacheDir is needed only for a tarball compressed as a whole. Inspect's
// report uses it to say which layers the images share
// (Report.AddShared).
func ListImageLayers(path, cacheDir string) ([]ImageLayers, error) {
	ar, groups, err := openListing(path, cacheDir)
	if err != nil {
		return nil, err
	}
	defer ar.close()
	var out []ImageLayers
	for _, g := range groups {
		for _, c := range g.cands {
			il := ImageLayers{Ref: c.ref()}
			if c.missing == "" && ar.has(c.configMember()) {
				var cfg ocispec.Image
				if err := ar.readJSON("image config", c.configMember(), &cfg); err != nil {
					return nil, err
				}
				il.DiffIDs = cfg.RootFS.DiffIDs
				if il.DiffIDs == nil {
					il.DiffIDs = []digest.Digest{}
				}
			}
			out = append(out, il)
		}
	}
	return out, nil
}
