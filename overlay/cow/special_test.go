package cow

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// specialFixture is a writable view over an image with the entries Linux
// allows no user.* xattr on: devices, fifos (one of them hardlinked) and
// symlinks, in /dev and in a directory of their own.
func specialFixture(t *testing.T) (*View, string) {
	t.Helper()
	dev := func(name string, typ byte, major, minor int64) imagetest.Entry {
		return imagetest.Entry{Hdr: tar.Header{Name: name, Typeflag: typ, Mode: 0o666, Devmajor: major, Devminor: minor, ModTime: imagetest.MTime}}
	}
	return newView(t, []imagetest.Entry{
		imagetest.Dir("dev"),
		dev("dev/null", tar.TypeChar, 1, 3),
		dev("dev/zero", tar.TypeChar, 1, 5),
		dev("dev/sda", tar.TypeBlock, 8, 0),
		imagetest.Fifo("dev/fifo"),
		imagetest.Hardlink("dev/fifo-alias", "dev/fifo"),
		imagetest.Symlink("dev/stdin", "/proc/self/fd/0"),
		imagetest.Dir("run"),
		imagetest.Dir("run/pipes"),
		imagetest.Fifo("run/pipes/p"),
		imagetest.File("run/pipes/f", "file"),
	})
}

// noTemps fails if a copy-up left a temporary name in the upper directory.
func noTemps(t *testing.T, dir string) {
	t.Helper()
	for _, n := range upperNames(t, dir) {
		require.NotContains(t, n, tempPrefix, "a copy-up left a temporary name")
	}
}

// The first attribute change of an image fifo, device or symlink copies it
// up with its origin kept by its directory (Linux refuses user.* xattrs on
// them): it keeps its inode number, type and times.
func TestCOWSpecialCopyUp(t *testing.T) {
	c, dir := specialFixture(t)
	mode := uint32(0o640)
	uid := uint32(42)
	for _, p := range []string{"dev/null", "dev/zero", "dev/sda", "dev/fifo", "dev/stdin"} {
		before, err := c.Lookup(p)
		require.NoError(t, err, p)
		a := SetAttr{Mode: &mode}
		if before.Mode&unix.S_IFMT == unix.S_IFLNK {
			a = SetAttr{UID: &uid}
		}
		after, err := c.Setattr(p, nil, a)
		require.NoError(t, err, "%s: the first change works", p)
		require.Equal(t, before.Ino, after.Ino, "%s keeps its inode number", p)
		require.Equal(t, before.Mode&unix.S_IFMT, after.Mode&unix.S_IFMT, p)
		require.Equal(t, before.Rdev, after.Rdev, p)
		require.Equal(t, before.Mtim, after.Mtim, "%s keeps its mtime", p)
		again, err := c.Lookup(p)
		require.NoError(t, err)
		require.Equal(t, after, again, p)
		require.FileExists(t, filepath.Join(dir, p))
	}
	noTemps(t, dir)

	// The names of a hardlinked fifo stay one file, with one inode number.
	a, err := c.Lookup("dev/fifo-alias")
	require.NoError(t, err)
	f, err := c.Lookup("dev/fifo")
	require.NoError(t, err)
	require.Equal(t, f.Ino, a.Ino)
	require.EqualValues(t, 0o640, a.Mode&0o7777)

	// The directory listing agrees, and so does a new view of the upper
	// directory.
	ents, err := c.ReadDir("dev")
	require.NoError(t, err)
	tree := c.Tree()
	want := map[string]uint64{}
	for _, e := range ents {
		st, err := c.Lookup("dev/" + e.Name)
		require.NoError(t, err)
		require.Equal(t, st.Ino, e.Ino, e.Name)
		want[e.Name] = e.Ino
	}
	require.NoError(t, c.Close())
	c2, err := New(tree, dir)
	require.NoError(t, err)
	defer c2.Close()
	for name, ino := range want {
		st, err := c2.Lookup("dev/" + name)
		require.NoError(t, err)
		require.Equal(t, ino, st.Ino, "dev/%s after a remount", name)
	}

	// The layer carries the entries, and no bookkeeping.
	b, _ := upperLayerTar(t, dir)
	es := imagetest.ReadTar(t, b)
	require.Equal(t, byte(tar.TypeFifo), imagetest.Find(t, es, "dev/fifo").Hdr.Typeflag)
	require.Equal(t, byte(tar.TypeChar), imagetest.Find(t, es, "dev/null").Hdr.Typeflag)
	for _, e := range es {
		for k := range e.Hdr.PAXRecords {
			require.NotContains(t, k, "imgmount", "%s: bookkeeping in the layer", e.Hdr.Name)
		}
	}
}

