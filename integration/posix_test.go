package integration

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// posixLayer is the one layer of the image the POSIX tests edit: every
// kind of entry a copy-up must handle.
func posixLayer(t *testing.T) []byte {
	xattr := func(h *tar.Header) { h.PAXRecords = map[string]string{"SCHILY.xattr.user.note": "image"} }
	return imagetest.LayerTar(t, []imagetest.Entry{
		imagetest.Dir("d"),
		imagetest.Dir("d/sub"),
		imagetest.File("d/sub/deep", "deep\n"), // right after its directory: GNU tar sets a directory's time when it leaves it
		imagetest.FileMode("d/f", "file in d\n", 0o640),
		imagetest.Hardlink("d/f-link", "d/f"),
		imagetest.Symlink("d/sym", "f"),
		imagetest.Fifo("d/fifo"),
		imagetest.Dir("dev"),
		imagetest.File("dev/null", "").With(func(h *tar.Header) {
			h.Typeflag, h.Mode, h.Devmajor, h.Devminor = tar.TypeChar, 0o666, 1, 3
		}),
		imagetest.Dir("e"),
		imagetest.File("e/x", "x\n").With(xattr),
		imagetest.FileMode("e/big", strings.Repeat("0123456789abcdef", 8192), 0o600),
		imagetest.File("top", "top\n"),
	})
}

// posixSetup writes the image and extracts its layer with GNU tar into a
// plain directory: the oracle the mount must behave like.
func posixSetup(t *testing.T) (image, plain string) {
	t.Helper()
	layer := posixLayer(t)
	dir := t.TempDir()
	b := imagetest.Build(t, imagetest.Spec{Tags: []string{"posix:1"}, Layers: []imagetest.LayerSpec{{Tar: layer}}})
	image = imagetest.Legacy(t, b).Write(t, dir, "posix.tar")
	plain = filepath.Join(dir, "plain")
	require.NoError(t, os.Mkdir(plain, 0o755))
	layerPath := imagetest.WriteFile(t, dir, "layer.tar", layer)
	out, err := exec.Command("tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", layerPath, "-C", plain).CombinedOutput()
	require.NoError(t, err, "tar -x: %s", out)
	// The layer has no "." entry: the mount's root is a 0755 directory
	// with time 0.
	require.NoError(t, os.Chtimes(plain, time.Unix(0, 0), time.Unix(0, 0)))
	return image, plain
}

// posixOp is one file operation, done the same way under two roots; its
// result is what a caller sees: "ok" and what it read, or the errno.
type posixOp struct {
	name string
	do   func(root string) string
}

func errnoOf(err error) string {
	if err == nil {
		return "ok"
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return e.Error()
	}
	return err.Error()
}

