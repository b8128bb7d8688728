package repack

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/tarindex"
)

// Thin and Complete copy an image tarball member by member: Thin leaves
// out the layer blobs a receiver already has, Complete puts them back
// from base tarballs. Every other member (configs, manifests, index.json,
// manifest.json, repositories, the layer directories' json and VERSION)
// is copied as it is, header and data blocks byte for byte, so image IDs
// and manifest digests do not change.

// rawMember is one member of an image source as Thin and Complete copy
// it: a tarball's member as stored (header blocks, extended headers
// included, and padded data), or a file of a directory, whose header is
// made from its stat.
type rawMember struct {
	hdr  *tar.Header
	name string // cleaned as archive cleans it ("" for a global header)
	raw  []byte // the header and data blocks as the tarball stores them; nil for a directory's file
	body []byte // the data
}

// encoded is the member as it is written.
func (m *rawMember) encoded() ([]byte, []byte, error) {
	if m.raw != nil {
		return m.raw, nil, nil
	}
	h, err := headerBlocks(m.hdr)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", m.name, err)
	}
	return h, m.body, nil
}

// size is the bytes the member takes written.
func (m *rawMember) size() int64 {
	if m.raw != nil {
		return int64(len(m.raw))
	}
	h, _, err := m.encoded()
	if err != nil {
		return 0 // writing it will say
	}
	return int64(len(h)) + roundBlock(int64(len(m.body)))
}

// write writes the member.
func (m *rawMember) write(w io.Writer) (int64, error) {
	h, body, err := m.encoded()
	if err != nil {
		return 0, err
	}
	return writeBlocks(w, h, int64(len(body)), writeBytes(body))
}

// headerBlocks is h as a tar writer writes it: the header blocks,
// extended headers included, without the data.
func headerBlocks(h *tar.Header) ([]byte, error) {
	var buf bytes.Buffer
	// WriteHeader writes the header blocks at once; the data and its
	// padding are the caller's.
	if err := tar.NewWriter(&buf).WriteHeader(h); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeBlocks writes a member: its header blocks, its data (size bytes,
// which writeData writes) and the zeros that pad the data to whole
// blocks. It returns the bytes written.
func writeBlocks(w io.Writer, header []byte, size int64, writeData func(io.Writer) error) (int64, error) {
	if _, err := w.Write(header); err != nil {
		return 0, err
	}
	if err := writeData(w); err != nil {
		return 0, err
	}
	pad := roundBlock(size) - size
	if _, err := w.Write(make([]byte, pad)); err != nil {
		return 0, err
	}
	return int64(len(header)) + size + pad, nil
}

// writeBytes writes b, for writeBlocks.
func writeBytes(b []byte) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	}
}

// scanMembers lists the members of the image source c.
func scanMembers(c *archive.Contents) ([]rawMember, error) {
	if c.Dir {
		return scanDir(c)
	}
	return scanTar(c.Data, c.Path)
}

// scanTar lists the members of the tar in data. Only headers are read:
// the data is skipped.
func scanTar(data []byte, where string) ([]rawMember, error) {
	br := bytes.NewReader(data)
	tr := tar.NewReader(br)
	var out []rawMember
	var pos int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: reading the tarball: %w", where, err)
		}
		dataAt := br.Size() - int64(br.Len())
		size, err := dataSize(hdr)
		if err != nil {
			return nil, fmt.Errorf("%s: member %s: %w", where, hdr.Name, err)
		}
		end := roundBlock(dataAt + size)
		if end > int64(len(data)) {
			return nil, fmt.Errorf("%s: member %s extends past the end of the tarball", where, hdr.Name)
		}
		m := rawMember{hdr: hdr, raw: data[pos:end], body: data[dataAt : dataAt+size]}
		if hdr.Typeflag != tar.TypeXGlobalHeader {
			if m.name, err = tarindex.CleanName(hdr.Name); err != nil {
				return nil, fmt.Errorf("%s: member %q: %w", where, hdr.Name, err)
			}
		}
		out = append(out, m)
		pos = end
	}
}