// Moving a directory from the image copies up what it holds, fifos and
// devices included, at the first attempt; their inode numbers follow them,
// and a new entry at a name does not inherit the origin of an old one.
func TestCOWRenameDirWithSpecials(t *testing.T) {
	c, dir := specialFixture(t)
	inos := map[string]uint64{}
	for _, p := range []string{"dev", "dev/null", "dev/fifo", "dev/stdin", "run/pipes", "run/pipes/p"} {
		st, err := c.Lookup(p)
		require.NoError(t, err)
		inos[p] = st.Ino
	}
	require.NoError(t, c.Rename("run/pipes", "run/other", 0), "mv of a directory holding a fifo")
	require.NoError(t, c.Rename("dev", "dev2", 0), "mv /dev /dev2")
	noTemps(t, dir)
	for old, ino := range inos {
		p := strings.Replace(strings.Replace(old, "dev", "dev2", 1), "run/pipes", "run/other", 1)
		st, err := c.Lookup(p)
		require.NoError(t, err)
		require.Equal(t, ino, st.Ino, "%s moved to %s keeps its inode number", old, p)
	}

	// A fifo moved on its own takes its origin along.
	require.NoError(t, c.Rename("dev2/fifo", "run/fifo", 0))
	st, err := c.Lookup("run/fifo")
	require.NoError(t, err)
	require.Equal(t, inos["dev/fifo"], st.Ino)

	// Deleted and made again, it is a new file.
	require.NoError(t, c.Unlink("run/fifo"))
	st, err = c.Mknod("run/fifo", unix.S_IFIFO|0o600, 0, Owner{})
	require.NoError(t, err)
	require.NotEqual(t, inos["dev/fifo"], st.Ino, "a new fifo does not inherit the origin of the one deleted")
	require.NotEqual(t, uint64(0), st.Ino&upperInoBit)

	// RENAME_EXCHANGE swaps the origins with the entries.
	require.NoError(t, c.Rename("dev2/null", "dev2/stdin", unix.RENAME_EXCHANGE))
	st, err = c.Lookup("dev2/stdin")
	require.NoError(t, err)
	require.Equal(t, inos["dev/null"], st.Ino)
	require.Equal(t, uint32(unix.S_IFCHR), st.Mode&unix.S_IFMT)
	st, err = c.Lookup("dev2/null")
	require.NoError(t, err)
	require.Equal(t, inos["dev/stdin"], st.Ino)
}

// failingMeta fails to give an entry its owner and mode.
type failingMeta struct{ metaStore }

func (failingMeta) setOwnerMode(t target, m meta) error { return unix.EIO }

// A copy-up that fails leaves nothing in the upper directory: neither part
// of a copy under the name, nor a temporary one.
func TestCOWCopyUpAllOrNothing(t *testing.T) {
	c, dir := specialFixture(t)
	good := c.metaStore
	c.metaStore = failingMeta{good}
	mode := uint32(0o600)
	for _, p := range []string{"dev/fifo", "dev/null", "dev/stdin", "run/pipes", "run/pipes/f"} {
		_, err := c.Setattr(p, nil, SetAttr{Mode: &mode})
		require.ErrorIs(t, err, unix.EIO, p)
	}
	require.Error(t, c.Rename("run/pipes", "run/other", 0))
	for _, n := range upperNames(t, dir) {
		require.Contains(t, []string{"dev", "run"}, n, "only the parents are copied up")
	}
	c.metaStore = good
	for _, p := range []string{"dev/fifo", "dev/null", "dev/stdin", "run/pipes", "run/pipes/f"} {
		_, err := c.Setattr(p, nil, SetAttr{Mode: &mode})
		require.NoError(t, err, p)
	}
	noTemps(t, dir)
}

