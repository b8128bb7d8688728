package archive

import (
	"fmt"

	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// StoredDiffIDs lists the diff_ids of the layers whose blobs the tarball
// (or directory) at path holds, over every image and platform in it,
// reading only its metadata: no layer is indexed, hashed or decompressed.
// A layer the tarball lists but leaves out (a thin tarball's) is not
// included: the tarball cannot supply it. cacheDir is needed only for a
// tarball that is compressed as a whole.
func StoredDiffIDs(path, cacheDir string) (map[digest.Digest]bool, error) {
	ar, groups, err := openListing(path, cacheDir)
	if err != nil {
		return nil, err
	}
	defer ar.close()
	out := map[digest.Digest]bool{}
	for _, g := range groups {
		for _, c := range g.cands {
			if err := addStoredDiffIDs(ar, c, out); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// addStoredDiffIDs adds the diff_ids of c's layers that ar holds.
func addStoredDiffIDs(ar *archive, c *candidate, out map[digest.Digest]bool) error {
	if c.missing != "" || !ar.has(c.configMember()) {
		return nil // a platform saved without its blobs
	}
	var cfg ocispec.Image
	if err := ar.readJSON("image config", c.configMember(), &cfg); err != nil {
		return err
	}
	ids := cfg.RootFS.DiffIDs
	if len(ids) != c.numLayers() {
		return fmt.Errorf("%s: image %s: its config (%s) lists %d diff_ids but its manifest lists %d layers", ar.path, c.group.name(), c.configMember(), len(ids), c.numLayers())
	}
	for i, d := range ids {
		if d.Validate() != nil {
			continue
		}
		if member, _, _ := c.layerMember(i); ar.has(member) {
			out[d] = true
		}
	}
	return nil
}

// openListing opens the tarball (or directory) at path to read its
// images' metadata, no layer; cacheDir is needed only for a tarball
// compressed as a whole. The caller closes the archive.
func openListing(path, cacheDir string) (*archive, []*imageGroup, error) {
	var cache *tarindex.Cache
	if cacheDir != "" {
		cache = &tarindex.Cache{Dir: cacheDir}
	}
	ar, err := openArchive(path, archiveOptions{cache: cache, inPlace: true})
	if err != nil {
		return nil, nil, err
	}
	groups, err := ar.parse()
	if err != nil {
		ar.close()
		return nil, nil, err
	}
	return ar, groups, nil
}
