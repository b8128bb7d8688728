package union

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func fileContent(t *testing.T, tr *Tree, p string) string {
	t.Helper()
	n := tr.Find(p)
	require.NotNil(t, n, "%s missing", p)
	require.NotNil(t, n.Entry, "%s has no entry", p)
	require.Equal(t, tarindex.TypeReg, n.Entry.Type, "%s is not a regular file", p)
	if n.Entry.Size == 0 {
		return ""
	}
	buf := make([]byte, n.Entry.Size)
	_, err := tr.ReadAt(n, buf, 0)
	require.NoError(t, err)
	return string(buf)
}

func treePaths(tr *Tree) []string {
	var out []string
	Walk(tr.Root, func(n *Node) {
		if n.Parent != nil {
			out = append(out, n.Path())
		}
	})
	return out
}

// pathFact is what one path looks like: from our tree or from disk.
type pathFact struct {
	typ     tarindex.Type
	mode    uint32 // permission bits (07777)
	content string // regular files
	link    string // symlinks
}

func treeFacts(t *testing.T, tr *Tree) map[string]pathFact {
	t.Helper()
	facts := map[string]pathFact{}
	Walk(tr.Root, func(n *Node) {
		f := pathFact{typ: tarindex.TypeDir, mode: 0o755}
		if n.Entry != nil {
			f.typ, f.mode = n.Entry.Type, n.Entry.Mode
			switch f.typ {
			case tarindex.TypeReg:
				if n.Entry.Size > 0 {
					buf := make([]byte, n.Entry.Size)
					_, err := tr.ReadAt(n, buf, 0)
					require.NoError(t, err)
					f.content = string(buf)
				}
			case tarindex.TypeSymlink:
				f.link = n.Entry.Linkname
			}
		}
		facts[n.Path()] = f
	})
	return facts
}

// linkGroups maps each non-directory path to the first path (in sorted
// order) of the set of paths sharing its inode.
func linkGroups(inos map[string]uint64) map[string]string {
	first := map[uint64]string{}
	paths := make([]string, 0, len(inos))
	for p := range inos {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	out := map[string]string{}
	for _, p := range paths {
		if _, ok := first[inos[p]]; !ok {
			first[inos[p]] = p
		}
		out[p] = first[inos[p]]
	}
	return out
}

// checkInvariants checks what must hold of every union tree.
func checkInvariants(t *testing.T, tr *Tree) {
	t.Helper()
	require.Nil(t, tr.Root.Parent)
	require.Empty(t, tr.Root.Name)
	require.Equal(t, uint64(1), tr.Root.Ino)
	inoOf := map[uint64][]*Node{}
	Walk(tr.Root, func(n *Node) {
		if n.Parent != nil {
			require.NotContains(t, "/"+n.Path(), "/"+WhiteoutPrefix, "whiteout name in the union")
		}
		require.NotZero(t, n.Ino)
		inoOf[n.Ino] = append(inoOf[n.Ino], n)
		if n.Entry != nil {
			require.NotEqual(t, tarindex.TypeHardlink, n.Entry.Type, n.Path())
			require.GreaterOrEqual(t, n.Layer, 0, n.Path())
		} else {
			require.Equal(t, -1, n.Layer, n.Path())
		}
		if !n.IsDir() {
			require.Nil(t, n.Children(), n.Path())
			return
		}
		subdirs := 0
		for i, c := range n.Children() {
			require.Same(t, n, c.Parent)
			if i > 0 {
				require.Less(t, n.Children()[i-1].Name, c.Name, "children sorted and unique")
			}
			require.Same(t, c, n.Lookup(c.Name))
			if c.IsDir() {
				subdirs++
			}
		}
		require.EqualValues(t, 2+subdirs, n.Nlink, "%s: dir nlink", n.Path())
	})
	for ino, ns := range inoOf {
		if len(ns) > 1 {
			for _, n := range ns {
				require.False(t, n.IsDir(), "directory %s shares inode %d", n.Path(), ino)
				require.Same(t, ns[0].Entry, n.Entry, "paths sharing inode %d show different entries", ino)
			}
		}
		if !ns[0].IsDir() {
			for _, n := range ns {
				require.EqualValues(t, len(ns), n.Nlink, "%s: nlink", n.Path())
			}
		}
	}
}

// checkAgainstUmoci unpacks the layers with `umoci unpack` (skipped when
// umoci is not installed) and requires the same paths, types, permission
// bits, contents, symlink targets and hardlink groups as tr.
func checkAgainstUmoci(t *testing.T, layers [][]imagetest.Entry, tr *Tree) {
	t.Helper()
	rootfs, ok := umociUnpack(t, layers, true)
	if !ok {
		return
	}
	disk, diskInos := diskFacts(t, rootfs)
	ours := treeFacts(t, tr)
	oursInos := map[string]uint64{}
	Walk(tr.Root, func(n *Node) {
		if !n.IsDir() {
			oursInos[n.Path()] = n.Ino
		}
	})
	require.Equal(t, disk, ours, "union differs from umoci unpack")
	require.Equal(t, linkGroups(diskInos), linkGroups(oursInos), "hardlink groups differ from umoci unpack")
}

// umociUnpack writes layers as an OCI layout and unpacks it with umoci. ok
// is false when umoci is missing (the test is then not failed); with
// mustWork, an unpack failure fails the test.
func umociUnpack(t *testing.T, layers [][]imagetest.Entry, mustWork bool) (rootfs string, ok bool) {
	t.Helper()
	if _, err := exec.LookPath("umoci"); err != nil {
		t.Log("umoci not installed: oracle comparison skipped")
		return "", false
	}
	dir := t.TempDir()
	layout := filepath.Join(dir, "oci")
	put := func(b []byte, mediaType string) ocispec.Descriptor {
		d := digest.FromBytes(b)
		p := filepath.Join(layout, "blobs", "sha256", d.Encoded())
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, b, 0o644))
		return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
	}
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		return b
	}
	cfg := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, RootFS: ocispec.RootFS{Type: "layers"}}
	man := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest}
	man.SchemaVersion = 2
	for _, l := range layers {
		data := imagetest.LayerTar(t, l)
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, digest.FromBytes(data))
		man.Layers = append(man.Layers, put(data, ocispec.MediaTypeImageLayer))
	}
	man.Config = put(mustJSON(cfg), ocispec.MediaTypeImageConfig)
	md := put(mustJSON(man), ocispec.MediaTypeImageManifest)
	md.Annotations = map[string]string{ocispec.AnnotationRefName: "img"}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{md}}
	idx.SchemaVersion = 2
	require.NoError(t, os.WriteFile(filepath.Join(layout, "index.json"), mustJSON(idx), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(layout, ocispec.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644))
	args := []string{"unpack"}
	if os.Geteuid() != 0 {
		args = append(args, "--rootless")
	}
	args = append(args, "--image", layout+":img", filepath.Join(dir, "bundle"))
	out, err := exec.Command("umoci", args...).CombinedOutput()
	if err != nil {
		if mustWork {
			t.Fatalf("umoci unpack: %v\n%s", err, out)
		}
		return "", false
	}
	return filepath.Join(dir, "bundle", "rootfs"), true
}

