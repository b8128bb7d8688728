package tarindex

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// ErrUnsafeName reports a member whose name escapes the root ("../x").
var ErrUnsafeName = errors.New("unsafe member name")

// ErrNotTar reports input that is not a tar stream at all.
var ErrNotTar = errors.New("not a tar archive")

// ErrDigestMismatch reports decompressed content that does not hash to the
// digest it must have.
var ErrDigestMismatch = errors.New("content does not match its digest")

// Index is the ordered list of a tar stream's members, as stored (duplicates
// and whiteout files included: interpreting them is the caller's business).
type Index struct {
	Entries []Entry
	// End is the absolute offset just past the last member's data.
	End int64
}

// Build indexes the tar stream occupying [base, base+size) of r. Entry
// offsets are absolute in r. Errors wrap ErrUnsafeName, ErrNotTar or the
// underlying read/format error, and name the member where one is known.
func Build(r io.ReaderAt, base, size int64) (*Index, error) {
	return BuildMax(r, base, size, 0)
}

// ErrTooManyEntries: indexing stopped at the most entries the caller
// allowed (its memory budget).
var ErrTooManyEntries = errors.New("more entries than the memory budget allows")

// BuildMax is Build stopping with ErrTooManyEntries past maxEntries
// entries (0: no limit), before their memory is taken.
func BuildMax(r io.ReaderAt, base, size int64, maxEntries int) (*Index, error) {
	ix, err := buildFast(r, base, size, maxEntries)
	if err == nil || errors.Is(err, ErrTooManyEntries) {
		return ix, err
	}
	return buildSlow(r, base, size, maxEntries)
}

// NameBytesPerEntry is how many bytes of names an entry's share of a
// budget covers: past it, a name, link target or xattrs count as one more
// entry per NameBytesPerEntry bytes. A budget of entries must bound memory
// for a layer of a few hundred members with megabyte-long PAX names too.
const NameBytesPerEntry = 2048

// entryCost is what e counts against an entry budget.
func entryCost(e *Entry) int {
	n := len(e.Name) + len(e.Linkname)
	for _, x := range e.Xattrs {
		n += len(x.Name) + len(x.Value)
	}
	return 1 + n/NameBytesPerEntry
}

// Cost is what the index counts against an entry budget (BuildMax's
// maxEntries): its entries, and its long names as more of them.
func (ix *Index) Cost() int {
	n := 0
	for i := range ix.Entries {
		n += entryCost(&ix.Entries[i])
	}
	return n
}

// budget counts entries against a maxEntries budget (0: no limit).
type budget struct {
	max, used int
}

// take charges e, failing with ErrTooManyEntries past the budget, before
// e's memory is kept.
func (b *budget) take(e *Entry) error {
	if b.max <= 0 {
		return nil
	}
	if b.used += entryCost(e); b.used > b.max {
		return tooMany(b.max)
	}
	return nil
}

// tooMany is the error of an index that reached maxEntries.
func tooMany(maxEntries int) error {
	return fmt.Errorf("%w (%d)", ErrTooManyEntries, maxEntries)
}

