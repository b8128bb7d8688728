package fusefs

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imgmount/imgmount/overlay/cow"
	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/overlay/union"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// rwImage is a small image for the writable mount's tests: /dev with
// devices, a fifo and a symlink, a directory holding a fifo, and files.
func rwImage(t *testing.T) [][]imagetest.Entry {
	dev := func(name string, typ byte, major, minor int64) imagetest.Entry {
		return imagetest.Entry{Hdr: tar.Header{Name: name, Typeflag: typ, Mode: 0o666, Devmajor: major, Devminor: minor, ModTime: imagetest.MTime}}
	}
	return [][]imagetest.Entry{{
		imagetest.Dir("dev"),
		dev("dev/null", tar.TypeChar, 1, 3),
		dev("dev/zero", tar.TypeChar, 1, 5),
		imagetest.Fifo("dev/fifo"),
		imagetest.Symlink("dev/stdin", "/proc/self/fd/0"),
		imagetest.Dir("run"),
		imagetest.Dir("run/pipes"),
		imagetest.Fifo("run/pipes/p"),
		imagetest.Dir("etc"),
		imagetest.File("etc/hosts", "127.0.0.1 localhost\n"),
		imagetest.File("etc/motd", "hello\n"),
	}}
}

// mountRW mounts the layers writable over a new upper directory, and
// returns the mountpoint and the upper directory.
func mountRW(t *testing.T, layers [][]imagetest.Entry) (string, string) {
	t.Helper()
	requireFUSE(t)
	tree, err := union.BuildUnion(imagetest.Layers(t, layers...))
	require.NoError(t, err)
	upper := filepath.Join(t.TempDir(), "upper")
	view, err := cow.New(tree, upper)
	require.NoError(t, err)
	t.Cleanup(func() { view.Close() })
	mnt, _ := mountTree(t, tree, Options{Writable: view})
	return mnt, upper
}

// noTempNames fails if the upper directory holds a copy-up's temporary
// name.
func noTempNames(t *testing.T, upper string) {
	t.Helper()
	require.NoError(t, filepath.Walk(upper, func(p string, fi os.FileInfo, err error) error {
		require.NoError(t, err)
		require.NotContains(t, fi.Name(), ".wh..wh.imgmount", "left in the upper directory: %s", p)
		return nil
	}))
}

// chmod, chown and touch of the image's devices, fifos and symlinks work
// the first time, as do mv /dev and mv of a directory holding a fifo.
func TestWritableSpecialFiles(t *testing.T) {
	mnt, upper := mountRW(t, rwImage(t))
	p := func(s string) string { return filepath.Join(mnt, s) }
	ino := func(s string) uint64 { return lstat(t, p(s)).Ino }

	before := lstat(t, p("dev/null"))
	require.NoError(t, os.Chmod(p("dev/null"), 0o600), "chmod of /dev/null")
	after := lstat(t, p("dev/null"))
	require.EqualValues(t, unix.S_IFCHR|0o600, after.Mode)
	require.Equal(t, before.Ino, after.Ino)
	require.Equal(t, before.Rdev, after.Rdev)
	require.Equal(t, before.Mtim, after.Mtim, "copy-up keeps the mtime")

	require.NoError(t, os.Lchown(p("dev/zero"), 12, 34), "chown of /dev/zero")
	st := lstat(t, p("dev/zero"))
	require.Equal(t, uint32(12), st.Uid)
	require.Equal(t, uint32(34), st.Gid)

	t0 := time.Unix(1650000000, 0)
	require.NoError(t, os.Chtimes(p("dev/fifo"), t0, t0), "touch of a fifo")
	require.Equal(t, t0.Unix(), lstat(t, p("dev/fifo")).Mtim.Sec)
	require.NoError(t, os.Lchown(p("dev/stdin"), 5, 5), "chown -h of a symlink")

	pipeIno := ino("run/pipes/p")
	require.NoError(t, os.Rename(p("run/pipes"), p("run/moved")), "mv of a directory holding a fifo")
	require.Equal(t, pipeIno, ino("run/moved/p"))
	fifoIno := ino("dev/fifo")
	require.NoError(t, os.Rename(p("dev"), p("dev2")), "mv /dev /dev2")
	require.Equal(t, fifoIno, ino("dev2/fifo"))
	require.EqualValues(t, unix.S_IFIFO, lstat(t, p("dev2/fifo")).Mode&unix.S_IFMT)
	require.EqualValues(t, 0o600, lstat(t, p("dev2/null")).Mode&0o7777)
	noTempNames(t, upper)

	// The fifo's origin is kept by its directory.
	buf := make([]byte, 64)
	_, err := unix.Lgetxattr(filepath.Join(upper, "dev2"), "user.imgmount.origin/fifo", buf)
	require.NoError(t, err)
}