func diskFacts(t *testing.T, rootfs string) (map[string]pathFact, map[string]uint64) {
	t.Helper()
	facts := map[string]pathFact{}
	inos := map[string]uint64{}
	err := filepath.WalkDir(rootfs, func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		rel, err := filepath.Rel(rootfs, p)
		require.NoError(t, err)
		fi, err := d.Info()
		require.NoError(t, err)
		st := fi.Sys().(*syscall.Stat_t)
		f := pathFact{mode: st.Mode & 0o7777}
		switch fi.Mode().Type() {
		case 0:
			f.typ = tarindex.TypeReg
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			f.content = string(b)
		case fs.ModeDir:
			f.typ = tarindex.TypeDir
		case fs.ModeSymlink:
			f.typ = tarindex.TypeSymlink
			f.link, err = os.Readlink(p)
			require.NoError(t, err)
		case fs.ModeNamedPipe:
			f.typ = tarindex.TypeFifo
		default:
			t.Fatalf("%s: unexpected type %v", p, fi.Mode())
		}
		if f.typ != tarindex.TypeDir {
			inos[rel] = st.Ino
		}
		facts[rel] = f
		return nil
	})
	require.NoError(t, err)
	return facts, inos
}

// tableCase is one table case: layers, what some paths must look like,
// what must be absent.
type tableCase struct {
	name   string
	layers [][]imagetest.Entry
	want   map[string]pathFact // typ defaults to TypeReg; mode 0 is not checked
	absent []string
	// noOracle says why umoci's result differs from ours (a choice we
	// made where extraction fails or depends on the whiteout's position);
	// empty means the whole tree must equal umoci's.
	noOracle string
}

func regFact(content string) pathFact    { return pathFact{typ: tarindex.TypeReg, content: content} }
func dirFact(mode uint32) pathFact       { return pathFact{typ: tarindex.TypeDir, mode: mode} }
func symlinkFact(target string) pathFact { return pathFact{typ: tarindex.TypeSymlink, link: target} }