// Without privilege, a fifo is kept as an empty regular file whose
// StatXattr says fifo, as a device is: a real fifo can carry neither that
// xattr nor the origin.
func TestCOWRootlessFifo(t *testing.T) {
	c, dir := specialFixture(t)
	c.metaStore = rootlessMeta{}
	before, err := c.Lookup("dev/fifo")
	require.NoError(t, err)
	mode := uint32(0o604)
	st, err := c.Setattr("dev/fifo", nil, SetAttr{Mode: &mode})
	require.NoError(t, err)
	require.Equal(t, uint32(unix.S_IFIFO|0o604), st.Mode)
	require.Equal(t, before.Ino, st.Ino)
	st, err = c.Mknod("run/newfifo", unix.S_IFIFO|0o640, 0, Owner{UID: 7, GID: 8})
	require.NoError(t, err)
	require.Equal(t, uint32(unix.S_IFIFO|0o640), st.Mode)
	require.Equal(t, uint32(7), st.Uid)
	fi, err := os.Lstat(filepath.Join(dir, "run/newfifo"))
	require.NoError(t, err)
	require.True(t, fi.Mode().IsRegular())

	b, _ := upperLayerTar(t, dir)
	es := imagetest.ReadTar(t, b)
	require.Equal(t, byte(tar.TypeFifo), imagetest.Find(t, es, "run/newfifo").Hdr.Typeflag)
	require.Equal(t, byte(tar.TypeFifo), imagetest.Find(t, es, "dev/fifo").Hdr.Typeflag)

	// A socket (which no layer carries) can be made too.
	_, err = c.Mknod("run/sock", unix.S_IFSOCK|0o600, 0, Owner{})
	require.NoError(t, err)

	// Kept and removed, it is still a fifo, whose attributes change.
	f, err := c.Keep("run/newfifo")
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, c.Unlink("run/newfifo"))
	st, err = c.Setattr("gone", f, SetAttr{Mode: &mode})
	require.NoError(t, err)
	require.Equal(t, uint32(unix.S_IFIFO|0o604), st.Mode)
	require.Equal(t, uint32(7), st.Uid)
}

// An upper directory holding fifos and devices can be mounted over other
// layers: forgetting the old inode numbers skips what carries none.
func TestCOWRebaseWithSpecials(t *testing.T) {
	c, dir := specialFixture(t)
	mode := uint32(0o600)
	for _, p := range []string{"dev/fifo", "dev/null", "dev/stdin"} {
		_, err := c.Setattr(p, nil, SetAttr{Mode: &mode})
		require.NoError(t, err)
	}
	c2 := reopenOver(t, c, dir, imagetest.Dir("dev"), imagetest.File("dev/other", "x"))
	require.True(t, c2.Rebased)
	names, err := listxattrPath(filepath.Join(dir, "dev"))
	require.NoError(t, err)
	for _, n := range names {
		require.False(t, isChildOriginKey(n), "%s: the old tree's inode numbers are forgotten", n)
	}
	st, err := c2.Lookup("dev/fifo")
	require.NoError(t, err)
	require.NotEqual(t, uint64(0), st.Ino&upperInoBit)
}

func TestChildOriginKeyLongNames(t *testing.T) {
	long := strings.Repeat("x", 255)
	k := childOriginKey(long)
	require.LessOrEqual(t, len(k), xattrNameMax)
	require.True(t, isChildOriginKey(k))
	require.NotEqual(t, k, childOriginKey(long[1:]+"y"))
	require.Equal(t, childOriginPrefix+"null", childOriginKey("null"))
	require.True(t, IsPrivateXattr(k), "never written in a layer")
}

// openUnlinked opens path with flags and removes it from the view.
func openUnlinked(t *testing.T, c *View, path string, flags int) File {
	t.Helper()
	f, err := c.Open(path, flags)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	require.NoError(t, c.Unlink(path))
	return f
}

