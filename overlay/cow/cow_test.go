package cow

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/overlay/union"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// sampleView is a writable view over a two-layer image with a hardlink, a
// deep directory and a symlink.
func sampleView(t *testing.T) (*View, string) {
	t.Helper()
	return newView(t,
		[]imagetest.Entry{imagetest.Dir("etc"), imagetest.File("etc/a", "aaaa"), imagetest.File("etc/b", "bbbb"), imagetest.Hardlink("etc/a2", "etc/a"),
			imagetest.Dir("d"), imagetest.Dir("d/e"), imagetest.File("d/e/f", "deep"), imagetest.Symlink("ln", "etc/a")},
		[]imagetest.Entry{imagetest.File("etc/c", "cccc")},
	)
}

// newView is a writable view over the layers, with a new upper directory,
// closed when the test ends.
func newView(t *testing.T, layers ...[]imagetest.Entry) (*View, string) {
	t.Helper()
	tree, err := union.BuildUnion(imagetest.Layers(t, layers...))
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "upper")
	c, err := New(tree, dir)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c, dir
}

func readFile(t *testing.T, c *View, path string) string {
	t.Helper()
	f, err := c.Open(path, unix.O_RDONLY)
	require.NoError(t, err)
	defer f.Close()
	st, err := f.Stat()
	require.NoError(t, err)
	buf := make([]byte, st.Size)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		require.NoError(t, err)
	}
	return string(buf[:n])
}

func dirNames(t *testing.T, c *View, path string) []string {
	t.Helper()
	ents, err := c.ReadDir(path)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	return names
}

func upperNames(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel != "." {
			out = append(out, rel)
		}
		return nil
	}))
	sort.Strings(out)
	return out
}

func TestCOWWriteCopiesUpAndKeepsInode(t *testing.T) {
	c, dir := sampleView(t)
	before, err := c.Lookup("etc/b")
	require.NoError(t, err)
	f, err := c.Open("etc/b", unix.O_RDWR)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("XY"), 1)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, "bXYb", readFile(t, c, "etc/b"), "an in-place write keeps the bytes around it")
	after, err := c.Lookup("etc/b")
	require.NoError(t, err)
	require.Equal(t, before.Ino, after.Ino, "copy-up keeps the inode number")
	require.Equal(t, []string{"etc", "etc/b"}, upperNames(t, dir))
}

func TestCOWTruncatingOpenCopiesNoData(t *testing.T) {
	c, _ := sampleView(t)
	f, err := c.Open("etc/c", unix.O_WRONLY|unix.O_TRUNC)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, "", readFile(t, c, "etc/c"))
}

func TestCOWHardlinkStaysOneFile(t *testing.T) {
	c, dir := sampleView(t)
	f, err := c.Open("etc/a2", unix.O_WRONLY|unix.O_APPEND)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("!"), 4)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, "aaaa!", readFile(t, c, "etc/a"), "the other name of a lower hardlink sees the write")
	a, _ := c.Lookup("etc/a")
	a2, _ := c.Lookup("etc/a2")
	require.Equal(t, a.Ino, a2.Ino)
	require.EqualValues(t, 2, a.Nlink)
	var s1, s2 unix.Stat_t
	require.NoError(t, unix.Lstat(filepath.Join(dir, "etc/a"), &s1))
	require.NoError(t, unix.Lstat(filepath.Join(dir, "etc/a2"), &s2))
	require.Equal(t, s1.Ino, s2.Ino, "one file in the upper directory")
}

func TestCOWUnlinkAndRecreate(t *testing.T) {
	c, dir := sampleView(t)
	require.NoError(t, c.Unlink("etc/a"))
	_, err := c.Lookup("etc/a")
	require.ErrorIs(t, err, unix.ENOENT)
	require.Equal(t, []string{"a2", "b", "c"}, dirNames(t, c, "etc"))
	require.FileExists(t, filepath.Join(dir, "etc/.wh.a"))

	f, _, err := c.Create("etc/a", unix.O_RDWR, 0o600, Owner{})
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoFileExists(t, filepath.Join(dir, "etc/.wh.a"), "the whiteout goes once the name is used again")
	require.Equal(t, "", readFile(t, c, "etc/a"))
}

