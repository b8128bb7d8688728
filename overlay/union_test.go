package overlay

import (
	"archive/tar"
	"bytes"
	"testing"

	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

// unionEntry is one tar member of a test layer.
type unionEntry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func unionFile(name, body string) unionEntry {
	return unionEntry{name: name, body: body, typ: tar.TypeReg, mode: 0o644}
}
func unionDir(name string) unionEntry { return unionEntry{name: name, typ: tar.TypeDir, mode: 0o755} }
func unionHardlink(name, target string) unionEntry {
	return unionEntry{name: name, link: target, typ: tar.TypeLink, mode: 0o644}
}
func unionSymlink(name, target string) unionEntry {
	return unionEntry{name: name, link: target, typ: tar.TypeSymlink, mode: 0o777}
}

func unionImage(t testing.TB, layers ...[]unionEntry) *Image {
	t.Helper()
	img := &Image{}
	for i, entries := range layers {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range entries {
			hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Size: int64(len(e.body)), Format: tar.FormatPAX}
			require.NoError(t, tw.WriteHeader(hdr))
			_, err := tw.Write([]byte(e.body))
			require.NoError(t, err)
		}
		require.NoError(t, tw.Close())
		data := buf.Bytes()
		ix, err := tarindex.Build(bytes.NewReader(data), 0, int64(len(data)))
		require.NoError(t, err)
		img.Layers = append(img.Layers, &Layer{Index: i, DiffID: digest.FromBytes(data), Data: data, TarIndex: ix, Size: int64(len(data))})
	}
	return img
}

// unionLookup finds a node by slash path.
func unionLookup(tr *Tree, p string) *Node {
	n := tr.Root
	for _, part := range bytes.Split([]byte(p), []byte("/")) {
		if n = n.Lookup(string(part)); n == nil {
			return nil
		}
	}
	return n
}

func unionContent(t *testing.T, tr *Tree, p string) string {
	t.Helper()
	n := unionLookup(tr, p)
	require.NotNil(t, n, "%s missing", p)
	buf := make([]byte, n.Entry.Size)
	_, err := tr.ReadAt(n, buf, 0)
	require.NoError(t, err)
	return string(buf)
}

func unionPaths(tr *Tree) []string {
	var out []string
	walk(tr.Root, func(n *Node) {
		if n.Parent != nil {
			out = append(out, n.Path())
		}
	})
	return out
}