// Attribute and xattr changes through an open file work once its name is
// gone: on the upper file, and on a private copy of a lower file opened
// for reading, which every open of that file then shows.
func TestCOWChangesThroughOpenFile(t *testing.T) {
	c, dir := sampleView(t)
	mode := uint32(0o604)
	uid := uint32(77)
	newF, _, err := c.Create("etc/new", unix.O_RDWR, 0o644, Owner{})
	require.NoError(t, err)
	defer newF.Close()
	require.NoError(t, c.Unlink("etc/new"))
	files := map[string]File{
		"new":       newF,
		"copied-up": openUnlinked(t, c, "etc/b", unix.O_RDWR),
		"lower":     openUnlinked(t, c, "etc/c", unix.O_RDONLY),
	}
	other, err := c.Open("d/e/f", unix.O_RDONLY)
	require.NoError(t, err)
	defer other.Close()
	deep := openUnlinked(t, c, "d/e/f", unix.O_RDONLY)
	files["lower, opened twice"] = deep
	for what, f := range files {
		before, err := f.Stat()
		require.NoError(t, err)
		st, err := c.Setattr("gone", f, SetAttr{Mode: &mode, UID: &uid})
		require.NoError(t, err, what)
		require.EqualValues(t, unix.S_IFREG|0o604, st.Mode, what)
		require.Equal(t, uid, st.Uid, what)
		require.Equal(t, before.Ino, st.Ino, "%s keeps its inode number", what)
		require.NoError(t, c.Setxattr("gone", f, "user.k", []byte(what), 0), what)
		v, err := c.Getxattr("gone", f, "user.k")
		require.NoError(t, err, what)
		require.Equal(t, what, string(v))
		names, err := c.Listxattr("gone", f)
		require.NoError(t, err)
		require.Equal(t, []string{"user.k"}, names, what)
		require.NoError(t, c.Removexattr("gone", f, "user.k"), what)
		st2, err := f.Stat()
		require.NoError(t, err)
		require.Equal(t, st.Mode, st2.Mode, what)
		require.Equal(t, before.Size, st2.Size, what)
	}
	st, err := other.Stat()
	require.NoError(t, err)
	require.EqualValues(t, 0o604, st.Mode&0o7777, "the other open of the lower file shows the change")
	buf := make([]byte, 4)
	n, _ := other.ReadAt(buf, 0)
	require.Equal(t, "deep", string(buf[:n]))
	n, _ = files["lower"].ReadAt(buf, 0)
	require.Equal(t, "cccc", string(buf[:n]), "the private copy has the content")
	require.Equal(t, []string{"d", "d/e", "d/e/.wh.f", "etc", "etc/.wh.b", "etc/.wh.c"}, upperNames(t, dir), "private copies are never linked in")
}

// A lower file opened for reading shows its copy-up once it is made: its
// new attributes, and what is written to it.
func TestCOWOpenLowerSeesCopyUp(t *testing.T) {
	c, _ := sampleView(t)
	ro, err := c.Open("etc/a2", unix.O_RDONLY)
	require.NoError(t, err)
	defer ro.Close()
	mode := uint32(0o600)
	_, err = c.Setattr("etc/a", nil, SetAttr{Mode: &mode})
	require.NoError(t, err)
	st, err := ro.Stat()
	require.NoError(t, err)
	require.EqualValues(t, 0o600, st.Mode&0o7777, "a name hardlinked to the file copied up")
	w, err := c.Open("etc/a", unix.O_WRONLY)
	require.NoError(t, err)
	_, err = w.WriteAt([]byte("AB"), 0)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	buf := make([]byte, 8)
	n, _ := ro.ReadAt(buf, 0)
	require.Equal(t, "ABaa", string(buf[:n]))
}