var tableCases = []tableCase{
	{name: "hardlink keeps old content when its target is replaced",
		layers: [][]imagetest.Entry{
			{imagetest.File("a", "old"), imagetest.Hardlink("b", "a")},
			{imagetest.File("a", "new")}},
		want: map[string]pathFact{"a": regFact("new"), "b": regFact("old")}},
	{name: "hardlink survives a whiteout of its target",
		layers: [][]imagetest.Entry{
			{imagetest.Dir("d"), imagetest.File("d/a", "x"), imagetest.Hardlink("d/b", "d/a")},
			{imagetest.Whiteout("d/a")}},
		want:   map[string]pathFact{"d/b": regFact("x")},
		absent: []string{"d/a"}},
	{name: "hardlink survives a whiteout of its target's directory",
		layers: [][]imagetest.Entry{
			{imagetest.Dir("d"), imagetest.File("d/a", "x"), imagetest.Hardlink("b", "d/a")},
			{imagetest.Whiteout("d")}},
		want:   map[string]pathFact{"b": regFact("x")},
		absent: []string{"d"}},
	{name: "whiteout before the same name in one layer: the file stays",
		layers: [][]imagetest.Entry{
			{imagetest.File("foo", "lower")},
			{imagetest.Whiteout("foo"), imagetest.File("foo", "upper")}},
		want: map[string]pathFact{"foo": regFact("upper")}},
	{name: "whiteout after the same name in one layer: the file stays",
		layers: [][]imagetest.Entry{
			{imagetest.File("foo", "lower")},
			{imagetest.File("foo", "upper"), imagetest.Whiteout("foo")}},
		want: map[string]pathFact{"foo": regFact("upper")}},
	{name: "whiteout after the same directory in one layer: lower children go",
		layers: [][]imagetest.Entry{
			{imagetest.DirMode("t", 0o700), imagetest.File("t/old", "o")},
			{imagetest.DirMode("t", 0o750), imagetest.File("t/new", "n"), imagetest.Whiteout("t")}},
		want:   map[string]pathFact{"t": dirFact(0o750), "t/new": regFact("n")},
		absent: []string{"t/old"}},
	{name: "opaque marker after new siblings",
		layers: [][]imagetest.Entry{
			{imagetest.Dir("d"), imagetest.File("d/old", "o"), imagetest.Dir("d/sub"), imagetest.File("d/sub/y", "y")},
			{imagetest.Dir("d"), imagetest.File("d/new", "n"), imagetest.Opaque("d")}},
		want:   map[string]pathFact{"d/new": regFact("n")},
		absent: []string{"d/old", "d/sub"}},
	{name: "opaque marker before new siblings",
		layers: [][]imagetest.Entry{
			{imagetest.Dir("d"), imagetest.File("d/old", "o"), imagetest.Dir("d/sub"), imagetest.File("d/sub/y", "y")},
			{imagetest.Opaque("d"), imagetest.File("d/new", "n"), imagetest.File("d/sub/z", "z")}},
		want:   map[string]pathFact{"d/new": regFact("n"), "d/sub": dirFact(0o755), "d/sub/z": regFact("z")},
		absent: []string{"d/old", "d/sub/y"}},
	{name: "opaque marker after a new child of a lower subdirectory",
		layers: [][]imagetest.Entry{
			{imagetest.Dir("d"), imagetest.DirMode("d/sub", 0o700), imagetest.File("d/sub/y", "y")},
			{imagetest.File("d/sub/z", "z"), imagetest.Opaque("d")}},
		// The lower d/sub is hidden; this layer's d/sub/z needs a parent,
		// synthesized: the same result as with the marker first.
		want:     map[string]pathFact{"d/sub": dirFact(0o755), "d/sub/z": regFact("z")},
		absent:   []string{"d/sub/y"},
		noOracle: "umoci keeps the hidden lower d/sub's mode 0700 when the marker comes after d/sub/z (and 0755 when it comes first)"},
	{name: "opaque marker on a directory new in its layer",
		layers: [][]imagetest.Entry{
			{imagetest.File("x", "x")},
			{imagetest.Dir("n"), imagetest.Opaque("n"), imagetest.File("n/f", "f")}},
		want: map[string]pathFact{"n/f": regFact("f"), "x": regFact("x")}},
	{name: "opaque marker at the root",
		layers: [][]imagetest.Entry{
			{imagetest.File("a", "a"), imagetest.Dir("b"), imagetest.File("b/c", "c")},
			{imagetest.File("n", "n"), imagetest.Opaque("")}},
		want:   map[string]pathFact{"n": regFact("n")},
		absent: []string{"a", "b"}},
	{name: "file replaced by a directory and back",
		layers: [][]imagetest.Entry{
			{imagetest.File("x", "f1")},
			{imagetest.Dir("x"), imagetest.File("x/in", "i")},
			{imagetest.File("x", "f2")}},
		want:   map[string]pathFact{"x": regFact("f2")},
		absent: []string{"x/in"}},
	{name: "directory over a file takes the directory's attributes",
		layers: [][]imagetest.Entry{
			{imagetest.File("x", "f1")},
			{imagetest.DirMode("x", 0o700)}},
		want: map[string]pathFact{"x": dirFact(0o700)}},
	{name: "directory over a symlink",
		layers: [][]imagetest.Entry{
			{imagetest.Dir("real"), imagetest.File("real/r", "r"), imagetest.Symlink("s", "real")},
			{imagetest.Dir("s"), imagetest.File("s/f", "z")}},
		want:   map[string]pathFact{"s": dirFact(0o755), "s/f": regFact("z"), "real/r": regFact("r")},
		absent: []string{"s/r", "real/f"}},
	{name: "symlink over a directory hides its subtree",
		layers: [][]imagetest.Entry{
			{imagetest.Dir("d"), imagetest.File("d/f", "f")},
			{imagetest.Symlink("d", "elsewhere")}},
		want:   map[string]pathFact{"d": {typ: tarindex.TypeSymlink, link: "elsewhere"}},
		absent: []string{"d/f"}},
	{name: "duplicate entries in one layer: the last wins",
		layers: [][]imagetest.Entry{
			{imagetest.File("dup", "one"), imagetest.File("dup", "two"),
				imagetest.File("f2d", "file"), imagetest.DirMode("f2d", 0o711),
				imagetest.Dir("d2f"), imagetest.File("d2f/c", "c"), imagetest.File("d2f", "now a file"),
				imagetest.DirMode("dd", 0o700), imagetest.File("dd/a", "a"), imagetest.DirMode("dd", 0o750), imagetest.File("dd/b", "b"),
				imagetest.Symlink("s", "t1"), imagetest.Symlink("s", "t2")}},
		want: map[string]pathFact{
			"dup": regFact("two"), "f2d": dirFact(0o711), "d2f": regFact("now a file"),
			"dd": dirFact(0o750), "dd/a": regFact("a"), "dd/b": regFact("b"),
			"s": {typ: tarindex.TypeSymlink, link: "t2"}},
		absent: []string{"d2f/c"}},
	{name: "whiteout of a subtree, then one child re-created",
		layers: [][]imagetest.Entry{
			{imagetest.Dir("t"), imagetest.File("t/a", "a"), imagetest.File("t/b", "b"), imagetest.Dir("t/sub"), imagetest.File("t/sub/c", "c")},
			{imagetest.Whiteout("t"), imagetest.Dir("t"), imagetest.File("t/a", "A")}},
		want:   map[string]pathFact{"t/a": regFact("A")},
		absent: []string{"t/b", "t/sub"}},
	{name: "whiteout of a subtree after one child was re-created",
		layers: [][]imagetest.Entry{
			{imagetest.DirMode("t", 0o700), imagetest.File("t/a", "a"), imagetest.File("t/b", "b")},
			{imagetest.File("t/a", "A"), imagetest.Whiteout("t")}},
		want:     map[string]pathFact{"t": dirFact(0o755), "t/a": regFact("A")},
		absent:   []string{"t/b"},
		noOracle: "umoci keeps the whited-out t's mode 0700 when the whiteout comes after t/a (and 0755 when it comes first)"},
	{name: "implied parents are synthesized",
		layers: [][]imagetest.Entry{
			{imagetest.File("p/q/r", "deep")}},
		want: map[string]pathFact{"p": dirFact(0o755), "p/q": dirFact(0o755), "p/q/r": regFact("deep")}},
	{name: "implied parent keeps a lower directory's attributes",
		layers: [][]imagetest.Entry{
			{imagetest.DirMode("a", 0o700), imagetest.File("a/old", "o")},
			{imagetest.File("a/b", "b")}},
		want: map[string]pathFact{"a": dirFact(0o700), "a/old": regFact("o"), "a/b": regFact("b")}},
	{name: "implied parent replaces a lower file",
		layers: [][]imagetest.Entry{
			{imagetest.File("a", "file")},
			{imagetest.File("a/b", "b")}},
		want:     map[string]pathFact{"a": dirFact(0o755), "a/b": regFact("b")},
		noOracle: "umoci fails: a is not a directory"},
	{name: "an entry under a lower symlink lands in its target",
		layers: [][]imagetest.Entry{
			{imagetest.Dir("real"), imagetest.File("real/r", "r"), imagetest.Symlink("l", "real")},
			{imagetest.File("l/c", "c")}},
		want: map[string]pathFact{"l": symlinkFact("real"), "real/c": regFact("c"), "real/r": regFact("r")}},
	{name: "absolute and chained symlinks are followed within the root",
		layers: [][]imagetest.Entry{
			{imagetest.Dir("usr"), imagetest.Dir("usr/lib"), imagetest.Symlink("lib", "/usr/lib"), imagetest.Symlink("lib64", "lib"),
				imagetest.Dir("a"), imagetest.Dir("a/b"), imagetest.Dir("c"), imagetest.Symlink("a/b/up", "../../c"), imagetest.Symlink("a/esc", "../../../../c")},
			{imagetest.File("lib/x", "x"), imagetest.File("lib64/y", "y"), imagetest.File("a/b/up/z", "z"), imagetest.File("a/esc/w", "w")}},
		want: map[string]pathFact{"lib": symlinkFact("/usr/lib"), "lib64": symlinkFact("lib"), "a/b/up": symlinkFact("../../c"),
			"usr/lib/x": regFact("x"), "usr/lib/y": regFact("y"), "c/z": regFact("z"), "c/w": regFact("w")}},
	{name: "whiteouts and hardlink targets under a symlink",
		layers: [][]imagetest.Entry{
			{imagetest.Dir("real"), imagetest.File("real/gone", "g"), imagetest.File("real/keep", "k"), imagetest.File("real/t", "t"), imagetest.Symlink("l", "real")},
			{imagetest.Whiteout("l/gone"), imagetest.Hardlink("hl", "l/t")}},
		want:   map[string]pathFact{"l": symlinkFact("real"), "real/keep": regFact("k"), "hl": regFact("t")},
		absent: []string{"real/gone"}},
	{name: "a symlink whited out, then a path under its name in the same layer",
		layers: [][]imagetest.Entry{
			{imagetest.Dir("real"), imagetest.Symlink("l", "real")},
			{imagetest.File("l/a", "a"), imagetest.Whiteout("l"), imagetest.File("l/b", "b")}},
		want:   map[string]pathFact{"real/a": regFact("a"), "l": dirFact(0o755), "l/b": regFact("b")},
		absent: []string{"real/b"}},
	{name: "an entry under a symlink to a file replaces the symlink",
		layers: [][]imagetest.Entry{
			{imagetest.File("f", "f"), imagetest.Symlink("l", "f")},
			{imagetest.File("l/c", "c")}},
		want:     map[string]pathFact{"f": regFact("f"), "l": dirFact(0o755), "l/c": regFact("c")},
		noOracle: "umoci fails: l is not a directory"},
	{name: "an entry under a dangling symlink makes its target",
		layers: [][]imagetest.Entry{
			{imagetest.Symlink("l", "missing/../missing/dir")},
			{imagetest.File("l/c", "c")}},
		want: map[string]pathFact{"l": symlinkFact("missing/../missing/dir"), "missing/dir": dirFact(0o755), "missing/dir/c": regFact("c")}},
	{name: "an entry under a looping symlink replaces the symlink",
		layers: [][]imagetest.Entry{
			{imagetest.Symlink("l", "l")},
			{imagetest.File("l/c", "c")}},
		want:     map[string]pathFact{"l": dirFact(0o755), "l/c": regFact("c")},
		noOracle: "umoci fails: too many levels of symbolic links"},
	{name: "opaque marker before a new child of a lower subdirectory",
		layers: [][]imagetest.Entry{
			{imagetest.Dir("d"), imagetest.DirMode("d/sub", 0o700), imagetest.File("d/sub/y", "y")},
			{imagetest.Opaque("d"), imagetest.File("d/sub/z", "z")}},
		want:   map[string]pathFact{"d/sub": dirFact(0o755), "d/sub/z": regFact("z")},
		absent: []string{"d/sub/y"}},
	{name: "whiteout of a subtree before one child is re-created",
		layers: [][]imagetest.Entry{
			{imagetest.DirMode("t", 0o700), imagetest.File("t/a", "a"), imagetest.File("t/b", "b")},
			{imagetest.Whiteout("t"), imagetest.File("t/a", "A")}},
		want:   map[string]pathFact{"t": dirFact(0o755), "t/a": regFact("A")},
		absent: []string{"t/b"}},
	{name: "AUFS metadata is skipped",
		layers: [][]imagetest.Entry{
			{imagetest.File(".wh..wh.aufs", ""), imagetest.Dir(".wh..wh.orph"), imagetest.Dir("d"), imagetest.File("d/.wh..wh.foo", ""), imagetest.File("d/f", "f")}},
		want:   map[string]pathFact{"d/f": regFact("f")},
		absent: []string{".wh..wh.aufs", ".wh..wh.orph", "d/.wh..wh.foo"}},
	{name: "AUFS hardlink stash serves links and stays hidden",
		layers: [][]imagetest.Entry{
			{imagetest.Dir(".wh..wh.plnk"), imagetest.File(".wh..wh.plnk/123.456", "stashed"), imagetest.Hardlink("x", ".wh..wh.plnk/123.456"), imagetest.Hardlink("y", ".wh..wh.plnk/123.456")}},
		want:     map[string]pathFact{"x": regFact("stashed"), "y": regFact("stashed")},
		absent:   []string{".wh..wh.plnk"},
		noOracle: "umoci shows .wh..wh.plnk (Docker hides it and resolves links into it, as we do)"},
	{name: "entries below a whiteout-named directory are skipped",
		layers: [][]imagetest.Entry{
			{imagetest.File(".wh.x/y", "y"), imagetest.File("d/.wh.z/w", "w"), imagetest.File("d/ok", "ok")}},
		want:     map[string]pathFact{"d/ok": regFact("ok")},
		absent:   []string{".wh.x", "d/.wh.z"},
		noOracle: "umoci extracts them (no .wh. name is ever shown in our union)"},
	{name: "whiteout in a lower layer does not hide upper content",
		layers: [][]imagetest.Entry{
			{imagetest.Whiteout("z")},
			{imagetest.File("z", "up")}},
		want: map[string]pathFact{"z": regFact("up")}},
	{name: "whiteout of a missing path creates nothing",
		layers: [][]imagetest.Entry{
			{imagetest.File("keep", "k")},
			{imagetest.Whiteout("x/y/z"), imagetest.Whiteout("nothing"), imagetest.Opaque("nodir")}},
		want:   map[string]pathFact{"keep": regFact("k")},
		absent: []string{"x", "nothing", "nodir"}},
	{name: "whiteout below a file that replaced its directory",
		layers: [][]imagetest.Entry{
			{imagetest.Dir("srv/shared"), imagetest.File("srv/shared/owned", "o")},
			{imagetest.File("srv/shared", "now a file"), imagetest.Whiteout("srv/shared/owned")}},
		want: map[string]pathFact{"srv/shared": regFact("now a file")}},
	{name: "whiteout of a fifo and a symlink",
		layers: [][]imagetest.Entry{
			{imagetest.Dir("dev"), imagetest.Fifo("dev/fifo"), imagetest.Fifo("dev/keep"), imagetest.Symlink("s", "x")},
			{imagetest.Whiteout("dev/fifo"), imagetest.Whiteout("s")}},
		want:   map[string]pathFact{"dev/keep": {typ: tarindex.TypeFifo, mode: 0o600}},
		absent: []string{"dev/fifo", "s"}},
	{name: "hardlink to a hardlink follows it",
		layers: [][]imagetest.Entry{
			{imagetest.File("a", "x"), imagetest.Hardlink("b", "a"), imagetest.Hardlink("c", "b")},
			{imagetest.File("a", "y")}},
		want: map[string]pathFact{"a": regFact("y"), "b": regFact("x"), "c": regFact("x")}},
	{name: "hardlink in an upper layer to a lower file",
		layers: [][]imagetest.Entry{
			{imagetest.FileMode("a", "x", 0o4755)},
			{imagetest.Hardlink("b", "a")}},
		want: map[string]pathFact{"a": {typ: tarindex.TypeReg, content: "x", mode: 0o4755}, "b": {typ: tarindex.TypeReg, content: "x", mode: 0o4755}}},
	{name: "hardlink made before a same-layer whiteout of its lower target",
		layers: [][]imagetest.Entry{
			{imagetest.File("a", "x")},
			{imagetest.Hardlink("b", "a"), imagetest.Whiteout("a")}},
		want:   map[string]pathFact{"b": regFact("x")},
		absent: []string{"a"}},
	{name: "hardlink to a target replaced earlier in its layer",
		layers: [][]imagetest.Entry{
			{imagetest.File("a", "1")},
			{imagetest.File("a", "2"), imagetest.Hardlink("b", "a")}},
		want: map[string]pathFact{"a": regFact("2"), "b": regFact("2")}},
	{name: "hardlink to itself keeps the file",
		layers: [][]imagetest.Entry{
			{imagetest.File("a", "x"), imagetest.Hardlink("a", "a")}},
		want:     map[string]pathFact{"a": regFact("x")},
		noOracle: "umoci removes a before linking to it and fails; GNU tar keeps a, as we do"},
	{name: "hardlink to a symlink",
		layers: [][]imagetest.Entry{
			{imagetest.Symlink("s", "t"), imagetest.Hardlink("h", "s")}},
		want: map[string]pathFact{"h": {typ: tarindex.TypeSymlink, link: "t"}}},
	{name: "hardlink whose path a later layer replaces",
		layers: [][]imagetest.Entry{
			{imagetest.File("a", "x"), imagetest.Hardlink("b", "a")},
			{imagetest.File("b", "own")}},
		want: map[string]pathFact{"a": regFact("x"), "b": regFact("own")}},
	{name: "root attributes from the last \".\" entry",
		layers: [][]imagetest.Entry{
			{imagetest.DirMode("./", 0o700), imagetest.File("f", "f")},
			{imagetest.DirMode(".", 0o750)},
			{imagetest.File("g", "g")}},
		want: map[string]pathFact{".": dirFact(0o750)}},
	{name: "modes of files and directories are kept",
		layers: [][]imagetest.Entry{
			{imagetest.DirMode("tmp", 0o1777), imagetest.FileMode("su", "s", 0o4755), imagetest.FileMode("wall", "w", 0o2755)}},
		want: map[string]pathFact{"tmp": dirFact(0o1777), "su": {typ: tarindex.TypeReg, content: "s", mode: 0o4755}}},
}

