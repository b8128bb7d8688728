package fusefs

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/overlay/union"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// requireFUSE skips the test where nothing can be mounted, or fails it
// under IMGMOUNT_REQUIRE_FUSE=1 (as CI runs).
func requireFUSE(t *testing.T) {
	t.Helper()
	reason := ""
	if _, err := os.Stat("/dev/fuse"); err != nil {
		reason = "/dev/fuse is unavailable"
	} else if _, err := exec.LookPath("fusermount3"); err != nil && os.Geteuid() != 0 {
		reason = "not root and no fusermount3"
	}
	if reason == "" {
		return
	}
	if os.Getenv("IMGMOUNT_REQUIRE_FUSE") == "1" {
		t.Fatalf("%s (IMGMOUNT_REQUIRE_FUSE=1)", reason)
	}
	t.Skip(reason)
}

// t1 is a second modification time, besides imagetest.MTime.
var t1 = time.Unix(1600000000, 987654321)

// bigContent is 3 MiB and a bit of deterministic noise: reads cross the
// 1 MiB request size and page boundaries.
var bigContent = func() []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 3<<20+1234)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}()

const capability = "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"

func fixtureImage(t testing.TB) *archive.Image {
	l0 := imagetest.LayerTar(t, []imagetest.Entry{
		imagetest.DirMode("bin", 0o755),
		imagetest.FileMode("bin/su", "#!/bin/true\n", 0o4755),
		imagetest.FileMode("bin/wall", "wall\n", 0o2755).With(func(h *tar.Header) { h.Gid = 5 }),
		imagetest.DirMode("tmp", 0o1777),
		imagetest.DirMode("srv", 0o2770).With(func(h *tar.Header) { h.Uid, h.Gid = 1000, 1001 }),
		imagetest.DirMode("data", 0o750).With(func(h *tar.Header) { h.ModTime = t1 }),
		imagetest.FileMode("data/hello", "hello, world\n", 0o640).With(func(h *tar.Header) {
			h.Uid, h.Gid = 1234, 5678
			h.PAXRecords = map[string]string{
				"SCHILY.xattr.user.test":           "some value",
				"SCHILY.xattr.security.capability": capability,
			}
		}),
		{Hdr: tar.Header{Name: "data/hello-link", Typeflag: tar.TypeLink, Linkname: "data/hello", ModTime: imagetest.MTime}},
		{Hdr: tar.Header{Name: "data/sym", Typeflag: tar.TypeSymlink, Linkname: "hello", Mode: 0o777, ModTime: t1}},
		{Hdr: tar.Header{Name: "data/dangling", Typeflag: tar.TypeSymlink, Linkname: "/no/such/target", Mode: 0o777, ModTime: imagetest.MTime}},
		imagetest.FileMode("data/big", string(bigContent), 0o644),
		imagetest.FileMode("data/empty", "", 0o644),
		imagetest.FileMode("data/secret", "nobody may read\n", 0),
		imagetest.FileMode("data/gone", "whited out\n", 0o644),
		imagetest.FileMode("data/over", "v1\n", 0o644),
		imagetest.DirMode("dev", 0o755),
		{Hdr: tar.Header{Name: "dev/null", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: imagetest.MTime}},
		{Hdr: tar.Header{Name: "dev/sda", Typeflag: tar.TypeBlock, Mode: 0o660, Devmajor: 8, Devminor: 0, Gid: 6, ModTime: imagetest.MTime}},
		{Hdr: tar.Header{Name: "dev/big", Typeflag: tar.TypeChar, Mode: 0o600, Devmajor: 300, Devminor: 70000, ModTime: imagetest.MTime}},
		{Hdr: tar.Header{Name: "dev/fifo", Typeflag: tar.TypeFifo, Mode: 0o644, ModTime: imagetest.MTime}},
		imagetest.FileMode("implied/dir/file", "x", 0o644),
	}, imagetest.RawSparse("data/sparse", 8<<20, map[int64]string{0: "start", 4 << 20: "middle", 8<<20 - 3: "end"}))
	l1 := imagetest.LayerTar(t, []imagetest.Entry{
		imagetest.FileMode("data/.wh.gone", "", 0o644),
		imagetest.FileMode("data/over", "v2 from layer 1\n", 0o600),
		imagetest.FileMode("data/new", "new in layer 1\n", 0o644),
	})
	return imagetest.Image(t, l0, l1)
}