// fchmod, fchown, futimens and fsetxattr work on an open file whose name is
// gone: a new file, a file copied up, an image file opened for reading
// (which gets a private copy), and a file another was renamed over.
func TestWritableChangesThroughUnlinkedFile(t *testing.T) {
	mnt, _ := mountRW(t, rwImage(t))
	p := func(s string) string { return filepath.Join(mnt, s) }
	require.NoError(t, os.WriteFile(p("etc/new"), []byte("new\n"), 0o644))
	require.NoError(t, os.WriteFile(p("etc/other"), []byte("other\n"), 0o644))
	open := func(name string, flag int) *os.File {
		f, err := os.OpenFile(p(name), flag, 0)
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		return f
	}
	files := map[string]*os.File{
		"new":        open("etc/new", os.O_RDWR),
		"copied up":  open("etc/hosts", os.O_RDWR),
		"image file": open("etc/motd", os.O_RDONLY),
	}
	for _, n := range []string{"etc/new", "etc/hosts", "etc/motd"} {
		require.NoError(t, os.Remove(p(n)))
	}
	files["renamed over"] = open("etc/other", os.O_RDONLY)
	require.NoError(t, os.WriteFile(p("etc/replacement"), []byte("r\n"), 0o644))
	require.NoError(t, os.Rename(p("etc/replacement"), p("etc/other")))

	t0 := time.Unix(1650000000, 5)
	for what, f := range files {
		fd := int(f.Fd())
		require.NoError(t, unix.Fchmod(fd, 0o604), "fchmod: %s", what)
		require.NoError(t, unix.Fchown(fd, 21, 22), "fchown: %s", what)
		require.NoError(t, unix.Futimes(fd, []unix.Timeval{unix.NsecToTimeval(t0.UnixNano()), unix.NsecToTimeval(t0.UnixNano())}), "futimes: %s", what)
		require.NoError(t, unix.Fsetxattr(fd, "user.k", []byte(what), 0), "fsetxattr: %s", what)
		buf := make([]byte, 64)
		n, err := unix.Fgetxattr(fd, "user.k", buf)
		require.NoError(t, err, "fgetxattr: %s", what)
		require.Equal(t, what, string(buf[:n]))
		var st unix.Stat_t
		require.NoError(t, unix.Fstat(fd, &st))
		require.EqualValues(t, unix.S_IFREG|0o604, st.Mode, what)
		require.Equal(t, uint32(21), st.Uid, what)
		require.Equal(t, t0.Unix(), st.Mtim.Sec, what)
		b := make([]byte, 100)
		n, err = unix.Pread(fd, b, 0)
		require.NoError(t, err)
		require.NotZero(t, n, "%s: still readable", what)
	}
	st := lstat(t, p("etc/other"))
	require.EqualValues(t, 0o644, st.Mode&0o7777, "the file renamed over etc/other is not changed")
}

// A file of the image opened for reading shows its copy-up, made by a
// change through its path: go-fuse answers the kernel's GETATTR through
// an open file of the node.
func TestWritableOpenFileSeesCopyUp(t *testing.T) {
	mnt, _ := mountRW(t, rwImage(t))
	f, err := os.Open(filepath.Join(mnt, "etc/motd"))
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, os.Chmod(filepath.Join(mnt, "etc/motd"), 0o600))
	var stx unix.Statx_t
	require.NoError(t, unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_STATX_FORCE_SYNC, unix.STATX_MODE, &stx))
	require.Equal(t, uint16(unix.S_IFREG|0o600), stx.Mode)
	require.NoError(t, unix.Statx(unix.AT_FDCWD, filepath.Join(mnt, "etc/motd"), unix.AT_STATX_FORCE_SYNC, unix.STATX_MODE, &stx))
	require.Equal(t, uint16(unix.S_IFREG|0o600), stx.Mode)
}

// rewinddir shows the directory as it is now: a file made since opendir
// appears, a file removed since is gone.
func TestWritableRewinddir(t *testing.T) {
	mnt, _ := mountRW(t, rwImage(t))
	d, err := os.Open(filepath.Join(mnt, "etc"))
	require.NoError(t, err)
	defer d.Close()
	names, err := d.Readdirnames(-1)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"hosts", "motd"}, names)
	require.NoError(t, os.WriteFile(filepath.Join(mnt, "etc/added"), nil, 0o644))
	require.NoError(t, os.Remove(filepath.Join(mnt, "etc/motd")))
	_, err = d.Seek(0, io.SeekStart)
	require.NoError(t, err)
	names, err = d.Readdirnames(-1)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"added", "hosts"}, names)
}