// posixOps makes a seeded sequence of operations over a small set of
// names, so that they meet: creating, writing, renaming, linking and
// removing the same paths, changing attributes of image entries (fifos and
// devices included), and working on files through descriptors after their
// name is gone.
func posixOps(seed uint64, n int) []posixOp {
	r := rand.New(rand.NewPCG(seed, seed))
	dirs := []string{"", "d", "d/sub", "e", "n", "n/m", "dev"}
	names := []string{"f", "f-link", "g", "sub", "x", "big", "fifo", "null", "top", "m", "sym"}
	path := func() string {
		return filepath.Join(dirs[r.IntN(len(dirs))], names[r.IntN(len(names))])
	}
	var ops []posixOp
	for range n {
		a, b := path(), path()
		off, size := int64(r.IntN(200000)), r.IntN(5000)
		mode := uint32(r.IntN(0o1000)) | 0o200
		data := strings.Repeat(fmt.Sprintf("%d.", r.IntN(1000)), size/2+1)[:size]
		switch r.IntN(16) {
		case 0:
			ops = append(ops, posixOp{"create " + a, func(root string) string {
				fd, err := unix.Open(filepath.Join(root, a), unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o644)
				if err != nil {
					return errnoOf(err)
				}
				defer unix.Close(fd)
				_, err = unix.Write(fd, []byte(data))
				return errnoOf(err)
			}})
		case 1:
			ops = append(ops, posixOp{fmt.Sprintf("write %s at %d", a, off), func(root string) string {
				f, err := openFile(filepath.Join(root, a), os.O_WRONLY)
				if err != nil {
					return errnoOf(err)
				}
				defer f.Close()
				_, err = f.WriteAt([]byte(data), off)
				return errnoOf(err)
			}})
		case 2:
			ops = append(ops, posixOp{"read " + a, func(root string) string {
				f, err := openFile(filepath.Join(root, a), os.O_RDONLY)
				if err != nil {
					return errnoOf(err)
				}
				defer f.Close()
				b, err := io.ReadAll(f)
				if err != nil {
					return errnoOf(err)
				}
				return fmt.Sprintf("ok %d bytes %x", len(b), hashBytes(b))
			}})
		case 3:
			ops = append(ops, posixOp{"rename " + a + " " + b, func(root string) string {
				return errnoOf(unix.Rename(filepath.Join(root, a), filepath.Join(root, b)))
			}})
		case 4:
			ops = append(ops, posixOp{"link " + a + " " + b, func(root string) string {
				return errnoOf(unix.Link(filepath.Join(root, a), filepath.Join(root, b)))
			}})
		case 5:
			ops = append(ops, posixOp{"unlink " + a, func(root string) string {
				return errnoOf(unix.Unlink(filepath.Join(root, a)))
			}})
		case 6:
			ops = append(ops, posixOp{"mkdir " + a, func(root string) string {
				return errnoOf(unix.Mkdir(filepath.Join(root, a), 0o755))
			}})
		case 7:
			ops = append(ops, posixOp{"rmdir " + a, func(root string) string {
				return errnoOf(unix.Rmdir(filepath.Join(root, a)))
			}})
		case 8:
			ops = append(ops, posixOp{fmt.Sprintf("chmod %s %o", a, mode), func(root string) string {
				return errnoOf(unix.Fchmodat(unix.AT_FDCWD, filepath.Join(root, a), mode, 0))
			}})
		case 9:
			uid := 1000 + r.IntN(2)
			ops = append(ops, posixOp{fmt.Sprintf("lchown %s %d", a, uid), func(root string) string {
				return errnoOf(unix.Lchown(filepath.Join(root, a), uid, 100))
			}})
		case 10:
			ops = append(ops, posixOp{fmt.Sprintf("truncate %s %d", a, off), func(root string) string {
				return errnoOf(unix.Truncate(filepath.Join(root, a), off))
			}})
		case 11:
			ops = append(ops, posixOp{"setxattr " + a, func(root string) string {
				return errnoOf(unix.Lsetxattr(filepath.Join(root, a), "user.op", []byte(data[:min(len(data), 20)]), 0))
			}})
		case 12:
			ops = append(ops, posixOp{"getxattr " + a, func(root string) string {
				buf := make([]byte, 256)
				n, err := unix.Lgetxattr(filepath.Join(root, a), "user.note", buf)
				if err != nil {
					return errnoOf(err)
				}
				return "ok " + string(buf[:n])
			}})
		case 13:
			ops = append(ops, posixOp{"utimes " + a, func(root string) string {
				ts := []unix.Timespec{unix.NsecToTimespec(1e18), unix.NsecToTimespec(1.5e18 + off)}
				return errnoOf(unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, a), ts, unix.AT_SYMLINK_NOFOLLOW))
			}})
		case 14:
			ops = append(ops, posixOp{"mkfifo " + a, func(root string) string {
				return errnoOf(unix.Mkfifo(filepath.Join(root, a), 0o640))
			}})
		case 15:
			ops = append(ops, posixOp{"open, unlink, then work on the descriptor: " + a, func(root string) string {
				f, err := openFile(filepath.Join(root, a), os.O_RDWR)
				if err != nil {
					return errnoOf(err)
				}
				defer f.Close()
				res := []string{errnoOf(unix.Unlink(filepath.Join(root, a)))}
				_, err = f.WriteAt([]byte(data), off%5000)
				res = append(res, errnoOf(err),
					errnoOf(unix.Fchmod(int(f.Fd()), mode)),
					errnoOf(unix.Fchown(int(f.Fd()), 1000, 100)),
					errnoOf(unix.Ftruncate(int(f.Fd()), off%7000)),
					errnoOf(unix.Futimes(int(f.Fd()), []unix.Timeval{{Sec: 5}, {Sec: 7}})))
				var st unix.Stat_t
				if err := unix.Fstat(int(f.Fd()), &st); err != nil {
					return strings.Join(append(res, errnoOf(err)), " ")
				}
				return strings.Join(append(res, fmt.Sprintf("mode %o uid %d size %d mtime %d", st.Mode, st.Uid, st.Size, st.Mtim.Sec)), " ")
			}})
		}
	}
	return ops
}

// openFile opens without blocking on a fifo (O_NONBLOCK, which regular
// files ignore).
func openFile(p string, flags int) (*os.File, error) {
	fd, err := unix.Open(p, flags|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), p), nil
}