func TestCOWRmdirAndMkdirIsOpaque(t *testing.T) {
	c, dir := sampleView(t)
	require.ErrorIs(t, c.Rmdir("d"), unix.ENOTEMPTY)
	require.NoError(t, c.Unlink("d/e/f"))
	require.NoError(t, c.Rmdir("d/e"))
	require.NoError(t, c.Rmdir("d"))
	_, err := c.Lookup("d")
	require.ErrorIs(t, err, unix.ENOENT)
	_, err = c.Mkdir("d", 0o755, Owner{})
	require.NoError(t, err)
	require.Empty(t, dirNames(t, c, "d"), "the old contents do not come back")
	require.FileExists(t, filepath.Join(dir, "d", union.OpaqueMarker))
}

func TestCOWRenameLowerDir(t *testing.T) {
	c, dir := sampleView(t)
	ino, err := c.Lookup("d")
	require.NoError(t, err)
	require.NoError(t, c.Rename("d", "moved", 0))
	_, err = c.Lookup("d")
	require.ErrorIs(t, err, unix.ENOENT)
	require.Equal(t, "deep", readFile(t, c, "moved/e/f"))
	got, err := c.Lookup("moved")
	require.NoError(t, err)
	require.Equal(t, ino.Ino, got.Ino, "a moved directory keeps its inode number")
	require.FileExists(t, filepath.Join(dir, ".wh.d"))
	require.FileExists(t, filepath.Join(dir, "moved", union.OpaqueMarker))
	require.FileExists(t, filepath.Join(dir, "moved/e/f"), "moved whole: a layer cannot point elsewhere")
}

func TestCOWRenameErrors(t *testing.T) {
	c, _ := sampleView(t)
	require.ErrorIs(t, c.Rename("etc", "etc/c", 0), unix.ENOTDIR)
	require.ErrorIs(t, c.Rename("etc/c", "d", 0), unix.EISDIR)
	require.ErrorIs(t, c.Rename("etc/c", "etc/b", unix.RENAME_NOREPLACE), unix.EEXIST)
	require.ErrorIs(t, c.Rename("d/e", "etc", 0), unix.ENOTEMPTY)
	require.NoError(t, c.Rename("etc/c", "etc/b", unix.RENAME_EXCHANGE))
	require.Equal(t, "cccc", readFile(t, c, "etc/b"))
	require.Equal(t, "bbbb", readFile(t, c, "etc/c"))
}

func TestCOWReservedNames(t *testing.T) {
	c, _ := sampleView(t)
	_, _, err := c.Create("etc/.wh.x", unix.O_RDWR, 0o644, Owner{})
	require.ErrorIs(t, err, ErrReservedName)
	_, err = c.Mkdir(union.OpaqueMarker, 0o755, Owner{})
	require.ErrorIs(t, err, ErrReservedName)
	require.NoError(t, c.Unlink("etc/b"))
	_, err = c.Lookup("etc/.wh.b")
	require.ErrorIs(t, err, unix.ENOENT, "whiteouts are never visible")
}

func TestCOWXattrsAndPrivateNames(t *testing.T) {
	c, _ := sampleView(t)
	require.NoError(t, c.Setxattr("etc/c", nil, "user.k", []byte("v"), 0))
	v, err := c.Getxattr("etc/c", nil, "user.k")
	require.NoError(t, err)
	require.Equal(t, "v", string(v))
	names, err := c.Listxattr("etc/c", nil)
	require.NoError(t, err)
	require.Equal(t, []string{"user.k"}, names, "bookkeeping xattrs are not listed")
	require.ErrorIs(t, c.Setxattr("etc/c", nil, StatXattr, []byte("0:0:0777"), 0), unix.EPERM)
	_, err = c.Getxattr("etc/c", nil, originXattr)
	require.ErrorIs(t, err, unix.ENODATA)
}

func TestCOWReopenSeesEdits(t *testing.T) {
	c, dir := sampleView(t)
	require.NoError(t, c.Unlink("etc/b"))
	require.NoError(t, c.Rename("etc/c", "cc", 0))
	tree := c.Tree()
	require.NoError(t, c.Close())
	c2, err := New(tree, dir)
	require.NoError(t, err)
	defer c2.Close()
	require.Equal(t, []string{"a", "a2"}, dirNames(t, c2, "etc"))
	require.Equal(t, "cccc", readFile(t, c2, "cc"))
}

func TestCOWConcurrent(t *testing.T) {
	c, _ := sampleView(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := filepath.Join("d/e", "new"+string(rune('0'+i)))
			f, _, err := c.Create(name, unix.O_RDWR, 0o644, Owner{})
			if err == nil {
				f.WriteAt([]byte(name), 0)
				f.Close()
			}
			c.ReadDir("d/e")
			c.Lookup("etc/a")
		}()
	}
	wg.Wait()
	require.Len(t, dirNames(t, c, "d/e"), 9)
}