func TestUnionCases(t *testing.T) {
	for _, tc := range tableCases {
		t.Run(tc.name, func(t *testing.T) {
			img := imagetest.Layers(t, tc.layers...)
			tr, err := BuildUnion(img)
			require.NoError(t, err)
			checkInvariants(t, tr)
			facts := treeFacts(t, tr)
			for p, w := range tc.want {
				got, ok := facts[p]
				require.True(t, ok, "%s missing; have %v", p, treePaths(tr))
				require.Equal(t, w.typ, got.typ, "%s: type", p)
				if w.mode != 0 {
					require.Equal(t, w.mode, got.mode, "%s: mode %o", p, got.mode)
				}
				require.Equal(t, w.content, got.content, "%s: content", p)
				require.Equal(t, w.link, got.link, "%s: symlink target", p)
			}
			for _, p := range tc.absent {
				require.Nil(t, tr.Find(p), "%s should be absent", p)
			}
			// Deterministic: a second build numbers every path alike.
			again, err := BuildUnion(img)
			require.NoError(t, err)
			require.Equal(t, inodes(tr), inodes(again))
			if tc.noOracle == "" {
				checkAgainstUmoci(t, tc.layers, tr)
			}
		})
	}
}

func inodes(tr *Tree) map[string]uint64 {
	m := map[string]uint64{}
	Walk(tr.Root, func(n *Node) { m[n.Path()] = n.Ino })
	return m
}

