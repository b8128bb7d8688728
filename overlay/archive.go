package overlay

import "errors"

// Open reads the image tarball at path (docker save legacy or 25+, OCI
// archive, or any of them gzip-compressed), picks one image by opts, and
// returns it with every layer indexed and mapped.
func Open(path string, opts OpenOptions) (*Image, error) {
	return nil, errors.New("overlay.Open: not implemented")
}