// A file open for reading while it is opened for writing (the first write
// copies it up) can be written, and the reader sees the write: the kernel
// refuses, with EIO, a passthrough open of a file open in its cached mode.
func TestWritableOpenForWriteWhileRead(t *testing.T) {
	mnt, _ := mountRW(t, rwImage(t))
	p := filepath.Join(mnt, "etc/hosts")
	r, err := os.Open(p)
	require.NoError(t, err)
	defer r.Close()
	before, err := io.ReadAll(r)
	require.NoError(t, err)
	w, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err, "opening for append a file open for reading")
	_, err = w.WriteString("appended\n")
	require.NoError(t, err)
	require.NoError(t, w.Close())
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, string(before)+"appended\n", string(got))

	// A new file open for writing, opened again while it is: both write.
	n := filepath.Join(mnt, "etc/new")
	a, err := os.OpenFile(n, os.O_CREATE|os.O_WRONLY, 0o644)
	require.NoError(t, err)
	defer a.Close()
	b, err := os.OpenFile(n, os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = a.WriteString("a")
	require.NoError(t, err)
	_, err = b.WriteString("b")
	require.NoError(t, err)
	require.NoError(t, b.Close())
	require.NoError(t, a.Close())
	got, err = os.ReadFile(n)
	require.NoError(t, err)
	require.Equal(t, "ab", string(got))
}

// A rewinddir before the first readdir shows the directory as it is then,
// not as it was at opendir (go-fuse asks no Seekdir for a READDIR at the
// offset where the stream stands); as a plain directory does.
func TestWritableRewinddirBeforeFirstRead(t *testing.T) {
	mnt, _ := mountRW(t, rwImage(t))
	d, err := os.Open(filepath.Join(mnt, "etc"))
	require.NoError(t, err)
	defer d.Close()
	require.NoError(t, os.WriteFile(filepath.Join(mnt, "etc/added"), nil, 0o644))
	require.NoError(t, os.Remove(filepath.Join(mnt, "etc/motd")))
	_, err = d.Seek(0, io.SeekStart)
	require.NoError(t, err)
	names, err := d.Readdirnames(-1)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"added", "hosts"}, names)
}

// mv of an image directory in which entries were deleted: the copy is
// opaque, and keeps no whiteouts, which would hide nothing.
func TestWritableMoveDirDropsWhiteouts(t *testing.T) {
	mnt, upper := mountRW(t, rwImage(t))
	require.NoError(t, os.Remove(filepath.Join(mnt, "etc/motd")))
	require.FileExists(t, filepath.Join(upper, "etc/.wh.motd"))
	require.NoError(t, os.Rename(filepath.Join(mnt, "etc"), filepath.Join(mnt, "etc2")))
	ents, err := os.ReadDir(filepath.Join(upper, "etc2"))
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	require.Equal(t, []string{".wh..wh..opq", "hosts"}, names)
}

// fstat, fchmod, fchown and futimens work on a fifo or device open while
// its name goes (unlink, or a rename over it): the kernel opens them
// without asking the mount.
func TestWritableUnlinkedOpenFifo(t *testing.T) {
	requireFUSE(t)
	tree, err := union.BuildUnion(imagetest.Layers(t, rwImage(t)...))
	require.NoError(t, err)
	view, err := cow.New(tree, filepath.Join(t.TempDir(), "upper"))
	require.NoError(t, err)
	t.Cleanup(func() { view.Close() })
	mnt, _ := mountTree(t, tree, Options{Writable: view, MountOptions: []string{"dev"}})
	p := func(s string) string { return filepath.Join(mnt, s) }
	require.NoError(t, unix.Mkfifo(p("run/new"), 0o600))
	require.NoError(t, os.Chmod(p("dev/zero"), 0o644)) // copied up
	require.NoError(t, unix.Mkfifo(p("run/over"), 0o600))
	for _, name := range []string{"dev/fifo", "run/new", "dev/null", "dev/zero", "run/over"} {
		before := lstat(t, p(name))
		fd, err := unix.Open(p(name), unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		require.NoError(t, err, name)
		defer unix.Close(fd)
		if name == "run/over" {
			require.NoError(t, os.WriteFile(p("run/replacement"), nil, 0o644))
			require.NoError(t, os.Rename(p("run/replacement"), p(name)))
		} else {
			require.NoError(t, unix.Unlink(p(name)))
		}
		var st unix.Stat_t
		require.NoError(t, unix.Fstat(fd, &st), "fstat: %s", name)
		require.Equal(t, before.Ino, st.Ino, name)
		require.NoError(t, unix.Fchmod(fd, 0o604), "fchmod: %s", name)
		require.NoError(t, unix.Fchown(fd, 1000, 100), "fchown: %s", name)
		require.NoError(t, unix.Futimes(fd, []unix.Timeval{{Sec: 5}, {Sec: 7}}), "futimes: %s", name)
		require.NoError(t, unix.Fstat(fd, &st))
		require.Equal(t, before.Mode&unix.S_IFMT|0o604, st.Mode, name)
		require.Equal(t, uint32(1000), st.Uid, name)
		require.Equal(t, int64(7), st.Mtim.Sec, name)
	}
	require.EqualValues(t, unix.S_IFREG|0o644, lstat(t, p("run/over")).Mode, "the file renamed over the fifo is not changed")
}