// A fifo or device kept before it is removed (the kernel may have it open)
// still shows and changes its attributes: its upper entry, or a private
// copy of a lower one, of which the upper directory keeps nothing.
func TestCOWKeepRemovedSpecial(t *testing.T) {
	c, dir := specialFixture(t)
	mode := uint32(0o640)
	_, err := c.Setattr("dev/zero", nil, SetAttr{Mode: &mode}) // copied up
	require.NoError(t, err)
	_, err = c.Mknod("run/new", unix.S_IFIFO|0o600, 0, Owner{})
	require.NoError(t, err)
	f, err := c.Keep("dev/stdin")
	require.NoError(t, err)
	require.Nil(t, f, "symlinks are not kept")
	f, err = c.Keep("run/pipes/f")
	require.NoError(t, err)
	require.Nil(t, f, "regular files are not kept: the mount opens them")
	before := upperNames(t, dir)
	for _, p := range []string{"dev/zero", "run/new", "dev/null", "dev/fifo"} {
		st, err := c.Lookup(p)
		require.NoError(t, err)
		f, err := c.Keep(p)
		require.NoError(t, err, p)
		require.NotNil(t, f, p)
		defer f.Close()
		require.NoError(t, c.Unlink(p))
		kst, err := f.Stat()
		require.NoError(t, err)
		require.Equal(t, st.Ino, kst.Ino, p)
		require.Equal(t, st.Mode, kst.Mode, p)
		require.Equal(t, st.Rdev, kst.Rdev, p)
		uid, mode := uint32(1000), uint32(0o604)
		ts := unix.Timespec{Sec: 7}
		kst, err = c.Setattr("gone", f, SetAttr{Mode: &mode, UID: &uid, Mtime: &ts})
		require.NoError(t, err, p)
		require.Equal(t, st.Mode&unix.S_IFMT|0o604, kst.Mode, p)
		require.Equal(t, uid, kst.Uid, p)
		require.Equal(t, int64(7), kst.Mtim.Sec, p)
		require.Equal(t, st.Ino, kst.Ino, p)
	}
	after := upperNames(t, dir)
	for _, n := range after {
		if !strings.Contains(n, ".wh.") {
			require.Contains(t, before, n, "the upper directory gained %s", n)
		}
	}
	noTemps(t, dir)
}

// A symlink or fifo whose tar entry carries a user.* xattr (which Linux
// holds only on files and directories) changes and moves like any other:
// its copy leaves that xattr out, as GNU tar's extraction does; other
// xattrs and a regular file's user.* ones are copied.
func TestCOWSpecialWithUserXattr(t *testing.T) {
	withXattr := func(e imagetest.Entry) imagetest.Entry {
		return e.With(func(h *tar.Header) {
			h.PAXRecords = map[string]string{"SCHILY.xattr.user.note": "hi", "SCHILY.xattr.trusted.t": "kept"}
			h.Format = tar.FormatPAX
		})
	}
	c, dir := newView(t, []imagetest.Entry{
		imagetest.Dir("run"),
		withXattr(imagetest.Fifo("run/p")),
		withXattr(imagetest.Symlink("run/l", "p")),
		withXattr(imagetest.File("run/f", "file")),
	})
	mode := uint32(0o640)
	_, err := c.Setattr("run/p", nil, SetAttr{Mode: &mode})
	require.NoError(t, err, "chmod of the fifo")
	uid := uint32(5)
	_, err = c.Setattr("run/l", nil, SetAttr{UID: &uid})
	require.NoError(t, err, "chown of the symlink")
	require.NoError(t, c.Rename("run", "run2", 0), "mv of their directory")
	_, err = c.Setattr("run2/f", nil, SetAttr{Mode: &mode})
	require.NoError(t, err)

	var buf [16]byte
	n, err := unix.Lgetxattr(filepath.Join(dir, "run2/f"), "user.note", buf[:])
	require.NoError(t, err, "a regular file keeps its user.* xattr")
	require.Equal(t, "hi", string(buf[:n]))
	n, err = unix.Lgetxattr(filepath.Join(dir, "run2/l"), "trusted.t", buf[:])
	require.NoError(t, err, "other namespaces are copied")
	require.Equal(t, "kept", string(buf[:n]))
	noTemps(t, dir)
}