func TestUnionHardlinkInodesAndNlink(t *testing.T) {
	tr, err := BuildUnion(imagetest.Layers(t,
		[]imagetest.Entry{imagetest.File("a", "x"), imagetest.Hardlink("b", "a"), imagetest.Hardlink("c", "b"), imagetest.File("other", "o")},
		[]imagetest.Entry{imagetest.Hardlink("d", "c")},
		[]imagetest.Entry{imagetest.File("a", "y")}))
	require.NoError(t, err)
	checkInvariants(t, tr)
	a, b, c, d := tr.Find("a"), tr.Find("b"), tr.Find("c"), tr.Find("d")
	require.Equal(t, b.Ino, c.Ino)
	require.Equal(t, b.Ino, d.Ino, "a link made in a later layer shares the inode too")
	require.NotEqual(t, a.Ino, b.Ino)
	require.EqualValues(t, 3, b.Nlink, "a's replacement dropped one link")
	require.EqualValues(t, 1, a.Nlink)
	require.Equal(t, 0, d.Layer, "the link shows its target's layer")
	require.Same(t, b.Entry, d.Entry)
	require.Equal(t, "a", b.Entry.Name, "the entry is the target's")
	require.Equal(t, tarindex.TypeReg, b.Entry.Type)
	require.Equal(t, "x", fileContent(t, tr, "d"))
	require.Equal(t, "y", fileContent(t, tr, "a"))
	require.Equal(t, uint64(1), tr.Root.Ino)
	data, ok := tr.Slice(d, 0, 10)
	require.True(t, ok)
	require.Equal(t, "x", string(data))
}