// dataSize is the bytes of data that follow hdr in the tar. A sparse
// file (GNU's, in either form) is an error: an image tarball holds none,
// and its data is not its content.
func dataSize(hdr *tar.Header) (int64, error) {
	switch hdr.Typeflag {
	case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo, tar.TypeXGlobalHeader:
		return 0, nil
	}
	_, sparseMap := hdr.PAXRecords["GNU.sparse.map"]
	_, sparseMajor := hdr.PAXRecords["GNU.sparse.major"]
	if hdr.Typeflag == tar.TypeGNUSparse || sparseMap || sparseMajor {
		return 0, errors.New("a sparse file in an image tarball")
	}
	return hdr.Size, nil
}

// scanDir lists the files of the directory c as members, in name order:
// directories, regular files and symlinks, owned by root, with their
// modes and times.
func scanDir(c *archive.Contents) ([]rawMember, error) {
	var out []rawMember
	err := filepath.WalkDir(c.Path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(c.Path, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		m, err := dirMember(c, p, filepath.ToSlash(rel), fi)
		if err != nil {
			return err
		}
		out = append(out, m)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// dirMember is the file p of the directory c, named name there, as a
// member.
func dirMember(c *archive.Contents, p, name string, fi fs.FileInfo) (rawMember, error) {
	h := &tar.Header{Name: name, Mode: int64(fi.Mode().Perm()), ModTime: fi.ModTime().Truncate(time.Second), Format: tar.FormatPAX}
	m := rawMember{hdr: h, name: name}
	var err error
	switch {
	case fi.IsDir():
		h.Typeflag, h.Name = tar.TypeDir, name+"/"
	case fi.Mode()&fs.ModeSymlink != 0:
		h.Typeflag = tar.TypeSymlink
		if h.Linkname, err = os.Readlink(p); err != nil {
			return rawMember{}, err
		}
	case fi.Mode().IsRegular():
		h.Typeflag = tar.TypeReg
		if m.body, err = c.Bytes(name); err != nil {
			return rawMember{}, err
		}
		h.Size = int64(len(m.body))
		if m.body == nil {
			m.body = []byte{}
		}
	default:
		return rawMember{}, fmt.Errorf("%s: %s is a %s, which an image directory does not hold", c.Path, name, fi.Mode().Type())
	}
	return m, nil
}

func roundBlock(n int64) int64 { return (n + blockSize - 1) / blockSize * blockSize }

// withBody is a regular member named and owned like m, with body as its
// data.
func (m *rawMember) withBody(body []byte) (rawMember, error) {
	h := &tar.Header{
		Typeflag: tar.TypeReg, Name: m.hdr.Name, Mode: m.hdr.Mode, Uid: m.hdr.Uid, Gid: m.hdr.Gid,
		Uname: m.hdr.Uname, Gname: m.hdr.Gname, ModTime: m.hdr.ModTime, Size: int64(len(body)),
	}
	var buf bytes.Buffer
	header, err := headerBlocks(h)
	if err != nil {
		return rawMember{}, err
	}
	if _, err := writeBlocks(&buf, header, h.Size, writeBytes(body)); err != nil {
		return rawMember{}, err
	}
	return rawMember{hdr: h, name: m.name, raw: buf.Bytes(), body: body}, nil
}

// tarSize is the bytes a tar of members takes, its end included.
func tarSize(members []rawMember) int64 {
	n := int64(len(endOfArchive))
	for _, m := range members {
		n += m.size()
	}
	return n
}

// writeTar writes a tar of members.
func writeTar(w io.Writer, members []rawMember) error {
	for _, m := range members {
		if _, err := m.write(w); err != nil {
			return err
		}
	}
	_, err := w.Write(endOfArchive)
	return err
}

// endOfArchive is the two zero blocks that end a tar.
var endOfArchive = make([]byte, 2*blockSize)

// encodeLink is a symlink member.
func encodeLink(h *tar.Header, target string) ([]byte, error) {
	h.Typeflag, h.Linkname, h.Size, h.Mode = tar.TypeSymlink, target, 0, 0o777
	return headerBlocks(h)
}