func TestUnionTrickyCases(t *testing.T) {
	type want struct {
		content map[string]string // path → file content
		absent  []string
	}
	cases := []struct {
		name   string
		layers [][]unionEntry
		want   want
	}{
		{"hardlink keeps old content when target replaced",
			[][]unionEntry{{unionFile("a", "old"), unionHardlink("b", "a")}, {unionFile("a", "new")}},
			want{content: map[string]string{"a": "new", "b": "old"}}},
		{"hardlink survives whiteout of its target",
			[][]unionEntry{{unionFile("a", "x"), unionHardlink("b", "a")}, {unionFile(".wh.a", "")}},
			want{content: map[string]string{"b": "x"}, absent: []string{"a"}}},
		{"whiteout before same-layer file keeps the file",
			[][]unionEntry{{unionFile("foo", "lower")}, {unionFile(".wh.foo", ""), unionFile("foo", "upper")}},
			want{content: map[string]string{"foo": "upper"}}},
		{"whiteout after same-layer file keeps the file",
			[][]unionEntry{{unionFile("foo", "lower")}, {unionFile("foo", "upper"), unionFile(".wh.foo", "")}},
			want{content: map[string]string{"foo": "upper"}}},
		{"opaque marker after new siblings",
			[][]unionEntry{{unionDir("d"), unionFile("d/old", "o")}, {unionDir("d"), unionFile("d/new", "n"), unionFile("d/.wh..wh..opq", "")}},
			want{content: map[string]string{"d/new": "n"}, absent: []string{"d/old"}}},
		{"opaque marker before new siblings",
			[][]unionEntry{{unionDir("d"), unionFile("d/old", "o")}, {unionFile("d/.wh..wh..opq", ""), unionFile("d/new", "n")}},
			want{content: map[string]string{"d/new": "n"}, absent: []string{"d/old"}}},
		{"file replaced by dir and back",
			[][]unionEntry{{unionFile("x", "f1")}, {unionDir("x"), unionFile("x/in", "i")}, {unionFile("x", "f2")}},
			want{content: map[string]string{"x": "f2"}, absent: []string{"x/in"}}},
		{"dir over symlink",
			[][]unionEntry{{unionDir("real"), unionSymlink("s", "real")}, {unionDir("s"), unionFile("s/f", "z")}},
			want{content: map[string]string{"s/f": "z"}}},
		{"duplicate entries: last wins",
			[][]unionEntry{{unionFile("dup", "one"), unionFile("dup", "two")}},
			want{content: map[string]string{"dup": "two"}}},
		{"whiteout a subtree then recreate one child",
			[][]unionEntry{{unionDir("t"), unionFile("t/a", "a"), unionFile("t/b", "b")}, {unionFile(".wh.t", ""), unionDir("t"), unionFile("t/a", "A")}},
			want{content: map[string]string{"t/a": "A"}, absent: []string{"t/b"}}},
		{"implied parents and AUFS metadata",
			[][]unionEntry{{unionFile("p/q/r", "deep"), unionFile(".wh..wh.plnk", ""), unionFile(".wh..wh.aufs", "")}},
			want{content: map[string]string{"p/q/r": "deep"}, absent: []string{".wh..wh.plnk", ".wh..wh.aufs"}}},
		{"whiteout in a lower layer does not hide upper content",
			[][]unionEntry{{unionFile(".wh.z", "")}, {unionFile("z", "up")}},
			want{content: map[string]string{"z": "up"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := BuildUnion(unionImage(t, tc.layers...))
			require.NoError(t, err)
			for p, body := range tc.want.content {
				require.Equal(t, body, unionContent(t, tr, p), p)
			}
			for _, p := range tc.want.absent {
				require.Nil(t, unionLookup(tr, p), "%s should be absent", p)
			}
			for _, p := range unionPaths(tr) {
				require.NotContains(t, p, ".wh.", "whiteout shown in the union")
			}
		})
	}
}

func TestUnionHardlinkInodes(t *testing.T) {
	tr, err := BuildUnion(unionImage(t,
		[]unionEntry{unionFile("a", "x"), unionHardlink("b", "a"), unionHardlink("c", "b")},
		[]unionEntry{unionFile("a", "y")}))
	require.NoError(t, err)
	a, b, c := unionLookup(tr, "a"), unionLookup(tr, "b"), unionLookup(tr, "c")
	require.Equal(t, b.Ino, c.Ino)
	require.NotEqual(t, a.Ino, b.Ino)
	require.EqualValues(t, 2, b.Nlink)
	require.EqualValues(t, 1, a.Nlink)
	require.Equal(t, tarindex.TypeReg, b.Entry.Type)
	require.Equal(t, "x", unionContent(t, tr, "c"))
	require.Equal(t, uint64(1), tr.Root.Ino)
}

func TestUnionHardlinkMissingTarget(t *testing.T) {
	_, err := BuildUnion(unionImage(t, []unionEntry{unionHardlink("b", "nothere")}))
	require.ErrorContains(t, err, "layer 0")
	require.ErrorContains(t, err, "nothere")
}

func TestUnionRootAndDirAttributes(t *testing.T) {
	root := unionDir("./")
	root.mode = 0o700
	d2 := unionDir("d")
	d2.mode = 0o711
	tr, err := BuildUnion(unionImage(t,
		[]unionEntry{unionDir("d"), unionFile("d/a", "a")},
		[]unionEntry{root, d2, unionFile("d/b", "b")}))
	require.NoError(t, err)
	require.EqualValues(t, 0o700, tr.Root.Entry.Mode)
	d := unionLookup(tr, "d")
	require.EqualValues(t, 0o711, d.Entry.Mode)
	require.Len(t, d.Children(), 2, "children merged")
	require.EqualValues(t, 3, tr.Root.Nlink)
}

func TestUnionHiddenBytes(t *testing.T) {
	tr, err := BuildUnion(unionImage(t,
		[]unionEntry{unionFile("over", "12345"), unionFile("gone", "123"), unionDir("o"), unionFile("o/x", "1234567"), unionFile("keep", "kk")},
		[]unionEntry{unionFile("over", "z"), unionFile(".wh.gone", ""), unionFile("o/.wh..wh..opq", "")}))
	require.NoError(t, err)
	require.Equal(t, []int64{5 + 3 + 7, 0}, tr.Hidden)
}

func TestLayersView(t *testing.T) {
	img := unionImage(t,
		[]unionEntry{unionFile("a", "1"), unionFile("b", "2")},
		[]unionEntry{unionFile(".wh.a", ""), unionFile("d/c", "3"), unionHardlink("h", "b")})
	tr, err := BuildLayersView(img)
	require.NoError(t, err)
	require.Len(t, tr.Root.Children(), 2)
	l0 := "00-" + img.Layers[0].DiffID.Encoded()[:12]
	l1 := "01-" + img.Layers[1].DiffID.Encoded()[:12]
	require.Equal(t, []string{l0, l1}, []string{tr.Root.Children()[0].Name, tr.Root.Children()[1].Name})
	require.Equal(t, "1", unionContent(t, tr, l0+"/a"))
	require.NotNil(t, unionLookup(tr, l1+"/.wh.a"), "whiteout visible in its layer")
	require.Nil(t, unionLookup(tr, l1+"/a"))
	require.Equal(t, "3", unionContent(t, tr, l1+"/d/c"))
	h := unionLookup(tr, l1+"/h")
	require.Equal(t, tarindex.TypeReg, h.Entry.Type)
	require.Zero(t, h.Entry.Size)
	seen := map[uint64]bool{}
	walk(tr.Root, func(n *Node) {
		require.False(t, seen[n.Ino], "inode %d reused", n.Ino)
		seen[n.Ino] = true
	})
}

func BenchmarkBuildUnion(b *testing.B) {
	var layers [][]unionEntry
	for l := 0; l < 3; l++ {
		var es []unionEntry
		for i := 0; i < 70000; i++ {
			es = append(es, unionFile("d"+string(rune('a'+i%20))+"/f"+string(rune('a'+l))+itoa(i), "x"))
		}
		layers = append(layers, es)
	}
	img := unionImage(b, layers...)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := BuildUnion(img); err != nil {
			b.Fatal(err)
		}
	}
}

func itoa(i int) string {
	var buf [20]byte
	n := len(buf)
	for {
		n--
		buf[n] = byte('0' + i%10)
		if i /= 10; i == 0 {
			return string(buf[n:])
		}
	}
}

func TestLayersViewWhiteoutBelowFile(t *testing.T) {
	img := unionImage(t,
		[]unionEntry{unionDir("srv/shared"), unionFile("srv/shared/owned", "o")},
		[]unionEntry{unionFile("srv/shared", "now a file"), unionFile("srv/shared/.wh.owned", "")})
	lv, err := BuildLayersView(img)
	require.NoError(t, err)
	l1 := "01-" + img.Layers[1].DiffID.Encoded()[:12]
	require.Equal(t, "now a file", unionContent(t, lv, l1+"/srv/shared"))
	u, err := BuildUnion(img)
	require.NoError(t, err)
	require.Equal(t, "now a file", unionContent(t, u, "srv/shared"))
}