// buildSlow is Build through archive/tar, for every stream buildFast
// leaves to it (sparse members, unusual headers, damaged input).
func buildSlow(r io.ReaderAt, base, size int64, maxEntries int) (*Index, error) {
	rec := &recorder{sr: io.NewSectionReader(r, base, size)}
	tr := tar.NewReader(rec)
	ix := &Index{}
	limit := budget{max: maxEntries}
	prevSparse := -1 // index of a sparse entry to check once the next header's position is known
	for {
		rec.hdrAt = -1
		hdr, err := tr.Next()
		if err == nil || err == io.EOF {
			// The next header (or end marker) starts where the previous
			// member's data region ends: sparse data must not run into it.
			if prevSparse >= 0 {
				if err := checkSparseEnd(&ix.Entries[prevSparse], base+rec.hdrAt); err != nil {
					return nil, err
				}
				prevSparse = -1
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if len(ix.Entries) == 0 {
				return nil, fmt.Errorf("%w: %v", ErrNotTar, err)
			}
			return nil, fmt.Errorf("after member %q: %w", ix.Entries[len(ix.Entries)-1].Name, truncated(err))
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			// Archive-wide PAX records (git archive writes one with the
			// commit id): not a file, and tar extractors ignore them too.
			continue
		}
		pos := rec.pos()
		e, err := entryFromHeader(hdr)
		if err != nil {
			return nil, err
		}
		e.Offset = base + pos
		if e.Type == TypeReg {
			if kind := sparseKindOf(hdr); kind != sparseNone {
				loc := sparseLoc{r: r, base: base, hdrAt: rec.hdrAt, dataAt: pos, size: size}
				if e.Sparse, err = sparseMap(loc, kind, hdr); err != nil {
					return nil, fmt.Errorf("member %q: sparse map: %w", e.Name, err)
				}
			} else if pos+e.Size > size {
				return nil, fmt.Errorf("member %q: %w", e.Name, io.ErrUnexpectedEOF)
			}
		}
		if err := limit.take(&e); err != nil {
			return nil, err
		}
		ix.Entries = append(ix.Entries, e)
		if e.Sparse != nil {
			prevSparse = len(ix.Entries) - 1
		}
	}
	ix.End = base + rec.pos()
	return ix, nil
}

// checkSparseEnd reports a sparse member whose fragments claim more data
// than its data region holds (tar would fail reading it; we would serve the
// next header as file content).
func checkSparseEnd(e *Entry, limit int64) error {
	if len(e.Sparse) == 0 {
		return nil
	}
	last := e.Sparse[len(e.Sparse)-1]
	if last.Physical+last.Length > limit {
		return fmt.Errorf("member %q: sparse data runs past the member's data region", e.Name)
	}
	return nil
}

// recorder is the reader archive/tar reads through. It is a Seeker so that
// tar skips member data with Seek (indexing never reads file content), and
// it notes where the first header block of each Next call was read, which
// the sparse-map parser needs to find headers tar does not expose.
type recorder struct {
	sr    *io.SectionReader
	hdrAt int64 // section offset of the first whole-block read since reset; -1 if none
}

func (rc *recorder) Read(p []byte) (int, error) {
	// archive/tar reads every header with one io.ReadFull of a block; the
	// only smaller reads before it are the skip's last byte and padding.
	if rc.hdrAt < 0 && len(p) == blockSize {
		rc.hdrAt = rc.pos()
	}
	return rc.sr.Read(p)
}

func (rc *recorder) Seek(off int64, whence int) (int64, error) {
	return rc.sr.Seek(off, whence)
}

func (rc *recorder) pos() int64 {
	p, _ := rc.sr.Seek(0, io.SeekCurrent) // cannot fail for SeekCurrent
	return p
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// CleanName normalises a member name: leading "/" and "./" dropped, "."
// and ".." resolved. It refuses names that would escape the root.
func CleanName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty name", ErrUnsafeName)
	}
	if c, ok := cleanAlready(name); ok {
		return c, nil
	}
	// Resolve ".." lexically against a virtual root; escaping it is refused
	// rather than clamped, because a layer that tries is malformed or hostile.
	depth := 0
	for _, part := range strings.Split(name, "/") {
		switch part {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return "", fmt.Errorf("%w: %q escapes the root", ErrUnsafeName, name)
			}
		default:
			depth++
		}
	}
	c := path.Clean("/" + name)
	if c == "/" {
		return ".", nil
	}
	return c[1:], nil
}

func entryFromHeader(hdr *tar.Header) (Entry, error) {
	name, err := CleanName(hdr.Name)
	if err != nil {
		return Entry{}, err
	}
	e := Entry{
		Name:     name,
		Linkname: hdr.Linkname,
		Size:     hdr.Size,
		MtimeSec: hdr.ModTime.Unix(),
		Mtime:    uint32(hdr.ModTime.Nanosecond()),
		Mode:     uint32(hdr.Mode) & 07777,
		UID:      uint32(hdr.Uid),
		GID:      uint32(hdr.Gid),
		Devmajor: uint32(hdr.Devmajor),
		Devminor: uint32(hdr.Devminor),
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeCont: // the reader already turned TypeRegA into TypeReg or TypeDir
		e.Type = TypeReg
	case tar.TypeDir:
		e.Type = TypeDir
	case tar.TypeSymlink:
		e.Type = TypeSymlink
	case tar.TypeLink:
		e.Type = TypeHardlink
		if e.Linkname, err = CleanName(hdr.Linkname); err != nil {
			return Entry{}, fmt.Errorf("hardlink %q: %w", name, err)
		}
	case tar.TypeChar:
		e.Type = TypeChar
	case tar.TypeBlock:
		e.Type = TypeBlock
	case tar.TypeFifo:
		e.Type = TypeFifo
	default:
		return Entry{}, fmt.Errorf("member %q: unsupported tar type %q", name, hdr.Typeflag)
	}
	if e.Type != TypeReg {
		e.Size = 0
	}
	for k, v := range hdr.PAXRecords {
		if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			e.Xattrs = append(e.Xattrs, Xattr{Name: x, Value: v})
		}
	}
	sortXattrs(e.Xattrs)
	return e, nil
}

func sortXattrs(xs []Xattr) {
	for i := 1; i < len(xs); i++ {
		for j := i; j > 0 && xs[j].Name < xs[j-1].Name; j-- {
			xs[j], xs[j-1] = xs[j-1], xs[j]
		}
	}
}

// cleanAlready returns name without its trailing slashes and a leading
// "./" when what is left is already clean (relative, no empty, "." or ".."
// components): the common case, answered without allocating.
func cleanAlready(name string) (string, bool) {
	for len(name) > 2 && name[0] == '.' && name[1] == '/' {
		name = name[2:]
	}
	for len(name) > 1 && name[len(name)-1] == '/' {
		name = name[:len(name)-1]
	}
	if name == "" || name[0] == '/' {
		return "", false
	}
	start := 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) && name[i] != '/' {
			continue
		}
		switch name[start:i] {
		case "", ".", "..":
			return "", false
		}
		start = i + 1
	}
	return name, true
}
