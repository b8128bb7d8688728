package tarindex

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// member is one fixture entry: a header and, for regular files, content.
type member struct {
	hdr  tar.Header
	body string
}

func file(name, body string) member {
	return member{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}, body: body}
}

// makeTar writes members with archive/tar in the given format.
func makeTar(t testing.TB, format tar.Format, ms ...member) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range ms {
		h := m.hdr
		if format != tar.FormatUnknown {
			h.Format = format
		}
		require.NoError(t, tw.WriteHeader(&h))
		_, err := io.WriteString(tw, m.body)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

// embed places b at offset base inside filler bytes, so that offsets that
// forget the base read the wrong bytes.
func embed(b []byte, base int) []byte {
	out := bytes.Repeat([]byte{'#'}, base+len(b)+777)
	copy(out[base:], b)
	return out
}

func build(t testing.TB, b []byte) *Index {
	t.Helper()
	ix, err := Build(bytes.NewReader(b), 0, int64(len(b)))
	require.NoError(t, err)
	return ix
}

func byName(ix *Index) map[string]*Entry {
	m := map[string]*Entry{}
	for i := range ix.Entries {
		m[ix.Entries[i].Name] = &ix.Entries[i]
	}
	return m
}

func TestBuildAtBaseOffsetsAreAbsolute(t *testing.T) {
	tb := makeTar(t, tar.FormatPAX,
		file("a.txt", "hello"),
		member{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir, Mode: 0o755}},
		file("d/b.bin", strings.Repeat("0123456789", 100)),
		file("empty", ""),
		file("c", "last one"))
	const base = 4099 // not block aligned
	src := embed(tb, base)
	ix, err := Build(bytes.NewReader(src), base, int64(len(tb)))
	require.NoError(t, err)
	require.Equal(t, int64(base+len(tb)), ix.End)

	names := []string{}
	for _, e := range ix.Entries {
		names = append(names, e.Name)
	}
	require.Equal(t, []string{"a.txt", "d", "d/b.bin", "empty", "c"}, names)
	m := byName(ix)
	for name, want := range map[string]string{"a.txt": "hello", "d/b.bin": strings.Repeat("0123456789", 100), "c": "last one"} {
		e := m[name]
		require.Greater(t, e.Offset, int64(base))
		require.Equal(t, want, string(e.Slice(src, 0, int(e.Size))), name)
		require.Equal(t, want, string(src[e.Offset:e.Offset+e.Size]), name)
		got := make([]byte, e.Size)
		n, err := e.ReadAt(src, got, 0)
		require.NoError(t, err)
		require.Equal(t, want, string(got[:n]))
	}
	require.Nil(t, m["empty"].Slice(src, 0, 10))
	require.Nil(t, m["a.txt"].Sparse)
	require.Zero(t, m["d"].Size)
}

func TestLongNames(t *testing.T) {
	long := strings.Repeat("directory-name/", 20) + "file-with-a-long-name.txt" // too long even for USTAR's prefix field
	require.Greater(t, len(long), 100)
	target := strings.Repeat("t", 150)
	for _, format := range []tar.Format{tar.FormatPAX, tar.FormatGNU} {
		t.Run(format.String(), func(t *testing.T) {
			tb := makeTar(t, format,
				file(long, "content"),
				member{hdr: tar.Header{Name: long + "-sym", Typeflag: tar.TypeSymlink, Linkname: target}},
				member{hdr: tar.Header{Name: "hl", Typeflag: tar.TypeLink, Linkname: long}})
			ix, err := Build(bytes.NewReader(embed(tb, 512)), 512, int64(len(tb)))
			require.NoError(t, err)
			m := byName(ix)
			require.Contains(t, m, long)
			require.Equal(t, "content", string(m[long].Slice(embed(tb, 512), 0, 100)))
			require.Equal(t, target, m[long+"-sym"].Linkname)
			require.Equal(t, TypeHardlink, m["hl"].Type)
			require.Equal(t, long, m["hl"].Linkname)
		})
	}
}