func hashBytes(b []byte) uint64 {
	var h uint64 = 14695981039346656037
	for _, c := range b {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return h
}

// TestWritablePOSIX runs seeded sequences of file operations on a writable
// mount and on a plain directory holding the same files (GNU tar's
// extraction of the layer), compares every result call by call, then the
// two trees, live and after a remount.
func TestWritablePOSIX(t *testing.T) {
	requireFUSE(t)
	for _, seed := range []uint64{1, 2, 3, 4, 5, 6} {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			image, plain := posixSetup(t)
			upper := filepath.Join(t.TempDir(), "upper")
			start := time.Now().Add(-time.Second)
			mnt := mountImage(t, image, "--cache-dir", t.TempDir(), "--upper", upper, "-o", "dev")
			compareTrees(t, "before", mnt, plain, start)
			for i, op := range posixOps(seed, 500) {
				want, got := op.do(plain), op.do(mnt)
				require.Equal(t, want, got, "operation %d: %s (plain directory, then the mount)", i, op.name)
			}
			compareTrees(t, "after the operations", mnt, plain, start)
			unmount(t, mnt)
			mnt = mountImage(t, image, "--cache-dir", t.TempDir(), "--upper", upper, "-o", "dev")
			compareTrees(t, "remounted", mnt, plain, start)
		})
	}
}

// TestWritableRenameRace: one process works in a directory through its
// descriptor while another renames the directory's parent away and back,
// with a decoy of the same name in between. Every call of the first must
// succeed and land in its own directory, as on ext4 and overlayfs.
func TestWritableRenameRace(t *testing.T) {
	requireFUSE(t)
	image, plain := posixSetup(t)
	mnt := mountImage(t, image, "--cache-dir", t.TempDir(), "--upper", filepath.Join(t.TempDir(), "upper"))
	for _, root := range []string{plain, mnt} {
		failures, strays := renameRace(t, root, 3*time.Second)
		require.Empty(t, failures, "%s: calls that failed while the parent was renamed", root)
		require.Zero(t, strays, "%s: files created through the descriptor that landed in the decoy", root)
	}
}

// renameRace runs the race in root for d and returns the failed calls of
// the worker and the number of files found in a decoy.
func renameRace(t *testing.T, root string, d time.Duration) (failures []string, strays int) {
	t.Helper()
	dir, sub := filepath.Join(root, "race"), filepath.Join(root, "race", "sub")
	require.NoError(t, os.MkdirAll(sub, 0o755))
	fd, err := unix.Open(sub, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	require.NoError(t, err)
	defer unix.Close(fd)

	var stop atomic.Bool
	var mu sync.Mutex
	fail := func(what string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf("%s: %v", what, err))
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop.Store(true)
	wg.Add(1)
	go func() { // the worker, in race/sub through its descriptor
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			name := fmt.Sprintf("f%d", i)
			f, err := unix.Openat(fd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
			if err != nil {
				fail("openat O_CREAT "+name, err)
				continue
			}
			if err := unix.Fchmod(f, 0o600); err != nil {
				fail("fchmod "+name, err)
			}
			unix.Close(f)
			var st unix.Stat_t
			if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				fail("fstatat "+name, err)
			}
		}
	}()
	moved := filepath.Join(root, "race-moved")
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		require.NoError(t, os.Rename(dir, moved))
		require.NoError(t, os.Mkdir(dir, 0o755))
		require.NoError(t, os.Mkdir(sub, 0o755)) // the decoy
		if err := os.Remove(sub); err != nil {
			require.ErrorIs(t, err, unix.ENOTEMPTY)
			ents, _ := os.ReadDir(sub) // what the worker created in the decoy
			strays += len(ents)
			require.NoError(t, os.RemoveAll(sub))
		}
		require.NoError(t, os.Remove(dir))
		require.NoError(t, os.Rename(moved, dir))
	}
	return failures, strays
}

// TestWritableFioVerify writes a file in the writable mount with fio,
// checking every block's crc32c as it reads it back, then again after an
// unmount and a remount: no write may be lost or land at the wrong offset.
func TestWritableFioVerify(t *testing.T) {
	requireFUSE(t)
	image, _ := posixSetup(t)
	upper := filepath.Join(t.TempDir(), "upper")
	cache := t.TempDir()
	fio := func(mnt string, extra ...string) {
		t.Helper()
		args := append([]string{"--name=verify", "--filename=" + filepath.Join(mnt, "e", "fio.dat"),
			"--size=64M", "--bs=4k", "--rw=randwrite", "--ioengine=psync", "--iodepth=1",
			"--verify=crc32c", "--verify_fatal=1", "--randseed=42", "--output-format=terse"}, extra...)
		cmd := exec.Command("fio", args...)
		cmd.Dir = t.TempDir() // where fio keeps its verify state
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "fio %s: %s", strings.Join(extra, " "), out)
	}
	mnt := mountImage(t, image, "--cache-dir", cache, "--upper", upper)
	fio(mnt, "--do_verify=1")
	unmount(t, mnt)
	mnt = mountImage(t, image, "--cache-dir", cache, "--upper", upper)
	fio(mnt, "--verify_only")
}