func TestCOWUpperLocked(t *testing.T) {
	c, dir := sampleView(t)
	_, err := New(c.Tree(), dir)
	require.ErrorContains(t, err, "in use by another imgmount mount")
	require.NoError(t, c.Close())
	c2, err := New(c.Tree(), dir)
	require.NoError(t, err, "free again once closed")
	require.NoError(t, c2.Close())
}

func TestCOWOverOtherLayers(t *testing.T) {
	c, dir := sampleView(t)
	require.NoError(t, c.Setxattr("etc/b", nil, "user.k", []byte("v"), 0))
	_, err := getxattrPath(filepath.Join(dir, "etc/b"), originXattr)
	require.NoError(t, err, "copy-up records the origin")
	require.False(t, c.Rebased)
	c2 := reopenOver(t, c, dir, imagetest.Dir("etc"), imagetest.File("etc/z", "other image"))
	require.True(t, c2.Rebased, "the upper directory was made over other layers")
	_, err = getxattrPath(filepath.Join(dir, "etc/b"), originXattr)
	require.ErrorIs(t, err, unix.ENODATA, "inode numbers of the other tree are forgotten")
	require.Equal(t, []string{"b", "z"}, dirNames(t, c2, "etc"), "the edits apply over the new layers")
}

// reopenOver closes c and opens its upper directory dir over an image of
// one layer of entries; the new view is closed when the test ends.
func reopenOver(t *testing.T, c *View, dir string, entries ...imagetest.Entry) *View {
	t.Helper()
	require.NoError(t, c.Close())
	other, err := union.BuildUnion(imagetest.Layers(t, entries))
	require.NoError(t, err)
	c2, err := New(other, dir)
	require.NoError(t, err)
	t.Cleanup(func() { c2.Close() })
	return c2
}

// Changing the root's own mode, times or xattrs is a change the layer
// carries (as "./"); creating a file in the root is not.
func TestCOWRootAttributesInLayer(t *testing.T) {
	c, dir := sampleView(t)
	f, _, err := c.Create("new", unix.O_RDWR, 0o644, Owner{})
	require.NoError(t, err)
	require.NoError(t, f.Close())
	b, _ := upperLayerTar(t, dir)
	require.Equal(t, []string{"new"}, imagetest.Names(imagetest.ReadTar(t, b)), "no root entry for a root only written into")

	mode := uint32(0o750)
	_, err = c.Setattr("", nil, SetAttr{Mode: &mode})
	require.NoError(t, err)
	require.NoError(t, c.Setxattr("", nil, "user.note", []byte("root"), 0))
	b, _ = upperLayerTar(t, dir)
	es := imagetest.ReadTar(t, b)
	require.Equal(t, []string{"./", "new"}, imagetest.Names(es))
	root := es[0].Hdr
	require.Equal(t, byte(tar.TypeDir), root.Typeflag)
	require.Equal(t, int64(0o750), root.Mode)
	require.Equal(t, "root", root.PAXRecords["SCHILY.xattr.user.note"])
	for k := range root.PAXRecords {
		require.NotContains(t, k, privatePrefix, "bookkeeping stays out of the layer")
	}
}

// A directory of the image moved after entries inside it were deleted is
// copied up whole and opaque: the whiteouts of those entries go, in the
// upper directory and so in the layer.
func TestCOWRenameLowerDirDropsWhiteouts(t *testing.T) {
	c, dir := sampleView(t)
	require.NoError(t, c.Unlink("d/e/f"))
	require.NoError(t, c.Unlink("etc/b"))
	require.FileExists(t, filepath.Join(dir, "d/e/.wh.f"))
	require.NoError(t, c.Rename("d", "moved", 0))
	require.NoError(t, c.Rename("etc", "etc2", 0))
	require.Empty(t, dirNames(t, c, "moved/e"))
	require.Equal(t, []string{"a", "a2", "c"}, dirNames(t, c, "etc2"))
	require.Equal(t, []string{
		".wh.d", ".wh.etc",
		"etc2", "etc2/.wh..wh..opq", "etc2/a", "etc2/a2", "etc2/c",
		"moved", "moved/.wh..wh..opq", "moved/e", "moved/e/.wh..wh..opq",
	}, upperNames(t, dir))
	b, _ := upperLayerTar(t, dir)
	for _, n := range imagetest.Names(imagetest.ReadTar(t, b)) {
		require.NotRegexp(t, `/\.wh\.[^.]`, n, "a whiteout in an opaque directory")
	}
}