func TestPAXXattrs(t *testing.T) {
	capability := "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" // vfs_cap_data, cap_net_bind_service
	tb := makeTar(t, tar.FormatPAX,
		member{hdr: tar.Header{Name: "bin/ping", Typeflag: tar.TypeReg, Mode: 0o755, Size: 2, PAXRecords: map[string]string{
			"SCHILY.xattr.user.foo":               "bar",
			"SCHILY.xattr.security.capability":    capability,
			"LIBARCHIVE.xattr.ignored.by.us":      "x",
			"SCHILY.xattr.trusted.overlay.opaque": "y",
		}}, body: "ok"},
		file("plain", "x"))
	ix := build(t, tb)
	m := byName(ix)
	require.Equal(t, []Xattr{
		{Name: "security.capability", Value: capability},
		{Name: "trusted.overlay.opaque", Value: "y"},
		{Name: "user.foo", Value: "bar"},
	}, m["bin/ping"].Xattrs)
	require.Nil(t, m["plain"].Xattrs)
}

func TestTypesModesOwnersTimes(t *testing.T) {
	mt := time.Unix(1700000000, 123456789)
	tb := makeTar(t, tar.FormatPAX,
		member{hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt}},
		member{hdr: tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777, ModTime: mt}},
		member{hdr: tar.Header{Name: "usr/bin/su", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 3, Uid: 0, Gid: 0, ModTime: mt}, body: "su!"},
		member{hdr: tar.Header{Name: "usr/bin/wall", Typeflag: tar.TypeReg, Mode: 0o2755, Gid: 5, ModTime: mt}},
		member{hdr: tar.Header{Name: "home/u/f", Typeflag: tar.TypeReg, Mode: 0o600, Uid: 1000, Gid: 1001, ModTime: mt}},
		member{hdr: tar.Header{Name: "usr/bin/su2", Typeflag: tar.TypeLink, Linkname: "/usr/bin/su"}},
		member{hdr: tar.Header{Name: "lib", Typeflag: tar.TypeSymlink, Linkname: "usr/lib", Mode: 0o777}},
		member{hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}},
		member{hdr: tar.Header{Name: "dev/sda", Typeflag: tar.TypeBlock, Devmajor: 8, Devminor: 0, Mode: 0o660}},
		member{hdr: tar.Header{Name: "run/fifo", Typeflag: tar.TypeFifo, Mode: 0o644}},
		member{hdr: tar.Header{Name: "big-uid", Typeflag: tar.TypeReg, Uid: 1 << 30, Gid: 1<<31 + 5}},
	)
	m := byName(build(t, tb))
	require.Equal(t, TypeDir, m["."].Type)
	require.Equal(t, uint32(0o1777), m["tmp"].Mode)
	require.Equal(t, uint32(0o4755), m["usr/bin/su"].Mode)
	require.Equal(t, uint32(0o2755), m["usr/bin/wall"].Mode)
	require.Equal(t, int64(1700000000), m["usr/bin/su"].MtimeSec)
	require.Equal(t, uint32(123456789), m["usr/bin/su"].Mtime)
	require.Equal(t, [2]uint32{1000, 1001}, [2]uint32{m["home/u/f"].UID, m["home/u/f"].GID})
	require.Equal(t, [2]uint32{1 << 30, 1<<31 + 5}, [2]uint32{m["big-uid"].UID, m["big-uid"].GID})
	require.Equal(t, TypeHardlink, m["usr/bin/su2"].Type)
	require.Equal(t, "usr/bin/su", m["usr/bin/su2"].Linkname, "hardlink targets are cleaned like names")
	require.Equal(t, TypeSymlink, m["lib"].Type)
	require.Equal(t, "usr/lib", m["lib"].Linkname)
	require.Equal(t, Entry{Name: "dev/null", Type: TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666, Offset: m["dev/null"].Offset, MtimeSec: m["dev/null"].MtimeSec}, *m["dev/null"])
	require.Equal(t, TypeBlock, m["dev/sda"].Type)
	require.Equal(t, uint32(8), m["dev/sda"].Devmajor)
	require.Equal(t, TypeFifo, m["run/fifo"].Type)
	for _, e := range m {
		if e.Type != TypeReg {
			require.Zero(t, e.Size, e.Name)
		}
	}
}

