package imagetest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

// MTime is the modification time of every entry the constructors below
// make (with nanoseconds, which PAX headers keep).
var MTime = time.Unix(1700000000, 123456789)

// Entry is one member of a test layer: its header and its content.
type Entry struct {
	Hdr  tar.Header
	Body []byte
}

// With returns e with its header changed by f.
func (e Entry) With(f func(*tar.Header)) Entry { f(&e.Hdr); return e }

func entry(name string, typ byte, mode int64) Entry {
	return Entry{Hdr: tar.Header{Name: name, Typeflag: typ, Mode: mode, ModTime: MTime}}
}

// File is a regular file with mode 0644.
func File(name, body string) Entry { return FileMode(name, body, 0o644) }

// FileMode is a regular file with the given mode.
func FileMode(name, body string, mode int64) Entry {
	e := entry(name, tar.TypeReg, mode)
	e.Body, e.Hdr.Size = []byte(body), int64(len(body))
	return e
}

// Dir is a directory with mode 0755.
func Dir(name string) Entry { return DirMode(name, 0o755) }

// DirMode is a directory with the given mode.
func DirMode(name string, mode int64) Entry { return entry(name, tar.TypeDir, mode) }

// Hardlink is a hardlink entry name → target.
func Hardlink(name, target string) Entry {
	e := entry(name, tar.TypeLink, 0o644)
	e.Hdr.Linkname = target
	return e
}

// Symlink is a symlink entry name → target.
func Symlink(name, target string) Entry {
	e := entry(name, tar.TypeSymlink, 0o777)
	e.Hdr.Linkname = target
	return e
}

// Fifo is a named pipe with mode 0600.
func Fifo(name string) Entry { return entry(name, tar.TypeFifo, 0o600) }

// Whiteout is the whiteout file that deletes name from lower layers
// ("d/x" → "d/.wh.x"; OCI image-spec layer.md).
func Whiteout(name string) Entry {
	dir, base := "", name
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		dir, base = name[:i+1], name[i+1:]
	}
	return File(dir+".wh."+base, "")
}

// Opaque is the opaque marker of dir ("" for the root).
func Opaque(dir string) Entry {
	if dir != "" {
		dir += "/"
	}
	return File(dir+".wh..wh..opq", "")
}

// LayerTar writes entries as a PAX layer tar; raw members (already encoded,
// as RawSparse makes them) go after them, before the end-of-archive blocks.
func LayerTar(t testing.TB, entries []Entry, raw ...[]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Hdr
		h.Format = tar.FormatPAX
		require.NoError(t, tw.WriteHeader(&h), h.Name)
		_, err := tw.Write(e.Body)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Flush())
	b := buf.Bytes()
	for _, r := range raw {
		b = append(b, r...)
	}
	return append(b, make([]byte, 1024)...)
}

// Image is an in-memory image over layer tars (base first), each indexed
// and readable as an opened tarball's layers are.
func Image(t testing.TB, layers ...[]byte) *archive.Image {
	t.Helper()
	img := &archive.Image{Archive: "test.tar"}
	for i, data := range layers {
		ix, err := tarindex.Build(bytes.NewReader(data), 0, int64(len(data)))
		require.NoError(t, err)
		d := digest.FromBytes(data)
		img.Layers = append(img.Layers, &archive.Layer{Index: i, DiffID: d, Digest: d, Data: data,
			TarIndex: ix, Size: int64(len(data)), StoredSize: int64(len(data))})
	}
	return img
}

// Layers is Image over layers given as entries.
func Layers(t testing.TB, layers ...[]Entry) *archive.Image {
	t.Helper()
	tars := make([][]byte, len(layers))
	for i, entries := range layers {
		tars[i] = LayerTar(t, entries)
	}
	return Image(t, tars...)
}

// RawSparse encodes a PAX 0.1 sparse member by hand (archive/tar does not
// write sparse files): data at each (offset, bytes) of frags, size in all.
func RawSparse(name string, size int64, frags map[int64]string) []byte {
	offs := make([]int64, 0, len(frags))
	for o := range frags {
		offs = append(offs, o)
	}
	sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
	var mp []string
	var data []byte
	for _, o := range offs {
		mp = append(mp, fmt.Sprint(o), fmt.Sprint(len(frags[o])))
		data = append(data, frags[o]...)
	}
	var pax []byte
	for _, kv := range [][2]string{
		{"GNU.sparse.major", "0"}, {"GNU.sparse.minor", "1"},
		{"GNU.sparse.size", fmt.Sprint(size)}, {"GNU.sparse.numblocks", fmt.Sprint(len(offs))},
		{"GNU.sparse.map", strings.Join(mp, ",")},
	} {
		rec := " " + kv[0] + "=" + kv[1] + "\n"
		n := len(rec) + 1
		for len(rec)+len(fmt.Sprint(n)) != n {
			n = len(rec) + len(fmt.Sprint(n))
		}
		pax = append(pax, fmt.Sprint(n)+rec...)
	}
	out := append(rawHeader("PaxHeaders/"+name, tar.TypeXHeader, int64(len(pax))), pad(pax)...)
	out = append(out, rawHeader(name, tar.TypeReg, int64(len(data)))...)
	return append(out, pad(data)...)
}

func rawHeader(name string, typeflag byte, size int64) []byte {
	b := make([]byte, 512)
	copy(b, name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], fmt.Sprintf("%011o\x00", MTime.Unix()))
	b[156] = typeflag
	copy(b[257:], "ustar\x0000")
	copy(b[148:], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func pad(b []byte) []byte { return append(b, make([]byte, (512-len(b)%512)%512)...) }
