// Package archive opens an image tarball: plain, or gzip or zstd as a whole;
// laid out as docker save writes it (before Docker 25 and since) or as an
// OCI archive. It chooses the image and platform asked for, checks every
// index, manifest and config against its digest, finds each layer (in
// --base tarballs too, for a thin tarball) and indexes it, and reports what
// `imgmount inspect` prints. A directory holding the same files (an OCI
// image layout, an extracted docker save) is read like the tarball. What
// the layers show together is overlay/union's business; it knows nothing
// of whiteouts or FUSE.
package archive

import (
	"bytes"
	"errors"
	"io"
	"os"

	"github.com/imgmount/imgmount/internal/progress"

	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Format is the layout of an image tarball.
type Format string

const (
	FormatDockerLegacy Format = "docker-archive" // docker save before 25: <id>/layer.tar
	FormatDockerOCI    Format = "docker-oci"     // docker save 25+: OCI layout plus manifest.json
	FormatOCI          Format = "oci-archive"    // skopeo/podman/buildah oci-archive
)

// Errors callers can test with errors.Is; the wrapping error names the file
// and layer concerned.
var (
	ErrNotImage       = errors.New("not a container image tarball")
	ErrLayerMissing   = errors.New("layer missing from the tarball")
	ErrDiffIDMismatch = errors.New("layer content does not match its diff_id")
	ErrAmbiguous      = errors.New("several images in the tarball")
	ErrNoSuchImage    = errors.New("no such image in the tarball")
	ErrCorruptLayer   = errors.New("corrupt layer")
	// ErrTooLarge: the image goes past a resource limit: it has more
	// entries than OpenOptions.MaxEntries, or a compressed layer or outer
	// tarball inflates past OpenOptions.MaxRatio (a decompression bomb;
	// a layer decompressed into the cache also stops at its free space).
	ErrTooLarge = errors.New("image too large for the memory budget")
	// ErrDigestMismatch: an index, manifest or config blob does not hash to
	// the digest that names it.
	ErrDigestMismatch = errors.New("blob content does not match its digest")
)

// OpenOptions chooses the image and says where caches live.
type OpenOptions struct {
	Image    string   // tag ("name:tag", or "name" meaning name:latest) or digest prefix; "" if only one image
	Platform string   // "os/arch[/variant]"; "" means the host's
	CacheDir string   // saved indexes and decompressed layers
	Bases    []string // tarballs that supply layers a thin tarball leaves out
	// Progress, if set, receives short human-readable lines about long work
	// (decompressing layers, indexing) while Open runs.
	Progress func(msg string)
	// MaxEntries bounds the tar entries of all layers together (and of the
	// outer tarball); past it Open fails with ErrTooLarge before their
	// memory is taken. 0: no limit. See BytesPerEntry.
	MaxEntries int
	// Tasks, if set, hears the byte counts of long work (indexing a
	// compressed layer or outer tarball) to draw progress bars with.
	Tasks progress.Tasks
	// SpanCache bounds the memory (bytes) holding inflated spans of
	// compressed layers, shared by all of them; 0 means DefaultSpanCache.
	SpanCache int64
	// Materialize decompresses compressed layers into CacheDir and maps
	// the copies (mmap speed for the disk it takes) instead of serving
	// them in place through checkpoints.
	Materialize bool
	// MaxRatio stops a compressed stream that inflates to more than
	// MaxRatio times its stored size with ErrTooLarge: a decompression
	// bomb. 0 means the default: 100 times, and at least 64 GiB.
	MaxRatio int64
	// CacheMax bounds CacheDir (tarindex.Cache.MaxBytes): after writing
	// to it, the least recently used items not in use are removed until
	// it takes at most CacheMax bytes. 0: no bound.
	CacheMax int64
	// AllowAbsent: a layer neither the tarball nor Bases hold (a thin
	// tarball's) is no error; it comes back with Layer.Absent set and
	// nothing to read, so that inspect can describe a thin tarball. An
	// image with an absent layer cannot be served.
	AllowAbsent bool
}

// BytesPerEntry is about what one tar entry costs in memory once the image
// is mounted and every path has been looked up, rounded up: the server's
// 350 B/entry (index and union node) and go-fuse's 450 for the kernel's
// inode (BENCHMARKS.md, a million-file layer), and the kernel's own inode
// and dentry for it. It turns a memory budget into MaxEntries.
const BytesPerEntry = 2048

// ImageRef describes one image found in a tarball.
type ImageRef struct {
	Tags           []string      `json:"tags"`
	ManifestDigest digest.Digest `json:"manifest_digest,omitempty"`
	ConfigDigest   digest.Digest `json:"config_digest"`
	Platform       string        `json:"platform,omitempty"`
}

// Image is one opened image: its config and its layers, each indexed and
// readable.
type Image struct {
	Archive string // path of the tarball (or directory)
	Format  Format
	Ref     ImageRef   // the chosen image
	Images  []ImageRef // every image in the tarball
	Config  ocispec.Image
	// ConfigRaw is the config JSON exactly as stored (its sha256 is
	// Ref.ConfigDigest).
	ConfigRaw []byte
	Layers    []*Layer // base first
	closers   cleanup
}

// Layer is one layer of the image, ready to serve reads.
type Layer struct {
	Index       int
	DiffID      digest.Digest // sha256 of the uncompressed tar (from the config)
	Digest      digest.Digest // digest of the blob as stored (equals DiffID when uncompressed)
	MediaType   string
	Compression tarindex.Compression // detected by magic bytes
	StoredSize  int64                // bytes the blob takes in the tarball
	Size        int64                // bytes of the uncompressed tar
	CreatedBy   string               // the history line that made it, if known
	// Stored is the blob exactly as the tarball holds it (compressed or
	// not), mapped; nil when the tarball is compressed and read in place.
	Stored []byte
	// StoredAt reads the same bytes as Stored, mapped or not: repack
	// copies them byte for byte.
	StoredAt *io.SectionReader
	// StoredFile, when not nil, is the open file Stored maps, the blob
	// being StoredSize bytes at StoredOffset in it (an uncompressed
	// tarball): repack copies it file to file, without mapping it. Closed
	// with the image; read it only at explicit offsets (pread,
	// copy_file_range), never through its file position.
	StoredFile   *os.File
	StoredOffset int64
	// StoredVerified: Stored was checked against Digest, on this open or,
	// through the cache, when these exact bytes were first indexed.
	// Repack copies a verified blob without hashing it again.
	StoredVerified bool
	// Content reads the bytes TarIndex offsets refer to: the uncompressed
	// tar. For a compressed layer served in place it decodes from the
	// nearest checkpoint (through the image's span cache), and Data is nil.
	Content io.ReaderAt
	// Data, when not nil, holds the same bytes as Content, mapped: the
	// outer tarball (uncompressed layers, zero copy), the layer's own file
	// in a directory, or a decompressed cache file (-o materialize, or a
	// compressed stream that cannot be entered mid-way). Readers slice it
	// instead of copying.
	Data     []byte
	TarIndex *tarindex.Index
	// Checkpoints is how many entry points a compressed layer served in
	// place has (0 otherwise), for inspect.
	Checkpoints int
	// Absent: neither the tarball nor a base holds the layer (only with
	// OpenOptions.AllowAbsent). Only Index, DiffID, Digest, MediaType and
	// CreatedBy are then set.
	Absent bool
}

// setMapped makes data, a mapping of the uncompressed tar, the layer's
// content.
func (l *Layer) setMapped(data []byte) {
	l.Data, l.Size, l.Content = data, int64(len(data)), bytes.NewReader(data)
}

// AbsentLayers are the indexes of the layers that neither the tarball nor
// a base holds (OpenOptions.AllowAbsent).
func (img *Image) AbsentLayers() []int {
	var out []int
	for _, l := range img.Layers {
		if l.Absent {
			out = append(out, l.Index)
		}
	}
	return out
}

// Close releases the mappings. Trees built from the image must not be used
// afterwards.
func (img *Image) Close() error { return img.closers.run() }

// cleanup is a list of release functions (unmaps, closes), run last first.
type cleanup []func() error

func (c *cleanup) add(f func() error) { *c = append(*c, f) }

func (c *cleanup) run() error {
	var errs []error
	for i := len(*c) - 1; i >= 0; i-- {
		errs = append(errs, (*c)[i]())
	}
	*c = nil
	return errors.Join(errs...)
}