func TestNames(t *testing.T) {
	for _, bad := range []string{"../x", "a/../../x", "..", "./../x"} {
		_, err := Build(bytes.NewReader(makeTar(t, tar.FormatPAX, file(bad, "x"))), 0, 2048)
		require.ErrorIs(t, err, ErrUnsafeName, bad)
	}
	_, err := Build(bytes.NewReader(makeTar(t, tar.FormatPAX,
		member{hdr: tar.Header{Name: "ok", Typeflag: tar.TypeLink, Linkname: "../../etc/shadow"}})), 0, 2048)
	require.ErrorIs(t, err, ErrUnsafeName)

	tb := makeTar(t, tar.FormatPAX,
		member{hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir}},
		file("/abs/file", "x"),
		file("./rel/./x/../y", "y"),
		file("a//b", "z"),
		member{hdr: tar.Header{Name: "x/y/", Typeflag: tar.TypeDir}},
		file("a/b/../../c", "c")) // ".." that stays inside is resolved
	var names []string
	for _, e := range build(t, tb).Entries {
		names = append(names, e.Name)
	}
	require.Equal(t, []string{".", "abs/file", "rel/y", "a/b", "x/y", "c"}, names)
}

func TestGlobalPAXHeaderSkipped(t *testing.T) {
	tb := makeTar(t, tar.FormatPAX,
		member{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "0123abcd"}}},
		file("f", "data"))
	ix := build(t, tb)
	require.Len(t, ix.Entries, 1)
	require.Equal(t, "f", ix.Entries[0].Name)
}