func TestUnionHardlinkErrors(t *testing.T) {
	cases := []struct {
		name   string
		layers [][]imagetest.Entry
		layer  int
		msg    []string
	}{
		{"missing target", [][]imagetest.Entry{{imagetest.File("x", "x")}, {imagetest.Hardlink("dir/b", "nothere")}}, 1,
			[]string{`"dir/b"`, `"nothere"`, "does not exist"}},
		{"target whited out earlier in the same layer", [][]imagetest.Entry{{imagetest.File("a", "x")}, {imagetest.Whiteout("a"), imagetest.Hardlink("b", "a")}}, 1,
			[]string{`"b"`, `"a"`, "does not exist"}},
		{"target only later in the layer", [][]imagetest.Entry{{imagetest.Hardlink("b", "a"), imagetest.File("a", "x")}}, 0,
			[]string{`"b"`, `"a"`}},
		{"target is a directory", [][]imagetest.Entry{{imagetest.Dir("d"), imagetest.Hardlink("b", "d")}}, 0,
			[]string{`"b"`, `"d"`, "directory"}},
		{"target is the root", [][]imagetest.Entry{{imagetest.Hardlink("b", ".")}}, 0,
			[]string{`"b"`, "directory"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			img := imagetest.Layers(t, tc.layers...)
			_, err := BuildUnion(img)
			require.Error(t, err)
			require.ErrorIs(t, err, archive.ErrCorruptLayer)
			require.Contains(t, err.Error(), "layer "+strconv.Itoa(tc.layer)+" ("+archive.ShortDigest(img.Layers[tc.layer].DiffID)+")")
			for _, m := range tc.msg {
				require.Contains(t, err.Error(), m)
			}
			if tc.name == "target whited out earlier in the same layer" {
				// The oracle agrees: extraction has nothing to link to.
				if _, err := exec.LookPath("umoci"); err == nil {
					_, ok := umociUnpack(t, tc.layers, false)
					require.False(t, ok, "umoci unpacked a layer we refuse")
				}
			}
		})
	}
}

func TestUnionRootAttributes(t *testing.T) {
	tr, err := BuildUnion(imagetest.Layers(t, []imagetest.Entry{imagetest.File("f", "f")}))
	require.NoError(t, err)
	require.Nil(t, tr.Root.Entry, "no \".\" entry: synthesized root")
	require.Equal(t, -1, tr.Root.Layer)
	require.Equal(t, ".", tr.Root.Path())

	root := imagetest.DirMode("./", 0o700)
	tr, err = BuildUnion(imagetest.Layers(t,
		[]imagetest.Entry{imagetest.Dir("d"), imagetest.File("d/a", "a"), root},
		[]imagetest.Entry{imagetest.DirMode("d", 0o711), imagetest.File("d/b", "b"), imagetest.Dir("e")},
		[]imagetest.Entry{imagetest.File(".", "a file named . is ignored")}))
	require.NoError(t, err)
	require.EqualValues(t, 0o700, tr.Root.Entry.Mode)
	require.Equal(t, 0, tr.Root.Layer)
	d := tr.Find("d")
	require.EqualValues(t, 0o711, d.Entry.Mode)
	require.Equal(t, 1, d.Layer)
	require.Len(t, d.Children(), 2, "children merged")
	require.EqualValues(t, 4, tr.Root.Nlink)
}

