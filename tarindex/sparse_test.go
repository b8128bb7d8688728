package tarindex

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// sparseFixture is a file made with truncate and writes, so that the
// filesystem has real holes for GNU tar --sparse to find.
type sparseFixture struct {
	name   string
	size   int64
	writes []int64 // offsets of 100-byte data runs
}

func sparseFixtures() []sparseFixture {
	many := make([]int64, 200) // > 4 + 21 entries: old GNU extension blocks; a multi-block PAX 1.0 map
	for i := range many {
		many[i] = int64(i)*64<<10 + 7
	}
	return []sparseFixture{
		{name: "hole-at-start", size: 3 << 20, writes: []int64{1 << 20, 3<<20 - 100}},
		{name: "hole-in-middle", size: 3 << 20, writes: []int64{0, 3<<20 - 100}},
		{name: "hole-at-end", size: 3 << 20, writes: []int64{0, 5000}},
		{name: "all-hole", size: 1 << 20},
		{name: "many-fragments", size: 200 * 64 << 10, writes: many},
		{name: strings.Repeat("deep-directory/", 8) + "sparse-with-a-long-name", size: 2 << 20, writes: []int64{1 << 20}},
	}
}

// makeSparseTree writes the fixtures (plus a dense file) under dir and
// returns their contents by path.
func makeSparseTree(t *testing.T, dir string) map[string][]byte {
	want := map[string][]byte{}
	for i, f := range sparseFixtures() {
		p := filepath.Join(dir, f.name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		content := make([]byte, f.size)
		for j, off := range f.writes {
			for k := range 100 {
				content[off+int64(k)] = byte('A' + (i+j+k)%26)
			}
		}
		fh, err := os.Create(p)
		require.NoError(t, err)
		require.NoError(t, fh.Truncate(f.size))
		for _, off := range f.writes {
			_, err := fh.WriteAt(content[off:off+100], off)
			require.NoError(t, err)
		}
		require.NoError(t, fh.Close())
		want[f.name] = content
	}
	want["dense"] = bytes.Repeat([]byte("dense data "), 1000)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dense"), want["dense"], 0o644))
	return want
}

func gnuTar(t *testing.T, dir string, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("GNU tar not installed")
	}
	if out, err := exec.Command("tar", "--version").Output(); err != nil || !bytes.Contains(out, []byte("GNU tar")) {
		t.Skip("tar is not GNU tar")
	}
	cmd := exec.Command("tar", append(append([]string{"--sparse", "--sort=name", "-C", dir}, args...), "-cf", "-", ".")...)
	out, err := cmd.Output()
	require.NoError(t, err, "%v", cmd.Args)
	return out
}

var gnuSparseFormats = map[string][]string{
	"oldgnu-S": {"--format=gnu"},
	"pax-0.0":  {"--format=posix", "--sparse-version=0.0"},
	"pax-0.1":  {"--format=posix", "--sparse-version=0.1"},
	"pax-1.0":  {"--format=posix", "--sparse-version=1.0"},
}

func TestSparseGNUTar(t *testing.T) {
	dir := t.TempDir()
	want := makeSparseTree(t, dir)
	for fname, args := range gnuSparseFormats {
		t.Run(fname, func(t *testing.T) {
			tb := gnuTar(t, dir, args...)
			const base = 1234
			src := embed(tb, base)
			ix, err := Build(bytes.NewReader(src), base, int64(len(tb)))
			require.NoError(t, err)
			m := byName(ix)
			sparseSeen := 0
			for name, content := range want {
				e := m[name]
				require.NotNil(t, e, name)
				require.Equal(t, int64(len(content)), e.Size, name)
				if name != "dense" {
					require.NotNil(t, e.Sparse, "%s should be sparse", name)
					sparseSeen++
				}
				got := make([]byte, e.Size)
				n, err := e.ReadAt(src, got, 0)
				require.NoError(t, err)
				require.Equal(t, len(content), n)
				require.True(t, bytes.Equal(content, got), "%s: content differs", name)
				checkRandomReads(t, e, src, content)
			}
			require.Equal(t, len(want)-1, sparseSeen)
			require.Empty(t, m["all-hole"].Sparse)
			require.Len(t, m["many-fragments"].Sparse, 200)
			require.Equal(t, int64(1<<20), m["hole-at-start"].Sparse[0].Logical)
			for _, f := range m["many-fragments"].Sparse {
				require.Greater(t, f.Physical, int64(base))
				require.LessOrEqual(t, f.Physical+f.Length, ix.End)
			}
			checkAgainstTarReader(t, tb, ix, base)
		})
	}
}