// mountTree mounts tree in a new directory and unmounts it when the test
// ends.
func mountTree(t *testing.T, tree *union.Tree, opts Options) (string, *fuse.Server) {
	t.Helper()
	requireFUSE(t)
	mnt := filepath.Join(t.TempDir(), "mnt")
	require.NoError(t, os.Mkdir(mnt, 0o755))
	server, err := Mount(mnt, tree, opts)
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
			_ = UnmountLazy(mnt)
		}
		server.Wait()
		_, mounted, _ := MountedAt(mnt)
		require.False(t, mounted, "still mounted after Unmount")
	})
	return mnt, server
}

func lstat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(p, &st), p)
	return st
}

func TestMountUnion(t *testing.T) {
	img := fixtureImage(t)
	tree, err := union.BuildUnion(img)
	require.NoError(t, err)
	mnt, _ := mountTree(t, tree, Options{FsName: "imgmount:/images/test.tar"})
	p := func(s string) string { return filepath.Join(mnt, s) }

	t.Run("mountinfo", func(t *testing.T) {
		mi, ok, err := MountedAt(mnt)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, "fuse.imgmount", mi.FSType)
		require.True(t, mi.IsImgmount())
		require.Equal(t, "imgmount:/images/test.tar", mi.Source)
		opts := strings.Split(mi.Options, ",")
		for _, o := range []string{"ro", "nosuid", "nodev"} {
			require.Contains(t, opts, o, mi.Options)
		}
	})

	t.Run("readdir", func(t *testing.T) {
		names := func(dir string) []string {
			ents, err := os.ReadDir(p(dir))
			require.NoError(t, err)
			var out []string
			for _, e := range ents {
				out = append(out, e.Name())
			}
			return out
		}
		require.Equal(t, []string{"bin", "data", "dev", "implied", "srv", "tmp"}, names("."))
		require.Equal(t, []string{"big", "dangling", "empty", "hello", "hello-link", "new", "over", "secret", "sparse", "sym"}, names("data"))
		require.Equal(t, []string{"big", "fifo", "null", "sda"}, names("dev"))
		// Types from readdir alone (no stat) are right.
		ents, err := os.ReadDir(p("data"))
		require.NoError(t, err)
		for _, e := range ents {
			want := os.FileMode(0)
			if e.Name() == "sym" || e.Name() == "dangling" {
				want = os.ModeSymlink
			}
			require.Equal(t, want, e.Type(), e.Name())
		}
		// "." and ".." are listed, with the right inode numbers.
		f, err := os.Open(p("data"))
		require.NoError(t, err)
		defer f.Close()
		buf := make([]byte, 8192)
		n, err := unix.Getdents(int(f.Fd()), buf)
		require.NoError(t, err)
		inos := map[string]uint64{}
		for off := 0; off < n; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name
			reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
			name := unix.ByteSliceToString(buf[off+19 : off+reclen])
			inos[name] = binary.NativeEndian.Uint64(buf[off:])
			off += reclen
		}
		require.Equal(t, lstat(t, p("data")).Ino, inos["."])
		require.Equal(t, lstat(t, mnt).Ino, inos[".."])
		require.Equal(t, lstat(t, p("data/hello")).Ino, inos["hello"])
	})

	t.Run("attributes", func(t *testing.T) {
		for _, c := range []struct {
			path       string
			typ, perm  uint32
			uid, gid   uint32
			size       int64
			mtime      time.Time
			nlink      uint64
			major, min uint32
		}{
			{".", unix.S_IFDIR, 0o755, 0, 0, 0, time.Unix(0, 0), 8, 0, 0},
			{"bin", unix.S_IFDIR, 0o755, 0, 0, 0, imagetest.MTime, 2, 0, 0},
			{"bin/su", unix.S_IFREG, 0o4755, 0, 0, 12, imagetest.MTime, 1, 0, 0},
			{"bin/wall", unix.S_IFREG, 0o2755, 0, 5, 5, imagetest.MTime, 1, 0, 0},
			{"tmp", unix.S_IFDIR, 0o1777, 0, 0, 0, imagetest.MTime, 2, 0, 0},
			{"srv", unix.S_IFDIR, 0o2770, 1000, 1001, 0, imagetest.MTime, 2, 0, 0},
			{"data", unix.S_IFDIR, 0o750, 0, 0, 0, t1, 2, 0, 0},
			{"data/hello", unix.S_IFREG, 0o640, 1234, 5678, 13, imagetest.MTime, 2, 0, 0},
			{"data/hello-link", unix.S_IFREG, 0o640, 1234, 5678, 13, imagetest.MTime, 2, 0, 0},
			{"data/sym", unix.S_IFLNK, 0o777, 0, 0, 5, t1, 1, 0, 0},
			{"data/dangling", unix.S_IFLNK, 0o777, 0, 0, 15, imagetest.MTime, 1, 0, 0},
			{"data/big", unix.S_IFREG, 0o644, 0, 0, int64(len(bigContent)), imagetest.MTime, 1, 0, 0},
			{"data/empty", unix.S_IFREG, 0o644, 0, 0, 0, imagetest.MTime, 1, 0, 0},
			{"data/secret", unix.S_IFREG, 0, 0, 0, 16, imagetest.MTime, 1, 0, 0},
			{"data/over", unix.S_IFREG, 0o600, 0, 0, 16, imagetest.MTime, 1, 0, 0},
			{"data/sparse", unix.S_IFREG, 0o644, 0, 0, 8 << 20, time.Unix(imagetest.MTime.Unix(), 0), 1, 0, 0},
			{"dev/null", unix.S_IFCHR, 0o666, 0, 0, 0, imagetest.MTime, 1, 1, 3},
			{"dev/sda", unix.S_IFBLK, 0o660, 0, 6, 0, imagetest.MTime, 1, 8, 0},
			{"dev/big", unix.S_IFCHR, 0o600, 0, 0, 0, imagetest.MTime, 1, 300, 70000},
			{"dev/fifo", unix.S_IFIFO, 0o644, 0, 0, 0, imagetest.MTime, 1, 0, 0},
			{"implied", unix.S_IFDIR, 0o755, 0, 0, 0, time.Unix(0, 0), 3, 0, 0},
		} {
			st := lstat(t, p(c.path))
			require.Equal(t, c.typ, st.Mode&unix.S_IFMT, "%s: type", c.path)
			require.Equal(t, fmt.Sprintf("%#o", c.perm), fmt.Sprintf("%#o", st.Mode&0o7777), "%s: permissions", c.path)
			require.Equal(t, c.uid, st.Uid, "%s: uid", c.path)
			require.Equal(t, c.gid, st.Gid, "%s: gid", c.path)
			if c.typ != unix.S_IFDIR {
				require.Equal(t, c.size, st.Size, "%s: size", c.path)
			}
			require.Equal(t, c.mtime.Unix(), st.Mtim.Sec, "%s: mtime", c.path)
			require.Equal(t, int64(c.mtime.Nanosecond()), st.Mtim.Nsec, "%s: mtime ns", c.path)
			require.Equal(t, st.Mtim, st.Atim, "%s: atime", c.path)
			require.Equal(t, st.Mtim, st.Ctim, "%s: ctime", c.path)
			require.Equal(t, c.nlink, st.Nlink, "%s: nlink", c.path)
			require.Equal(t, c.major, unix.Major(st.Rdev), "%s: major", c.path)
			require.Equal(t, c.min, unix.Minor(st.Rdev), "%s: minor", c.path)
			require.Equal(t, int64(4096), st.Blksize, "%s: blksize", c.path)
			if c.typ == unix.S_IFREG && c.path != "data/sparse" {
				require.Equal(t, (c.size+511)/512, st.Blocks, "%s: blocks", c.path)
			}
		}
		// The sparse file takes what its data takes.
		require.Equal(t, int64(1), lstat(t, p("data/sparse")).Blocks)
	})

	t.Run("whiteout", func(t *testing.T) {
		_, err := os.Lstat(p("data/gone"))
		require.True(t, errors.Is(err, os.ErrNotExist), "%v", err)
		_, err = os.Lstat(p("data/.wh.gone"))
		require.True(t, errors.Is(err, os.ErrNotExist), "%v", err)
		_, err = os.Lstat(p("data/hello/x"))
		require.True(t, errors.Is(err, syscall.ENOTDIR), "%v", err)
	})

	t.Run("hardlinks", func(t *testing.T) {
		a, b := lstat(t, p("data/hello")), lstat(t, p("data/hello-link"))
		require.Equal(t, a.Ino, b.Ino, "hardlinks share an inode")
		require.Equal(t, uint64(2), a.Nlink)
		require.NotEqual(t, a.Ino, lstat(t, p("data/big")).Ino)
		// Inode numbers are the tree's: stable for a given image.
		n := tree.Root.Lookup("data").Lookup("hello")
		require.Equal(t, n.Ino, a.Ino)
		require.Equal(t, tree.Root.Ino, lstat(t, mnt).Ino)
	})

	t.Run("content", func(t *testing.T) {
		for path, want := range map[string]string{
			"data/hello":      "hello, world\n",
			"data/hello-link": "hello, world\n",
			"data/over":       "v2 from layer 1\n",
			"data/new":        "new in layer 1\n",
			"data/empty":      "",
			"bin/su":          "#!/bin/true\n",
			"data/secret":     "nobody may read\n", // root reads mode 0000
		} {
			b, err := os.ReadFile(p(path))
			require.NoError(t, err, path)
			require.Equal(t, want, string(b), path)
		}
		b, err := os.ReadFile(p("data/big"))
		require.NoError(t, err)
		require.True(t, bytes.Equal(bigContent, b), "big file content")

		// Reads at odd offsets and across the end.
		f, err := os.Open(p("data/big"))
		require.NoError(t, err)
		defer f.Close()
		for _, off := range []int64{0, 1, 4095, 4096, 1<<20 - 7, 2<<20 + 1, int64(len(bigContent)) - 10} {
			buf := make([]byte, 300000)
			n, err := f.ReadAt(buf, off)
			if err != nil {
				require.ErrorIs(t, err, io.EOF)
			}
			end := min(off+int64(len(buf)), int64(len(bigContent)))
			require.Equal(t, int(end-off), n, "offset %d", off)
			require.True(t, bytes.Equal(bigContent[off:end], buf[:n]), "offset %d", off)
		}
		n, err := f.ReadAt(make([]byte, 10), int64(len(bigContent))+100)
		require.Equal(t, 0, n)
		require.ErrorIs(t, err, io.EOF)

		// Concurrent readers.
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fd, err := os.Open(p("data/big"))
				if err != nil {
					errs <- err
					return
				}
				defer fd.Close()
				off := int64(i) * 333333
				buf := make([]byte, 1<<20)
				n, err := fd.ReadAt(buf, off)
				if err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(buf[:n], bigContent[off:off+int64(n)]) {
					errs <- fmt.Errorf("reader %d: wrong content", i)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
	})

	t.Run("sparse", func(t *testing.T) {
		b, err := os.ReadFile(p("data/sparse"))
		require.NoError(t, err)
		require.Len(t, b, 8<<20)
		require.Equal(t, "start", string(b[:5]))
		require.Equal(t, "middle", string(b[4<<20:4<<20+6]))
		require.Equal(t, "end", string(b[len(b)-3:]))
		require.Empty(t, strings.Trim(string(b[5:4<<20]), "\x00"))
		require.Empty(t, strings.Trim(string(b[4<<20+6:len(b)-3]), "\x00"))

		f, err := os.Open(p("data/sparse"))
		require.NoError(t, err)
		defer f.Close()
		seek := func(off int64, whence int) int64 {
			r, err := unix.Seek(int(f.Fd()), off, whence)
			require.NoError(t, err, "seek %d %d", off, whence)
			return r
		}
		require.Equal(t, int64(0), seek(0, unix.SEEK_DATA))
		require.Equal(t, int64(5), seek(0, unix.SEEK_HOLE))
		require.Equal(t, int64(4<<20), seek(5, unix.SEEK_DATA))
		require.Equal(t, int64(4<<20+6), seek(4<<20+1, unix.SEEK_HOLE))
		require.Equal(t, int64(8<<20-3), seek(4<<20+6, unix.SEEK_DATA))
		require.Equal(t, int64(8<<20), seek(8<<20-3, unix.SEEK_HOLE))
		_, err = unix.Seek(int(f.Fd()), 8<<20, unix.SEEK_DATA)
		require.ErrorIs(t, err, syscall.ENXIO)

		g, err := os.Open(p("data/hello"))
		require.NoError(t, err)
		defer g.Close()
		r, err := unix.Seek(int(g.Fd()), 3, unix.SEEK_HOLE)
		require.NoError(t, err)
		require.Equal(t, int64(13), r)
	})

	t.Run("symlinks", func(t *testing.T) {
		for path, want := range map[string]string{"data/sym": "hello", "data/dangling": "/no/such/target"} {
			got, err := os.Readlink(p(path))
			require.NoError(t, err)
			require.Equal(t, want, got)
		}
		b, err := os.ReadFile(p("data/sym"))
		require.NoError(t, err)
		require.Equal(t, "hello, world\n", string(b), "a relative symlink resolves inside the mount")
	})

	t.Run("xattrs", func(t *testing.T) {
		hello := p("data/hello")
		sz, err := unix.Getxattr(hello, "user.test", nil)
		require.NoError(t, err)
		require.Equal(t, len("some value"), sz, "size query")
		buf := make([]byte, 64)
		sz, err = unix.Getxattr(hello, "user.test", buf)
		require.NoError(t, err)
		require.Equal(t, "some value", string(buf[:sz]))
		_, err = unix.Getxattr(hello, "user.test", make([]byte, 3))
		require.ErrorIs(t, err, syscall.ERANGE)
		sz, err = unix.Getxattr(hello, "security.capability", buf)
		require.NoError(t, err)
		require.Equal(t, capability, string(buf[:sz]))
		_, err = unix.Getxattr(hello, "user.absent", buf)
		require.ErrorIs(t, err, syscall.ENODATA)
		_, err = unix.Getxattr(p("data/big"), "user.test", buf)
		require.ErrorIs(t, err, syscall.ENODATA)

		sz, err = unix.Listxattr(hello, nil)
		require.NoError(t, err)
		list := make([]byte, sz)
		sz, err = unix.Listxattr(hello, list)
		require.NoError(t, err)
		require.Equal(t, "security.capability\x00user.test\x00", string(list[:sz]))
		_, err = unix.Listxattr(hello, make([]byte, 4))
		require.ErrorIs(t, err, syscall.ERANGE)
		sz, err = unix.Listxattr(p("data/big"), make([]byte, 64))
		require.NoError(t, err)
		require.Zero(t, sz)
		// The hardlink shows the same attributes.
		sz, err = unix.Getxattr(p("data/hello-link"), "user.test", buf)
		require.NoError(t, err)
		require.Equal(t, "some value", string(buf[:sz]))
	})

	t.Run("read-only", func(t *testing.T) {
		erofs := func(what string, err error) {
			t.Helper()
			require.Error(t, err, what)
			require.True(t, errors.Is(err, syscall.EROFS), "%s: want EROFS, got %v", what, err)
		}
		erofs("create", os.WriteFile(p("data/newfile"), []byte("x"), 0o644))
		_, err := os.OpenFile(p("data/hello"), os.O_WRONLY, 0)
		erofs("open for writing", err)
		_, err = os.OpenFile(p("data/hello"), os.O_RDWR, 0)
		erofs("open read-write", err)
		_, err = os.OpenFile(p("data/hello"), os.O_RDONLY|os.O_TRUNC, 0)
		erofs("open with O_TRUNC", err)
		erofs("mkdir", os.Mkdir(p("data/d"), 0o755))
		erofs("unlink", os.Remove(p("data/hello")))
		erofs("rmdir", syscall.Rmdir(p("tmp")))
		erofs("rename", os.Rename(p("data/hello"), p("data/hello2")))
		erofs("symlink", os.Symlink("x", p("data/s")))
		erofs("link", os.Link(p("data/hello"), p("data/l")))
		erofs("mknod", unix.Mknod(p("data/fifo2"), unix.S_IFIFO|0o644, 0))
		erofs("chmod", os.Chmod(p("data/hello"), 0o600))
		erofs("chown", os.Lchown(p("data/hello"), 1, 1))
		erofs("truncate", os.Truncate(p("data/hello"), 0))
		erofs("utimes", os.Chtimes(p("data/hello"), time.Now(), time.Now()))
		erofs("setxattr", unix.Setxattr(p("data/hello"), "user.x", []byte("y"), 0))
		erofs("removexattr", unix.Removexattr(p("data/hello"), "user.test"))
		b, err := os.ReadFile(p("data/hello"))
		require.NoError(t, err)
		require.Equal(t, "hello, world\n", string(b), "unchanged")
	})

	t.Run("statfs", func(t *testing.T) {
		var st unix.Statfs_t
		require.NoError(t, unix.Statfs(mnt, &st))
		require.Equal(t, int64(4096), st.Bsize)
		require.NotZero(t, st.Blocks)
		require.Zero(t, st.Bfree)
		require.NotZero(t, st.Files)
		require.Equal(t, int64(255), st.Namelen)
		require.NotZero(t, st.Flags&unix.ST_RDONLY, "read-only")
	})

	t.Run("devices and fifos are inert", func(t *testing.T) {
		// nodev: opening a device node fails, whatever its permissions.
		_, err := os.OpenFile(p("dev/null"), os.O_RDONLY, 0)
		require.Error(t, err)
		require.True(t, errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM), "%v", err)
	})
}

