package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// An edit is one change made the same way in two trees: the writable mount
// and a plain copy of umoci's unpack (the oracle). After a list of edits the
// two must be identical, path by path.
type edit struct {
	name string
	do   func(root string) error
}

func p(root, rel string) string { return filepath.Join(root, rel) }

// writeAt writes data at off into an existing file without truncating it.
func writeAt(path string, data string, off int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte(data), off); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func appendTo(path, data string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(data)
	return errors.Join(err, f.Close())
}

// mmapWrite changes bytes of a file through a shared writable mapping.
func mmapWrite(path string, off int, data string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return err
	}
	copy(m[off:], data)
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		unix.Munmap(m)
		return err
	}
	return unix.Munmap(m)
}

var fixedTime = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

// debianEdits covers every operation the issue lists, on lower entries of
// the Debian test image and on new ones.
var debianEdits = []edit{
	{"create", func(r string) error { return os.WriteFile(p(r, "newfile"), []byte("new\n"), 0o640) }},
	{"overwrite lower", func(r string) error { return os.WriteFile(p(r, "etc/hostname"), []byte("edited\n"), 0o644) }},
	{"in-place write into lower", func(r string) error { return writeAt(p(r, "etc/passwd"), "ROOT", 0) }},
	{"append to lower", func(r string) error { return appendTo(p(r, "etc/debian_version"), "appended\n") }},
	{"truncate lower", func(r string) error { return os.Truncate(p(r, "etc/motd"), 10) }},
	{"mmap write into lower", func(r string) error { return mmapWrite(p(r, "etc/host.conf"), 0, "#MMAP") }},
	{"mkdir nested", func(r string) error { return os.MkdirAll(p(r, "srv/a/b/c"), 0o750) }},
	{"file in new dir", func(r string) error { return os.WriteFile(p(r, "srv/a/b/c/f"), []byte("deep"), 0o600) }},
	{"rmdir lower empty dir", func(r string) error { return os.Remove(p(r, "media")) }},
	{"rm -r lower dir", func(r string) error { return os.RemoveAll(p(r, "etc/systemd")) }},
	{"unlink lower file", func(r string) error { return os.Remove(p(r, "etc/issue")) }},
	{"rename lower file", func(r string) error { return os.Rename(p(r, "etc/login.defs"), p(r, "etc/login.renamed")) }},
	{"rename lower dir", func(r string) error {
		return os.Rename(p(r, "usr/share/common-licenses"), p(r, "usr/share/licenses-moved"))
	}},
	{"edit in moved dir", func(r string) error { return appendTo(p(r, "usr/share/licenses-moved/BSD"), "x\n") }},
	{"rename over lower file", func(r string) error { return os.Rename(p(r, "newfile"), p(r, "etc/shells")) }},
	{"rename dir over empty lower dir", func(r string) error { return unix.Rename(p(r, "srv/a"), p(r, "mnt")) }},
	{"symlink", func(r string) error { return os.Symlink("../etc/passwd", p(r, "srv/link")) }},
	{"hardlink to lower file", func(r string) error { return os.Link(p(r, "etc/group"), p(r, "srv/group-link")) }},
	{"write through lower hardlink", func(r string) error { return appendTo(p(r, "usr/bin/perl5.36.0"), "tail") }},
	{"chmod lower", func(r string) error { return os.Chmod(p(r, "etc/profile"), 0o4755) }},
	{"chown lower", func(r string) error { return os.Lchown(p(r, "etc/bash.bashrc"), 1234, 5678) }},
	{"chown symlink", func(r string) error { return os.Lchown(p(r, "srv/link"), 42, 43) }},
	{"utimes lower", func(r string) error { return os.Chtimes(p(r, "etc/environment"), fixedTime, fixedTime) }},
	{"utimes lower dir", func(r string) error { return os.Chtimes(p(r, "var/lib"), fixedTime, fixedTime) }},
	{"setxattr lower", func(r string) error {
		return unix.Setxattr(p(r, "etc/fstab"), "user.imgmount-test", []byte("v1"), 0)
	}},
	{"chmod the root", func(r string) error { return os.Chmod(r, 0o750) }},
	{"setxattr the root", func(r string) error {
		return unix.Setxattr(r, "user.imgmount-test-root", []byte("r"), 0)
	}},
	{"setxattr trusted", func(r string) error {
		return unix.Setxattr(p(r, "etc/fstab"), "trusted.test", []byte("t"), 0)
	}},
	{"removexattr", func(r string) error {
		if err := unix.Setxattr(p(r, "etc/nsswitch.conf"), "user.gone", []byte("x"), 0); err != nil {
			return err
		}
		return unix.Removexattr(p(r, "etc/nsswitch.conf"), "user.gone")
	}},
	{"mkfifo", func(r string) error { return unix.Mkfifo(p(r, "srv/fifo"), 0o620) }},
	{"mknod char", func(r string) error { return unix.Mknod(p(r, "srv/null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))) }},
	{"delete and recreate dir", func(r string) error {
		if err := os.RemoveAll(p(r, "etc/apt")); err != nil {
			return err
		}
		if err := os.Mkdir(p(r, "etc/apt"), 0o700); err != nil {
			return err
		}
		return os.WriteFile(p(r, "etc/apt/only"), []byte("only"), 0o644)
	}},
	{"delete and recreate file", func(r string) error {
		if err := os.Remove(p(r, "etc/adduser.conf")); err != nil {
			return err
		}
		return os.WriteFile(p(r, "etc/adduser.conf"), []byte("again"), 0o600)
	}},
	{"fsync a file and a dir", func(r string) error {
		for _, q := range []string{"etc/hostname", "etc"} {
			f, err := os.Open(p(r, q))
			if err != nil {
				return err
			}
			err = f.Sync()
			f.Close()
			if err != nil {
				return err
			}
		}
		return nil
	}},
}

// copyTree copies a tree with everything cp -a keeps (hardlinks, xattrs,
// owners, times).
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	out, err := exec.Command("cp", "-a", "--preserve=all", from, to).CombinedOutput()
	require.NoError(t, err, "cp -a: %s", out)
}

// settle hides what two trees cannot agree on after the same edits made
// at different moments: the times of what the edits changed (both must be
// recent), and directory link counts.
func settle(m map[string]*node, since time.Time) {
	for _, n := range m {
		var sec, nsec int64
		fmt.Sscanf(n.Mtime, "%d.%d", &sec, &nsec)
		if !time.Unix(sec, nsec).Before(since) {
			n.Mtime = "recent"
		}
	}
}

func compareTrees(t *testing.T, what, mnt, expect string, since time.Time) {
	t.Helper()
	e, err := walkTree(expect)
	require.NoError(t, err)
	m, err := walkTree(mnt)
	require.NoError(t, err, "walking the mount")
	settle(e, since)
	settle(m, since)
	diffs := diffTrees(m, e, 60)
	if len(diffs) > 0 {
		t.Fatalf("%s: the mount differs from the same edits made to umoci's unpack:\n  %s", what, strings.Join(diffs, "\n  "))
	}
	t.Logf("%s: %d paths identical", what, len(e))
}

// TestWritable makes every kind of edit in a writable mount and in a copy
// of umoci's unpack of the same image, then compares the two trees: live,
// after unmount and remount, and after the daemon is killed with SIGKILL.
func TestWritable(t *testing.T) {
	requireFUSE(t)
	img := imageNamed(t, "debian-docker.tar")
	od := oracle(t, img)
	tmp := t.TempDir()
	expect := filepath.Join(tmp, "expect")
	copyTree(t, od.rootfs, expect)
	upper := filepath.Join(tmp, "upper")
	start := time.Now().Add(-time.Second)

	// -o dev: the chroot below needs the image's /dev/null, and nodev (the
	// default) makes device nodes unusable.
	mnt := mountImage(t, img.path(), "--upper", upper, "-o", "dev")
	mi, ok := mountAt(mnt)
	require.True(t, ok)
	require.NotContains(t, strings.Split(mi.options, ","), "ro")
	for _, e := range debianEdits {
		require.NoError(t, e.do(expect), "%s, in the oracle copy", e.name)
		require.NoError(t, e.do(mnt), "%s, in the mount", e.name)
	}
	compareTrees(t, "live", mnt, expect, start)

	t.Run("one mount per upper", func(t *testing.T) {
		other := newMountpoint(t)
		r := run(t, time.Minute, "--cache-dir", sharedCache, "--upper", upper, img.path(), other)
		requireClearError(t, r, "in use by another imgmount mount")
		requireNoMount(t, other)
	})

	t.Run("reserved names", func(t *testing.T) {
		for _, name := range []string{".wh.x", ".wh..wh..opq"} {
			err := os.WriteFile(p(mnt, "srv/"+name), nil, 0o644)
			require.Error(t, err, "creating %s", name)
			require.Error(t, os.Mkdir(p(mnt, name), 0o755))
		}
		_, err := os.Lstat(p(mnt, "etc/.wh.issue"))
		require.True(t, errors.Is(err, os.ErrNotExist), "whiteouts never show: %v", err)
	})

	t.Run("upper is a layer directory", func(t *testing.T) {
		for _, w := range []string{"etc/.wh.issue", "etc/.wh.systemd", ".wh.media", "etc/apt/.wh..wh..opq"} {
			fi, err := os.Lstat(p(upper, w))
			require.NoError(t, err, "whiteout %s", w)
			require.True(t, fi.Mode().IsRegular() && fi.Size() == 0, "%s: an empty file", w)
		}
		_, err := os.Lstat(p(upper, "etc/passwd"))
		require.NoError(t, err, "copied up")
		_, err = os.Lstat(p(upper, "etc/group"))
		require.NoError(t, err)
		_, err = os.Lstat(p(upper, "usr/bin/gzip"))
		require.True(t, errors.Is(err, os.ErrNotExist), "untouched files stay below")
	})

	t.Run("chroot", func(t *testing.T) {
		script := "useradd -m -s /bin/sh imgtest && echo 'imgtest:pw' | chpasswd && id imgtest && " +
			"mkdir -p /srv/pkg/DEBIAN /srv/pkg/usr/share/imgtest && " +
			"printf 'Package: imgtest\\nVersion: 1.0\\nArchitecture: all\\nMaintainer: t <t@t>\\nDescription: t\\n' > /srv/pkg/DEBIAN/control && " +
			"for i in $(seq 1 200); do echo $i > /srv/pkg/usr/share/imgtest/f$i; done && " +
			"dpkg-deb --build /srv/pkg /srv/imgtest.deb >/dev/null && dpkg -i /srv/imgtest.deb >/dev/null && " +
			"dpkg -s imgtest | grep -q 'install ok installed' && dpkg -r imgtest >/dev/null && " +
			"! dpkg -s imgtest 2>/dev/null | grep -q 'install ok installed' && rm -r /srv/pkg /srv/imgtest.deb && userdel -r imgtest 2>/dev/null; echo done"
		out := chroot(t, mnt, "/bin/sh", "-c", script)
		require.Contains(t, out, "done")
		ctx := exec.Command("chroot", expect, "/bin/sh", "-c", script)
		ctx.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C"}
		eout, err := ctx.CombinedOutput()
		require.NoError(t, err, "%s", eout)
		for _, dir := range []string{"var/log", "var/cache/debconf", "etc/shadow", "etc/shadow-", "etc/gshadow", "etc/gshadow-"} {
			// Logs and password hashes differ from run to run.
			for _, r := range []string{mnt, expect} {
				require.NoError(t, os.RemoveAll(p(r, dir)))
			}
		}
		compareTrees(t, "after useradd, dpkg -i, dpkg -r, userdel under chroot", mnt, expect, start)
	})

	unmount(t, mnt)
	mnt = mountImage(t, img.path(), "--upper", upper)
	compareTrees(t, "remounted", mnt, expect, start)

	t.Run("SIGKILL", func(t *testing.T) {
		data := "durable after SIGKILL\n"
		for _, r := range []string{expect, mnt} {
			require.NoError(t, os.WriteFile(p(r, "srv/durable"), []byte(data), 0o644))
			f, err := os.Open(p(r, "srv/durable"))
			require.NoError(t, err)
			require.NoError(t, f.Sync())
			f.Close()
			require.NoError(t, os.Rename(p(r, "etc/gai.conf"), p(r, "srv/gai.conf")))
		}
		ps := servers(mnt)
		require.Len(t, ps, 1, "one daemon serves the mount")
		require.NoError(t, syscall.Kill(ps[0].pid, syscall.SIGKILL))
		waitNoServer(t, mnt, 10*time.Second)
		out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput()
		require.NoError(t, err, "fusermount3 -u of the dead mount: %s", out)
		mnt2 := mountImage(t, img.path(), "--upper", upper)
		compareTrees(t, "after SIGKILL and remount", mnt2, expect, start)

		// All of it, chroot work included, committed from the live mount:
		// umoci's unpack of the result is what the mount shows, and so is
		// a thin commit mounted back over its base.
		edited := filepath.Join(tmp, "edited.tar")
		commitOK(t, mnt2, "-o", edited)
		requireSameTree(t, unpackCommitted(t, edited, "oci-archive", false), mnt2, "umoci unpack of the live commit")
		thin := filepath.Join(tmp, "thin.tar")
		r := run(t, time.Minute, "commit", "--cache-dir", sharedCache, img.path(), "--upper", upper, "-o", thin)
		requireClearError(t, r, "in use by a writable mount", "MOUNTPOINT")
		commitOK(t, mnt2, "--thin-from", img.path(), "-o", thin)
		fi, err := os.Stat(thin)
		require.NoError(t, err)
		require.Less(t, fi.Size(), int64(10<<20), "the thin tarball carries only the new layer")
		back := mountImage(t, thin, "--base", img.path())
		requireSameTree(t, back, mnt2, "the thin commit mounted with --base")
	})
}

// imageNamed finds a test image by file name.
func imageNamed(t *testing.T, name string) testImage {
	t.Helper()
	for _, img := range allImages {
		if img.name == name {
			return img
		}
	}
	t.Fatalf("no test image %s", name)
	return testImage{}
}

// TestWritableUnprivileged mounts as an ordinary user through fusermount3:
// owners the user cannot give are kept in the upper directory's xattr and
// shown by stat.
func TestWritableUnprivileged(t *testing.T) {
	requireFUSE(t)
	img := imageNamed(t, "tricky-oci.tar")
	user := "imgmount-test"
	if _, err := exec.Command("id", user).CombinedOutput(); err != nil {
		out, err := exec.Command("useradd", "--system", "--no-create-home", user).CombinedOutput()
		require.NoError(t, err, "useradd: %s", out)
	}
	// Debian's udev makes /dev/fuse 0666 so that fusermount3 works for
	// everyone; some containers leave it 0600.
	fi, err := os.Stat("/dev/fuse")
	require.NoError(t, err)
	if fi.Mode().Perm() != 0o666 {
		require.NoError(t, os.Chmod("/dev/fuse", 0o666))
		t.Cleanup(func() { os.Chmod("/dev/fuse", fi.Mode().Perm()) })
	}
	dir, err := os.MkdirTemp("/tmp", "imgmount-unpriv-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, d := range []string{"mnt", "upper", "cache"} {
		require.NoError(t, os.Mkdir(p(dir, d), 0o755))
	}
	bin := p(dir, "imgmount")
	out, err := exec.Command("cp", binPath, bin).CombinedOutput()
	require.NoError(t, err, "%s", out)
	out, err = exec.Command("cp", img.path(), p(dir, "img.tar")).CombinedOutput()
	require.NoError(t, err, "%s", out)
	out, err = exec.Command("chown", "-R", user, dir).CombinedOutput()
	require.NoError(t, err, "%s", out)
	as := func(script string) string {
		t.Helper()
		cmd := exec.Command("setpriv", "--reuid", user, "--regid", user, "--init-groups", "sh", "-c", script)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + dir}
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "as %s: %s\n%s", user, script, out)
		return string(out)
	}
	mnt := p(dir, "mnt")
	as("./imgmount --cache-dir cache --upper upper img.tar mnt")
	t.Cleanup(func() { unmount(t, mnt) })

	// The kernel lets no ordinary user mknod a device; copying one up
	// (chmod) must still keep it a device in the view.
	out2 := as("echo new > mnt/newfile && chown 0:0 mnt/newfile && chmod 4750 mnt/newfile && stat -c '%u:%g %a' mnt/newfile && " +
		"chmod 600 mnt/dev/mynull && stat -c '%F %t,%T %a' mnt/dev/mynull && cat mnt/newfile")
	lines := strings.Split(strings.TrimSpace(out2), "\n")
	require.Len(t, lines, 3, out2)
	require.Equal(t, "0:0 4750", lines[0], "the owner and mode asked for are shown")
	require.Equal(t, "character special file 1,3 600", lines[1], "a copied-up device stays a device")
	require.Equal(t, "new", lines[2])
	v, err := exec.Command("getfattr", "--only-values", "-n", "user.imgmount.stat", p(dir, "upper/newfile")).Output()
	require.NoError(t, err)
	require.Equal(t, "0:0:4750:file", string(v))
	v, err = exec.Command("getfattr", "--only-values", "-n", "user.imgmount.stat", p(dir, "upper/dev/mynull")).Output()
	require.NoError(t, err)
	require.Equal(t, "0:0:0600:char:1:3", string(v))
	as("./imgmount -u mnt")
	require.False(t, isMounted(mnt))
	fi2, err := os.Stat(p(dir, "upper/newfile"))
	require.NoError(t, err)
	require.NotEqual(t, uint32(0), fi2.Sys().(*syscall.Stat_t).Uid, "the real file belongs to the user")
}