// checkRandomReads reads runs that straddle fragment and hole boundaries.
func checkRandomReads(t *testing.T, e *Entry, src, content []byte) {
	rng := rand.New(rand.NewPCG(1, uint64(len(content))))
	offs := []int64{0, e.Size - 1}
	for _, f := range e.Sparse {
		offs = append(offs, f.Logical-3, f.Logical+f.Length-2)
	}
	for range 50 {
		offs = append(offs, rng.Int64N(e.Size))
	}
	for _, off := range offs {
		if off < 0 || off >= e.Size {
			continue
		}
		p := make([]byte, 1+rng.IntN(300))
		n, err := e.ReadAt(src, p, off)
		require.NoError(t, err)
		require.Equal(t, content[off:off+int64(n)], p[:n], "%s at %d", e.Name, off)
		require.Equal(t, min(int64(len(p)), e.Size-off), int64(n))
	}
}

// checkAgainstTarReader compares every regular member with what
// archive/tar itself extracts, the reference for formats GNU tar wrote.
func checkAgainstTarReader(t *testing.T, tb []byte, ix *Index, base int64) {
	m := byName(ix)
	src := embed(tb, int(base))
	tr := tar.NewReader(bytes.NewReader(tb))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeGNUSparse {
			continue
		}
		ref, err := io.ReadAll(tr)
		require.NoError(t, err)
		name, _ := CleanName(hdr.Name)
		e := m[name]
		got := make([]byte, e.Size)
		_, err = e.ReadAt(src, got, 0)
		if e.Size > 0 {
			require.NoError(t, err)
		}
		require.True(t, bytes.Equal(ref, got), name)
	}
}

// TestSparseHugeHole: indexing must not cost time in proportion to the
// holes (reading a sparse member through archive/tar zero-fills them).
func TestSparseHugeHole(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "huge")
	fh, err := os.Create(p)
	require.NoError(t, err)
	const size = 8 << 40 // 8 TiB
	if err := fh.Truncate(size); err != nil {
		fh.Close()
		t.Skipf("filesystem cannot hold an 8 TiB sparse file: %v", err)
	}
	_, err = fh.WriteAt([]byte("needle"), 4<<40)
	require.NoError(t, err)
	require.NoError(t, fh.Close())
	for fname, args := range gnuSparseFormats {
		t.Run(fname, func(t *testing.T) {
			tb := gnuTar(t, dir, args...)
			start := time.Now()
			ix := build(t, tb)
			require.Less(t, time.Since(start), 5*time.Second)
			e := byName(ix)["huge"]
			require.Equal(t, int64(size), e.Size)
			p := make([]byte, 10)
			n, err := e.ReadAt(tb, p, 4<<40-2)
			require.NoError(t, err)
			require.Equal(t, "\x00\x00needle\x00\x00", string(p[:n]))
		})
	}
}

// rawHeader builds a USTAR header block by hand: archive/tar's Writer
// refuses to write GNU.sparse records, and crafted archives need them.
func rawHeader(name string, typeflag byte, size int64) []byte {
	b := make([]byte, blockSize)
	copy(b, name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], fmt.Sprintf("%011o\x00", 1700000000))
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

func padBlock(b []byte) []byte {
	return append(b, make([]byte, roundBlock(int64(len(b)))-int64(len(b)))...)
}

// rawPAXMember is a PAX extended header with records, then a member with
// the given physical data.
func rawPAXMember(records [][2]string, name string, data []byte) []byte {
	var pax []byte
	for _, r := range records {
		pax = append(pax, paxRecord(r[0], r[1])...)
	}
	out := append(rawHeader("PaxHeaders/"+name, tar.TypeXHeader, int64(len(pax))), padBlock(pax)...)
	out = append(out, rawHeader(name, tar.TypeReg, int64(len(data)))...)
	return append(out, padBlock(data)...)
}

