// Package tarindex indexes a tar stream that lives inside any io.ReaderAt at a
// base offset, recording for every member the absolute offset of its data
// (Build, BuildMax; IndexStream for a stream that can be read only once), so
// that content can later be served as slices of an mmap of the same bytes
// (MapFile, Entry.Slice) or read from any io.ReaderAt over them (Entry.ReadAt,
// Entry.ReadFrom, sparse members included).
//
// A compressed stream (gzip, zstd) is indexed in place on one pass
// (Cache.IndexCompressed for a layer, Cache.IndexOuter for a compressed outer
// tarball): the tar offsets are in the decompressed stream, and the pass also
// records where decoding can start in the compressed bytes, a Seekable:
// checkpoints with their 32 KiB windows for gzip (package gz, zlib's zran),
// frame starts for zstd (package zst); tarindex/internal/seekfmt is their
// shared binary envelope. Compressed reads the decompressed stream through
// those entry points a span at a time, recent spans kept in a Spans cache
// shared by every layer. Cache.Decompress instead writes a decompressed copy
// to map. A stream that inflates past Cache.MaxRatio times its size (or
// MinLimit) stops with ErrTooLarge: a decompression bomb.
//
// Cache keeps what a pass learnt under its directory, keyed by the source's
// identity: saved indexes (their format is in saved.go), checkpoints (.gzi,
// .zsi) and decompressed copies; cachedir.go is its upkeep (List, Prune,
// Clear, Hold).
//
// It knows nothing of FUSE or of container whiteout rules: a whiteout file is
// just another entry here.
package tarindex

import (
	"fmt"
	"io"
)

// Type is the kind of filesystem object a tar member describes.
type Type uint8

const (
	TypeReg Type = iota
	TypeDir
	TypeSymlink
	TypeHardlink // Linkname names the target path (cleaned like Name)
	TypeChar
	TypeBlock
	TypeFifo
)

func (t Type) String() string {
	switch t {
	case TypeReg:
		return "file"
	case TypeDir:
		return "dir"
	case TypeSymlink:
		return "symlink"
	case TypeHardlink:
		return "hardlink"
	case TypeChar:
		return "char"
	case TypeBlock:
		return "block"
	case TypeFifo:
		return "fifo"
	}
	return "unknown"
}

// Xattr is one extended attribute taken from a PAX SCHILY.xattr.* record.
type Xattr struct {
	Name  string
	Value string
}

// Fragment maps a run of a sparse file's logical content to its bytes in the
// source. Logical ranges not covered by any fragment are holes (read as zeros).
type Fragment struct {
	Logical  int64 // offset within the file's content
	Physical int64 // absolute offset in the source
	Length   int64
}

// Entry is one tar member. All offsets are absolute positions in the source
// the index was built over (base offset already added).
type Entry struct {
	// Name is the member's path relative to the image root: no leading "/" or
	// "./", no trailing "/", never escaping the root. The root itself is ".".
	Name     string
	Linkname string // symlink target as stored; for hardlinks, a cleaned path like Name
	Offset   int64  // absolute offset of the first data byte (non-sparse entries)
	Size     int64  // logical size of the content
	MtimeSec int64
	Mtime    uint32 // nanoseconds part of the modification time (PAX)
	Mode     uint32 // permission bits including setuid, setgid and sticky (07777)
	UID      uint32
	GID      uint32
	Devmajor uint32
	Devminor uint32
	Type     Type
	Xattrs   []Xattr    // nil unless the member carried SCHILY.xattr.* records
	Sparse   []Fragment // nil unless the member is a sparse file
}

// ReadAt copies the entry's content at logical offset off into p, taking
// bytes from data, which must be the same bytes the index was built over
// (usually an mmap). It returns io.EOF once off reaches the entry's size.
func (e *Entry) ReadAt(data []byte, p []byte, off int64) (int, error) {
	return e.ReadFrom(bytesAt(data), p, off)
}

// ReadFrom is ReadAt from any source of the bytes the index was built over
// (a compressed layer read through its checkpoints, say). An error of src
// other than io.EOF is returned as it is.
func (e *Entry) ReadFrom(src io.ReaderAt, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset %d", e.Name, off)
	}
	if off >= e.Size {
		return 0, io.EOF
	}
	if int64(len(p)) > e.Size-off {
		p = p[:e.Size-off]
	}
	if e.Sparse == nil {
		n, err := src.ReadAt(p, e.Offset+off)
		return n, shortRead(n, len(p), err)
	}
	clear(p)
	for _, f := range e.Sparse {
		lo, hi := max(off, f.Logical), min(off+int64(len(p)), f.Logical+f.Length)
		if lo >= hi {
			continue
		}
		src2 := f.Physical + (lo - f.Logical)
		if src2 < 0 {
			return 0, io.ErrUnexpectedEOF
		}
		n, err := src.ReadAt(p[lo-off:hi-off], src2)
		if err := shortRead(n, int(hi-lo), err); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// shortRead is the error of a read of want bytes that got n: nil when
// complete, io.ErrUnexpectedEOF when the source ended first (the layer is
// shorter than its index says), else the source's error.
func shortRead(n, want int, err error) error {
	if n == want {
		return nil
	}
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// bytesAt reads a byte slice, like bytes.Reader without its state.
type bytesAt []byte

func (b bytesAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Slice returns up to n bytes of a non-sparse entry's content starting at
// logical offset off, as a subslice of data (no copy). The result is clamped
// to the entry's end, because the next member's bytes follow immediately, and
// to the end of data. Sparse entries must be read with ReadAt.
func (e *Entry) Slice(data []byte, off int64, n int) []byte {
	if off < 0 || off >= e.Size || n <= 0 {
		return nil
	}
	end := min(off+int64(n), e.Size)
	lo, hi := e.Offset+off, e.Offset+end
	if lo >= int64(len(data)) {
		return nil
	}
	return data[lo:min(hi, int64(len(data)))]
}