func TestUnionHiddenBytes(t *testing.T) {
	cases := []struct {
		name   string
		layers [][]imagetest.Entry
		want   []int64
	}{
		{"overwrite, whiteout, opaque",
			[][]imagetest.Entry{
				{imagetest.File("over", "12345"), imagetest.File("gone", "123"), imagetest.Dir("o"), imagetest.File("o/x", "1234567"), imagetest.File("keep", "kk")},
				{imagetest.File("over", "z"), imagetest.Whiteout("gone"), imagetest.Opaque("o")}},
			[]int64{5 + 3 + 7, 0}},
		{"duplicates within a layer",
			[][]imagetest.Entry{{imagetest.File("d", "1234"), imagetest.File("d", "12"), imagetest.File("e", "123"), imagetest.Dir("e")}},
			[]int64{4 + 3}},
		{"content reachable through a hardlink is visible",
			[][]imagetest.Entry{
				{imagetest.File("a", "1234"), imagetest.Hardlink("b", "a"), imagetest.File("c", "12"), imagetest.Hardlink("c2", "c")},
				{imagetest.File("a", "new"), imagetest.Whiteout("c"), imagetest.Whiteout("c2")}},
			[]int64{2, 0}},
		{"file over a directory hides the subtree",
			[][]imagetest.Entry{
				{imagetest.Dir("d"), imagetest.File("d/x", "123"), imagetest.File("d/y/z", "45")},
				{imagetest.File("d", "f")},
				{imagetest.Whiteout("d")}},
			[]int64{5, 1, 0}},
		{"unlinked AUFS stash content is hidden",
			[][]imagetest.Entry{{imagetest.File(".wh..wh.plnk/1.2", "123"), imagetest.File(".wh..wh.plnk/3.4", "4567"), imagetest.Hardlink("x", ".wh..wh.plnk/1.2")}},
			[]int64{4}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := BuildUnion(imagetest.Layers(t, tc.layers...))
			require.NoError(t, err)
			require.Equal(t, tc.want, tr.Hidden)
		})
	}
}

// TestUnionScale builds a union of 200k entries over 3 layers, then checks
// it by counting.
func TestUnionScale(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	img := syntheticImage(200_000, 3)
	tr, err := BuildUnion(img)
	require.NoError(t, err)
	files, dirs := 0, 0
	Walk(tr.Root, func(n *Node) {
		if n.IsDir() {
			dirs++
		} else {
			files++
		}
	})
	t.Logf("%d files, %d dirs, hidden %v", files, dirs, tr.Hidden)
	require.Positive(t, files)
}

// syntheticImage makes an image of about n entries over the given
// number of layers without writing tars (only the indexes matter to the
// build): a base with a deep tree of directories and files, then layers
// that overwrite every tenth file, add new files, hardlink, white out
// files and whole directories and mark some directories opaque.
func syntheticImage(n, layers int) *archive.Image {
	img := &archive.Image{}
	per := n / layers
	for l := 0; l < layers; l++ {
		var es []tarindex.Entry
		add := func(name string, typ tarindex.Type, size int64, link string) {
			es = append(es, tarindex.Entry{Name: name, Type: typ, Size: size, Mode: 0o644, Linkname: link})
		}
		for i := 0; len(es) < per; i++ {
			top := "usr/share/pkg" + strconv.Itoa(i/1000)
			sub := top + "/sub" + strconv.Itoa(i/50%20)
			if i%50 == 0 {
				if i%1000 == 0 {
					add(top, tarindex.TypeDir, 0, "")
				}
				add(sub, tarindex.TypeDir, 0, "")
			}
			file := sub + "/file-with-a-longish-name-" + strconv.Itoa(i) + ".txt"
			switch {
			case l == 0:
				add(file, tarindex.TypeReg, int64(100+i%4000), "")
				if i%97 == 0 {
					add(file+".lnk", tarindex.TypeHardlink, 0, file)
				}
			case i%10 == 0:
				add(file, tarindex.TypeReg, 10, "") // overwrite
			case i%10 == 1:
				add(sub+"/.wh.file-with-a-longish-name-"+strconv.Itoa(i)+".txt", tarindex.TypeReg, 0, "")
			case i%5000 == 2:
				add(top+"/.wh.sub"+strconv.Itoa(i/50%20), tarindex.TypeReg, 0, "")
			case i%7000 == 3:
				add(sub+"/.wh..wh..opq", tarindex.TypeReg, 0, "")
			default:
				add(sub+"/new-"+strconv.Itoa(l)+"-"+strconv.Itoa(i), tarindex.TypeReg, 5, "")
			}
		}
		d := digest.FromString("layer " + strconv.Itoa(l))
		img.Layers = append(img.Layers, &archive.Layer{Index: l, DiffID: d, TarIndex: &tarindex.Index{Entries: es}})
	}
	return img
}

func BenchmarkBuildUnion(b *testing.B) {
	for _, size := range []int{200_000, 1_000_000} {
		b.Run(strconv.Itoa(size/1000)+"k", func(b *testing.B) {
			img := syntheticImage(size, 3)
			entries := 0
			for _, l := range img.Layers {
				entries += len(l.TarIndex.Entries)
			}
			b.ReportAllocs()
			b.ResetTimer()
			var tr *Tree
			for b.Loop() {
				var err error
				if tr, err = BuildUnion(img); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(retainedHeap(func() any { t, _ := BuildUnion(img); return t }))/float64(entries), "retained-B/entry")
			_ = tr
		})
	}
}

// retainedHeap measures the heap that the value made by build keeps alive.
func retainedHeap(build func() any) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	v := build()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(v)
	if after.HeapAlloc < before.HeapAlloc {
		return 0
	}
	return after.HeapAlloc - before.HeapAlloc
}

// TestUnionHiddenSparse counts a sparse file's stored fragments, not its
// logical size.
func TestUnionHiddenSparse(t *testing.T) {
	sparse := tarindex.Entry{Name: "s", Type: tarindex.TypeReg, Mode: 0o644, Size: 1 << 20,
		Sparse: []tarindex.Fragment{{Logical: 0, Physical: 512, Length: 100}, {Logical: 1 << 19, Physical: 1024, Length: 28}}}
	img := &archive.Image{Layers: []*archive.Layer{
		{Index: 0, DiffID: digest.FromString("0"), TarIndex: &tarindex.Index{Entries: []tarindex.Entry{sparse}}},
		{Index: 1, DiffID: digest.FromString("1"), TarIndex: &tarindex.Index{Entries: []tarindex.Entry{{Name: "s", Type: tarindex.TypeReg, Size: 7}}}},
	}}
	tr, err := BuildUnion(img)
	require.NoError(t, err)
	require.Equal(t, []int64{128, 0}, tr.Hidden)
}