// paxRecord formats "<len> key=value\n", where len counts itself.
func paxRecord(k, v string) string {
	rec := " " + k + "=" + v + "\n"
	n := len(rec) + 1
	for len(rec)+len(fmt.Sprint(n)) != n {
		n = len(rec) + len(fmt.Sprint(n))
	}
	return fmt.Sprint(n) + rec
}

func TestSparseCraftedExabyteHole(t *testing.T) {
	const size = 1 << 62
	tb := rawPAXMember([][2]string{
		{"GNU.sparse.major", "0"}, {"GNU.sparse.minor", "1"},
		{"GNU.sparse.size", fmt.Sprint(int64(size))}, {"GNU.sparse.numblocks", "2"},
		{"GNU.sparse.map", fmt.Sprintf("0,5,%d,0", int64(size))},
	}, "bomb", []byte("hello"))
	tb = append(append(tb, rawPAXMember(nil, "next", []byte("x"))...), make([]byte, 1024)...)
	ix := build(t, tb)
	e := byName(ix)["bomb"]
	require.Equal(t, int64(size), e.Size)
	require.Len(t, e.Sparse, 1)
	p := make([]byte, 8)
	n, err := e.ReadAt(tb, p, 0)
	require.NoError(t, err)
	require.Equal(t, "hello\x00\x00\x00", string(p[:n]))
	require.Equal(t, "x", string(byName(ix)["next"].Slice(tb, 0, 10)))
}

func TestSparseMapClaimsMoreThanStored(t *testing.T) {
	// The map says 4096 data bytes; the member stores 512. Serving it would
	// hand out the next member's header as file content.
	tb := rawPAXMember([][2]string{
		{"GNU.sparse.major", "0"}, {"GNU.sparse.minor", "1"},
		{"GNU.sparse.size", "8192"}, {"GNU.sparse.numblocks", "1"},
		{"GNU.sparse.map", "0,4096"},
	}, "liar", bytes.Repeat([]byte{'L'}, 512))
	tb = append(append(tb, rawPAXMember(nil, "next", []byte("x"))...), make([]byte, 1024)...)
	_, err := Build(bytes.NewReader(tb), 0, int64(len(tb)))
	require.ErrorContains(t, err, `"liar"`)

	// At the end of the source, it is a truncation.
	tb = rawPAXMember([][2]string{
		{"GNU.sparse.major", "0"}, {"GNU.sparse.minor", "1"},
		{"GNU.sparse.size", "8192"}, {"GNU.sparse.numblocks", "1"},
		{"GNU.sparse.map", "0,4096"},
	}, "cut", bytes.Repeat([]byte{'L'}, 512))
	_, err = Build(bytes.NewReader(tb), 0, int64(len(tb)))
	require.ErrorContains(t, err, `"cut"`)
}

func TestSparseTruncatedGNUTar(t *testing.T) {
	dir := t.TempDir()
	makeSparseTree(t, dir)
	tb := gnuTar(t, dir, "--format=gnu")
	ix := build(t, tb)
	e := byName(ix)["many-fragments"]
	cut := e.Sparse[100].Physical + 10
	_, err := Build(bytes.NewReader(tb[:cut]), 0, cut)
	require.ErrorContains(t, err, "many-fragments")
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestParseNumeric(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{"00000000644\x00", 0o644, false},
		{" 644 \x00", 0o644, false},
		{"\x00\x00\x00", 0, false},
		{"\x80\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00", 1 << 32, false},
		{"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", -1, false},
		{"\x80\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 0, true},
		{"0009", 0, true},
	} {
		got, err := parseNumeric([]byte(c.in))
		if c.bad {
			require.Error(t, err, "%q", c.in)
			continue
		}
		require.NoError(t, err, "%q", c.in)
		require.Equal(t, c.want, got, "%q", c.in)
	}
}