// TestMountLayersView mounts the per-layer view: one directory per layer,
// whiteout files visible where they are stored.
func TestMountLayersView(t *testing.T) {
	img := fixtureImage(t)
	tree, err := union.BuildLayersView(img)
	require.NoError(t, err)
	mnt, _ := mountTree(t, tree, Options{})
	ents, err := os.ReadDir(mnt)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := []string{
		"00-" + img.Layers[0].DiffID.Encoded()[:12],
		"01-" + img.Layers[1].DiffID.Encoded()[:12],
	}
	require.Equal(t, want, names)
	b, err := os.ReadFile(filepath.Join(mnt, want[0], "data/over"))
	require.NoError(t, err)
	require.Equal(t, "v1\n", string(b))
	b, err = os.ReadFile(filepath.Join(mnt, want[0], "data/gone"))
	require.NoError(t, err)
	require.Equal(t, "whited out\n", string(b))
	st := lstat(t, filepath.Join(mnt, want[1], "data/.wh.gone"))
	require.Equal(t, uint32(unix.S_IFREG), st.Mode&unix.S_IFMT)
	require.Zero(t, st.Size)
	// Sharing inodes within the layer.
	a, c := lstat(t, filepath.Join(mnt, want[0], "data/hello")), lstat(t, filepath.Join(mnt, want[0], "data/hello-link"))
	require.Equal(t, a.Ino, c.Ino)
}

