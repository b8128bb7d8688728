package archive

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Contents is an image tarball seen member by member, for the commands
// that copy a tarball while leaving blobs out or putting them back (thin,
// complete) and for listing what a tarball holds (have): every image in
// it, every platform of each, and which members describe it and hold its
// layers. Nothing is indexed, hashed or decompressed but the outer
// tarball when it is compressed as a whole.
type Contents struct {
	Path string
	// Format is the tarball's layout.
	Format Format
	// Compression is how the file is compressed as a whole; Data is the
	// uncompressed tar in every case.
	Compression tarindex.Compression
	Data        []byte
	// Dir: the source is a directory (an OCI layout, an extracted docker
	// save) whose files are the members; Data is then nil.
	Dir bool
	// Groups are the images as a user names them (a manifest.json entry, a
	// top-level index.json entry); Images the platform-specific images
	// they hold, in order.
	Groups []ContentGroup
	Images []ContentImage

	ar     *archive
	groups []*imageGroup
	cands  []*candidate
}

// ContentGroup is one image as a user names it: one tag, or one
// (possibly multi-platform) index.
type ContentGroup struct {
	Tags []string
	// Digest is the top-level descriptor's (index.json entry); "" for a
	// docker save entry.
	Digest digest.Digest
	Images []int // indexes in Contents.Images
}

// ContentImage is one platform-specific image: its config and layers.
type ContentImage struct {
	Ref   ImageRef
	Group int // index in Contents.Groups
	// Missing, when set, says why the image cannot be read (a platform
	// saved without its blobs); Config, DiffIDs and Layers are then empty.
	Missing string
	// Config is the member holding the config; Metadata every member
	// that describes the image: the indexes leading to it, its manifest,
	// its config.
	Config   string
	Metadata []string
	DiffIDs  []digest.Digest
	Layers   []ContentLayer
}

// ContentLayer is one layer of an image as its manifest names it.
type ContentLayer struct {
	DiffID digest.Digest
	// Member is the member the manifest names (it may be a link, or
	// absent in a thin tarball).
	Member string
	// Digest is the blob's digest as its name or descriptor says (""
	// when neither does, as for docker save's <id>/layer.tar: the blob
	// is then the uncompressed layer, whose digest is DiffID).
	Digest    digest.Digest
	Size      int64 // from the descriptor; 0 when unknown
	MediaType string
}

// ErrMemberAbsent: the member (or the member a link in the tarball leads
// to) is not in the tarball.
var ErrMemberAbsent = errMemberAbsent

// OpenContents opens the image tarball at path (plain, or gzip or zstd as
// a whole, which needs cacheDir to decompress into) and reads its image
// metadata. maxEntries bounds the outer tarball's members (0: no limit).
func OpenContents(path, cacheDir string, maxEntries int) (_ *Contents, err error) {
	var cache *tarindex.Cache
	if cacheDir != "" {
		cache = &tarindex.Cache{Dir: cacheDir}
	}
	comp, err := fileCompression(path)
	if err != nil {
		return nil, err
	}
	// Thin and complete copy members byte for byte: the tarball's bytes
	// as a mapping (a compressed tarball decompressed into the cache).
	ar, err := openArchive(path, archiveOptions{cache: cache, maxEntries: maxEntries})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			ar.close()
		}
	}()
	groups, err := ar.parse()
	if err != nil {
		return nil, err
	}
	c := &Contents{Path: path, Format: ar.format, Compression: comp, Data: ar.data, Dir: ar.dir != nil, ar: ar, groups: groups}
	for gi, g := range groups {
		cg := ContentGroup{Tags: append([]string{}, g.tags...), Digest: g.digest}
		for _, cand := range g.cands {
			im, err := c.image(cand, gi)
			if err != nil {
				return nil, err
			}
			cg.Images = append(cg.Images, len(c.Images))
			c.Images = append(c.Images, im)
			c.cands = append(c.cands, cand)
		}
		c.Groups = append(c.Groups, cg)
	}
	return c, nil
}

// fileCompression tells how the file at p is compressed as a whole.
func fileCompression(p string) (tarindex.Compression, error) {
	f, err := os.Open(p)
	if err != nil {
		return tarindex.CompressionNone, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return tarindex.CompressionNone, err
	}
	head := make([]byte, 8)
	n, _ := io.ReadFull(f, head)
	return tarindex.DetectCompression(head[:n]), nil
}

// image describes the candidate cand of group gi.
func (c *Contents) image(cand *candidate, gi int) (ContentImage, error) {
	ar := c.ar
	im := ContentImage{Ref: cand.ref(), Group: gi, Missing: cand.missing}
	g := cand.group
	for d := range g.seen {
		im.Metadata = append(im.Metadata, BlobPath(d))
	}
	if cand.manifestDigest != "" {
		im.Metadata = append(im.Metadata, BlobPath(cand.manifestDigest))
	}
	if im.Missing != "" {
		return im, nil
	}
	im.Config = cand.configMember()
	im.Metadata = append(im.Metadata, im.Config)
	if _, err := ar.lookup(im.Config); errors.Is(err, errMemberAbsent) {
		im.Missing = fmt.Sprintf("its config %s is not in the tarball", im.Config)
		return im, nil
	}
	var cfg ocispec.Image
	if err := ar.readJSON("image config", im.Config, &cfg); err != nil {
		return im, err
	}
	if im.Ref.Platform == "" {
		im.Ref.Platform = platformString(normPlatform(cfg.Platform))
	}
	ids := cfg.RootFS.DiffIDs
	if len(ids) != cand.numLayers() {
		return im, fmt.Errorf("%s: image %s: its config (%s) lists %d diff_ids but its manifest lists %d layers", ar.path, g.name(), im.Config, len(ids), cand.numLayers())
	}
	for i, d := range ids {
		if err := d.Validate(); err != nil {
			return im, fmt.Errorf("%s: image %s: config %s: diff_ids[%d] %q: %w", ar.path, g.name(), im.Config, i, d, err)
		}
		member, nd, desc := cand.layerMember(i)
		l := ContentLayer{DiffID: d, Member: member, Digest: desc.Digest, Size: desc.Size, MediaType: desc.MediaType}
		if l.Digest == "" {
			l.Digest = nd
		}
		im.Layers = append(im.Layers, l)
	}
	im.DiffIDs = ids
	return im, nil
}