func TestUnionEmptyImage(t *testing.T) {
	tr, err := BuildUnion(&archive.Image{})
	require.NoError(t, err)
	require.True(t, tr.Root.IsDir())
	require.Empty(t, tr.Root.Children())
	require.Equal(t, uint64(1), tr.Root.Ino)
	require.EqualValues(t, 2, tr.Root.Nlink)
	require.Empty(t, tr.Hidden)
}

// Entries no Linux filesystem could show are left out with a warning, as
// GNU tar skips them; the rest of their directory stays readable.
func TestUnionOverlongNames(t *testing.T) {
	long := strings.Repeat("n", 256)
	tr, err := BuildUnion(imagetest.Layers(t, []imagetest.Entry{
		imagetest.Dir("d"),
		imagetest.File("d/ok", "fine"),
		imagetest.File("d/"+long, "too long a name"),
		imagetest.File(long+"/x", "under too long a name"),
		imagetest.Symlink("d/far", strings.Repeat("a/", 2048)),
		imagetest.Symlink("d/near", strings.Repeat("a", 255)),
		imagetest.Hardlink("d/link", "d/"+long),
	}))
	require.NoError(t, err)
	require.Equal(t, []string{"d", "d/near", "d/ok"}, treePaths(tr))
	require.Len(t, tr.Warnings, 4)
	require.Contains(t, tr.Warnings[2], `"d/far" left out: its symlink target is 4096 bytes`)
	for _, w := range tr.Warnings {
		require.True(t, strings.HasPrefix(w, "layer 0 (sha256:"), w)
	}

	lv, err := BuildLayersView(imagetest.Layers(t, []imagetest.Entry{imagetest.File("d/"+long, "x")}))
	require.NoError(t, err)
	require.Len(t, lv.Warnings, 1)
}

// A symlink with a long target, and thousands of entries in directories
// under it: the link is resolved once, not once per entry.
func TestUnionSymlinkFanOut(t *testing.T) {
	target := strings.Repeat("./", 2040) + "real"
	entries := []imagetest.Entry{imagetest.Dir("real"), imagetest.Symlink("l", target)}
	for i := range 20000 {
		entries = append(entries, imagetest.File(fmt.Sprintf("l/d%d/f", i), "x"))
	}
	tr, err := BuildUnion(imagetest.Layers(t, entries))
	require.NoError(t, err)
	require.Len(t, tr.Find("real").Children(), 20000)
	require.Equal(t, "x", fileContent(t, tr, "real/d19999/f"))

	// Removals between the entries defeat any cache: the work is bounded
	// and the layer refused.
	entries = entries[:2]
	for i := range 20000 {
		entries = append(entries, imagetest.File("junk", "x"), imagetest.File("junk", "y"),
			imagetest.File(fmt.Sprintf("l/d%d/f", i), "x"))
	}
	_, err = BuildUnion(imagetest.Layers(t, entries))
	require.ErrorIs(t, err, archive.ErrCorruptLayer)
	require.ErrorContains(t, err, "resolving symlinked parents took more than")
}

// The budget is the image's, not each layer's: a tiny tarball listing one
// layer that stays under any per-layer bound a hundred times is refused,
// not built for minutes.
func TestUnionSymlinkFanOutRepeatedLayer(t *testing.T) {
	target := strings.Repeat("./", 2040) + "real"
	entries := []imagetest.Entry{imagetest.Dir("real"), imagetest.Symlink("l", target)}
	for i := range 400 {
		entries = append(entries, imagetest.File("junk", "x"), imagetest.File("junk", "y"),
			imagetest.File(fmt.Sprintf("l/d%d/f", i), "x"))
	}
	one := imagetest.Layers(t, entries)
	_, err := BuildUnion(one)
	require.NoError(t, err, "one copy of the layer is within the budget")

	img := *one
	img.Layers = nil
	for range 100 {
		img.Layers = append(img.Layers, one.Layers[0])
	}
	_, err = BuildUnion(&img)
	require.ErrorIs(t, err, archive.ErrCorruptLayer)
	require.ErrorContains(t, err, "resolving symlinked parents took more than the image's budget")
}

// A symlink stored with mode 0000 (as some tar writers do) shows as 0777,
// as Linux shows every symlink.
func TestNodeStatSymlinkMode(t *testing.T) {
	tr, err := BuildUnion(imagetest.Layers(t, []imagetest.Entry{
		imagetest.Symlink("l", "target").With(func(h *tar.Header) { h.Mode = 0 }),
	}))
	require.NoError(t, err)
	st := NodeStat(tr.Find("l"))
	require.Equal(t, uint32(unix.S_IFLNK|0o777), st.Mode)
}

// A dangling symlink whose target would have to be made with a whiteout
// name is not followed (found by FuzzBuildUnion): no .wh. name ever shows.
func TestUnionDanglingLinkToWhiteoutName(t *testing.T) {
	tr, err := BuildUnion(imagetest.Layers(t, []imagetest.Entry{
		imagetest.Symlink("l", ".wh.l/x"),
		imagetest.File("l/f", "f"),
	}))
	require.NoError(t, err)
	checkInvariants(t, tr)
	require.Equal(t, []string{"l", "l/f"}, treePaths(tr))
	require.True(t, tr.Find("l").IsDir())
}

// A whiteout of a 253-byte name is 257 bytes long: it still deletes (found
// by the hostile-image tests; containerd writes such whiteouts).
func TestUnionWhiteoutOfLongName(t *testing.T) {
	long := strings.Repeat("w", 253)
	tr, err := BuildUnion(imagetest.Layers(t,
		[]imagetest.Entry{imagetest.Dir("d"), imagetest.File("d/"+long, "x"), imagetest.File("d/keep", "k")},
		[]imagetest.Entry{imagetest.Whiteout("d/" + long)},
	))
	require.NoError(t, err)
	require.Empty(t, tr.Warnings)
	require.Equal(t, []string{"d", "d/keep"}, treePaths(tr))
}