// TestAllowOtherAndRoot runs a reader as another user: with allow_other
// it gets in (permissions permitting), with allow_root it does not, and
// without either the kernel keeps it out.
func TestAllowOtherAndRoot(t *testing.T) {
	requireFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a process as another user")
	}
	img := fixtureImage(t)
	tree, err := union.BuildUnion(img)
	require.NoError(t, err)
	asNobody := func(t *testing.T, mnt string) error {
		// The parents of t.TempDir are private: let the other user through.
		for d := filepath.Dir(mnt); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
			require.NoError(t, os.Chmod(d, 0o755))
		}
		cmd := exec.Command("cat", filepath.Join(mnt, "bin/su"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if string(out) != "#!/bin/true\n" {
			return fmt.Errorf("read %q", out)
		}
		return nil
	}
	t.Run("default", func(t *testing.T) {
		mnt, _ := mountTree(t, tree, Options{})
		require.Error(t, asNobody(t, mnt))
	})
	t.Run("allow_other", func(t *testing.T) {
		mnt, _ := mountTree(t, tree, Options{AllowOther: true})
		require.NoError(t, asNobody(t, mnt))
	})
	t.Run("-o allow_root", func(t *testing.T) {
		mnt, _ := mountTree(t, tree, Options{MountOptions: []string{"allow_root"}})
		err := asNobody(t, mnt)
		require.Error(t, err)
		require.Contains(t, err.Error(), "Permission denied")
		b, err := os.ReadFile(filepath.Join(mnt, "bin/su"))
		require.NoError(t, err, "root gets in")
		require.Equal(t, "#!/bin/true\n", string(b))
	})
}