// Close releases the tarball's mapping; Data must not be used afterwards.
func (c *Contents) Close() error { return c.ar.close() }

// Resolve follows name through the links of the tarball (symlinks
// relative to their directory, hardlinks) to the regular member that
// holds its bytes. links are the link members passed on the way (name
// first when it is one). When nothing holds the bytes, the error wraps
// ErrMemberAbsent and end is the name the last link leads to (name
// itself when there is no link): where the bytes would go. In a
// directory, the members are its files and the links its symlinks.
func (c *Contents) Resolve(name string) (stored string, links []string, end string, err error) {
	ar := c.ar
	orig := name
	name, err = tarindex.CleanName(name)
	if err != nil {
		return "", nil, "", fmt.Errorf("member %q: %w", orig, err)
	}
	if ar.dir != nil {
		links, end := ar.dir.followLinks(name)
		_, err := ar.lookup(end)
		switch {
		case err == nil:
			return end, links, end, nil
		case errors.Is(err, errMemberAbsent):
			return "", links, end, fmt.Errorf("%s: %s: %w", ar.path, orig, errMemberAbsent)
		}
		return "", links, "", fmt.Errorf("%s: %w", ar.path, err)
	}
	for hop := 0; hop <= maxLinkHops; hop++ {
		i, ok := ar.byName[name]
		if !ok {
			return "", links, name, fmt.Errorf("%s: %s: %w", ar.path, orig, errMemberAbsent)
		}
		e := &ar.entries[i]
		switch e.Type {
		case tarindex.TypeReg:
			return name, links, name, nil
		case tarindex.TypeHardlink:
			links = append(links, name)
			name = e.Linkname
		case tarindex.TypeSymlink:
			links = append(links, name)
			target := e.Linkname
			if !strings.HasPrefix(target, "/") {
				target = path.Join(path.Dir(name), target)
			}
			if name, err = tarindex.CleanName(target); err != nil {
				return "", links, "", fmt.Errorf("%s: member %s: symlink to %q: %w", ar.path, links[len(links)-1], e.Linkname, err)
			}
		default:
			return "", links, "", fmt.Errorf("%s: member %s: is a %s, not a file", ar.path, name, e.Type)
		}
	}
	return "", links, "", fmt.Errorf("%s: member %s: too many levels of links", ar.path, orig)
}

// Bytes is the content of the member name (links followed), a slice of
// Data.
func (c *Contents) Bytes(name string) ([]byte, error) {
	b, err := c.ar.lookup(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Path, err)
	}
	return b.mapped(), nil
}

// Has tells whether name resolves to a regular member.
func (c *Contents) Has(name string) bool { return c.ar.has(name) }

// Match returns the groups the query q names, as --image does (a tag, or
// a digest prefix of an index, manifest or config); an error matching
// ErrNoSuchImage if none.
func (c *Contents) Match(q string) ([]int, error) {
	matched := matchQuery(strings.TrimSpace(q), c.cands)
	if len(matched) == 0 {
		return nil, Errorf(ErrNoSuchImage, "%s: no image matches %q; the tarball has: %s", c.Path, q, describeGroups(c.ar, c.groups, nil))
	}
	var out []int
	for gi, g := range c.groups {
		for _, m := range matched {
			if m.group == g {
				out = append(out, gi)
				break
			}
		}
	}
	return out, nil
}

// ManifestConfigDigest is the digest of the config a manifest.json entry
// names: the one its blob path says, else that of its content; "" when
// the config is absent.
func (c *Contents) ManifestConfigDigest(e DockerManifestEntry) digest.Digest {
	if d := namedDigest(e.Config); d != "" {
		return d
	}
	b, err := c.ar.lookup(e.Config)
	if err != nil {
		return ""
	}
	d, err := b.digest(digest.SHA256)
	if err != nil {
		return ""
	}
	return d
}

// Name is how messages name group gi: its tags, or its short digest.
func (c *Contents) Name(gi int) string { return c.groups[gi].name() }

// ReadJSON decodes the member name (links followed) into v.
func (c *Contents) ReadJSON(name string, v any) error {
	b, err := c.Bytes(name)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %s: malformed JSON: %w", c.Path, name, err)
	}
	return nil
}

// followLinks follows the symlinks from name (relative ones, inside the
// directory) to the name of the file they lead to, or where it would be;
// links are the symlinks passed.
func (d *dirSource) followLinks(name string) (links []string, end string) {
	for hop := 0; hop <= maxLinkHops; hop++ {
		fi, err := d.root.Lstat(name)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			return links, name
		}
		target, err := d.root.Readlink(name)
		if err != nil || strings.HasPrefix(target, "/") {
			return links, name
		}
		next, err := tarindex.CleanName(path.Join(path.Dir(name), target))
		if err != nil {
			return links, name
		}
		links = append(links, name)
		name = next
	}
	return links, name
}