func TestTruncated(t *testing.T) {
	tb := makeTar(t, tar.FormatPAX, file("first", "1"), file("victim", strings.Repeat("v", 3000)), file("after", "a"))
	ix := build(t, tb)
	victim := byName(ix)["victim"]
	for _, cut := range []int64{victim.Offset + 100, victim.Offset + victim.Size - 1} {
		_, err := Build(bytes.NewReader(tb[:cut]), 0, cut)
		require.Error(t, err)
		require.Contains(t, err.Error(), "victim")
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	}
	// Cut inside the next header: the error names the last good member.
	cut := victim.Offset + 3072 + 100
	_, err := Build(bytes.NewReader(tb[:cut]), 0, cut)
	require.ErrorContains(t, err, `"victim"`)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestNotTar(t *testing.T) {
	for _, in := range [][]byte{
		[]byte(strings.Repeat("this is not a tar archive\n", 100)),
		{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3}, // a gzip header
	} {
		_, err := Build(bytes.NewReader(in), 0, int64(len(in)))
		require.ErrorIs(t, err, ErrNotTar)
	}
}

func TestEmptyTar(t *testing.T) {
	tb := makeTar(t, tar.FormatPAX)
	require.Len(t, tb, 1024)
	ix, err := Build(bytes.NewReader(embed(tb, 100)), 100, 1024)
	require.NoError(t, err)
	require.Empty(t, ix.Entries)
	require.Equal(t, int64(1124), ix.End)

	ix, err = Build(bytes.NewReader(nil), 0, 0) // no bytes at all: nothing to list
	require.NoError(t, err)
	require.Empty(t, ix.Entries)
}

func TestSliceClamps(t *testing.T) {
	tb := makeTar(t, tar.FormatPAX, file("a", "abcdef"), file("b", "NEXT"))
	m := byName(build(t, tb))
	a := m["a"]
	require.Equal(t, "abcdef", string(a.Slice(tb, 0, 1<<20)), "clamped at the entry's end, not the next member's bytes")
	require.Equal(t, "def", string(a.Slice(tb, 3, 100)))
	require.Equal(t, "bc", string(a.Slice(tb, 1, 2)))
	require.Nil(t, a.Slice(tb, 6, 10))
	require.Nil(t, a.Slice(tb, -1, 10))
	require.Nil(t, a.Slice(tb, 0, 0))
	require.Equal(t, "abc", string(a.Slice(tb[:a.Offset+3], 0, 6)), "clamped at the end of data")
}

func TestReadAtEOF(t *testing.T) {
	tb := makeTar(t, tar.FormatPAX, file("a", "abcdef"), file("b", "NEXT"))
	a := byName(build(t, tb))["a"]
	p := make([]byte, 4)
	n, err := a.ReadAt(tb, p, 4)
	require.NoError(t, err, "a short read at the end is not an error")
	require.Equal(t, "ef", string(p[:n]))
	n, err = a.ReadAt(tb, p, 6)
	require.Equal(t, 0, n)
	require.ErrorIs(t, err, io.EOF)
	n, err = a.ReadAt(tb, p, 100)
	require.Equal(t, 0, n)
	require.ErrorIs(t, err, io.EOF)
	_, err = a.ReadAt(tb, p, -1)
	require.Error(t, err)
	// Data shorter than the index claims: an error, never a panic.
	n, err = a.ReadAt(tb[:a.Offset+2], p, 0)
	require.Equal(t, 2, n)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

// BuildMax stops at the entries the caller allows, on both parsers and for
// saved indexes, before their memory is taken.
func TestBuildMax(t *testing.T) {
	tb := richTar(t, 10)
	all, err := Build(bytes.NewReader(tb), 0, int64(len(tb)))
	require.NoError(t, err)
	n := len(all.Entries)
	ix, err := BuildMax(bytes.NewReader(tb), 0, int64(len(tb)), n)
	require.NoError(t, err)
	require.Len(t, ix.Entries, n)
	_, err = BuildMax(bytes.NewReader(tb), 0, int64(len(tb)), n-1)
	require.ErrorIs(t, err, ErrTooManyEntries)
	_, err = buildSlow(bytes.NewReader(tb), 0, int64(len(tb)), n-1)
	require.ErrorIs(t, err, ErrTooManyEntries)

	c := &Cache{Dir: t.TempDir()}
	_, err = c.Index("k", bytes.NewReader(tb), 0, int64(len(tb)), 0)
	require.NoError(t, err)
	_, err = c.Index("k", bytes.NewReader(tb), 0, int64(len(tb)), n-1)
	require.ErrorIs(t, err, ErrTooManyEntries, "a saved index is held to the limit too")
}

// Long names count against the budget as more entries: a few members
// with megabyte-long PAX names cannot take hundreds of megabytes under a
// budget of a few thousand entries.
func TestBuildMaxCountsLongNames(t *testing.T) {
	long := strings.Repeat("n", 200)
	var ms []member
	for i := range 20 {
		name := fmt.Sprintf("d%02d/%s", i, strings.Repeat(long+"/", 250)) + "f" // about 50 KB
		ms = append(ms, file(name, "x"))
	}
	tb := makeTar(t, tar.FormatPAX, ms...)
	all, err := Build(bytes.NewReader(tb), 0, int64(len(tb)))
	require.NoError(t, err)
	require.Len(t, all.Entries, 20)
	require.Greater(t, all.Cost(), 20*24, "each name counts as about 25 entries")

	for name, build := range map[string]func(int) error{
		"fast": func(max int) error { _, err := buildFast(bytes.NewReader(tb), 0, int64(len(tb)), max); return err },
		"slow": func(max int) error { _, err := buildSlow(bytes.NewReader(tb), 0, int64(len(tb)), max); return err },
	} {
		require.ErrorIs(t, build(100), ErrTooManyEntries, name)
		require.NoError(t, build(all.Cost()), name)
	}
	c := &Cache{Dir: t.TempDir()}
	_, err = c.Index("k", bytes.NewReader(tb), 0, int64(len(tb)), 0)
	require.NoError(t, err)
	_, err = c.Index("k", bytes.NewReader(tb), 0, int64(len(tb)), 100)
	require.ErrorIs(t, err, ErrTooManyEntries, "a saved index is held to the limit too")
}