// TestMountOptionSuid: -o suid,dev lift the defaults.
func TestMountOptionSuid(t *testing.T) {
	tree, err := union.BuildUnion(fixtureImage(t))
	require.NoError(t, err)
	mnt, _ := mountTree(t, tree, Options{MountOptions: []string{"suid", "dev"}})
	mi, ok, err := MountedAt(mnt)
	require.NoError(t, err)
	require.True(t, ok)
	opts := strings.Split(mi.Options, ",")
	require.NotContains(t, opts, "nosuid")
	require.NotContains(t, opts, "nodev")
	require.Contains(t, opts, "ro")
}

// TestUnmountExternally: the server's Wait returns when someone else
// unmounts, and Unmount of a busy mount says busy.
func TestUnmountExternally(t *testing.T) {
	requireFUSE(t)
	tree, err := union.BuildUnion(fixtureImage(t))
	require.NoError(t, err)
	mnt := filepath.Join(t.TempDir(), "mnt")
	require.NoError(t, os.Mkdir(mnt, 0o755))
	server, err := Mount(mnt, tree, Options{})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { server.Wait(); close(done) }()

	f, err := os.Open(filepath.Join(mnt, "data/hello"))
	require.NoError(t, err)
	err = Unmount(mnt)
	require.ErrorIs(t, err, ErrBusy)
	f.Close()

	require.NoError(t, Unmount(mnt))
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("server.Wait did not return after the unmount")
	}
	_, mounted, err := MountedAt(mnt)
	require.NoError(t, err)
	require.False(t, mounted)
}

func TestMountRefusesRW(t *testing.T) {
	tree, err := union.BuildUnion(fixtureImage(t))
	require.NoError(t, err)
	_, err = Mount(t.TempDir(), tree, Options{MountOptions: []string{"rw"}})
	require.ErrorContains(t, err, "--upper")
}
