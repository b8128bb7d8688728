package imagetest

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Upper builds an upper directory by hand, as the writable mount would
// leave it (the format is described in overlay/cow's upperdir.go).
type Upper struct {
	t   *testing.T
	Dir string
}

// NewUpper makes an empty upper directory in a test's temporary directory.
func NewUpper(t *testing.T) *Upper {
	t.Helper()
	u := &Upper{t: t, Dir: filepath.Join(t.TempDir(), "upper")}
	require.NoError(t, os.Mkdir(u.Dir, 0o755))
	return u
}

// Path is rel's path on disk.
func (u *Upper) Path(rel string) string { return filepath.Join(u.Dir, rel) }

func (u *Upper) Mkdir(rel string, mode os.FileMode) {
	u.t.Helper()
	require.NoError(u.t, os.MkdirAll(u.Path(rel), 0o755))
	require.NoError(u.t, os.Chmod(u.Path(rel), mode))
}

func (u *Upper) File(rel, body string, mode os.FileMode) {
	u.t.Helper()
	require.NoError(u.t, os.MkdirAll(filepath.Dir(u.Path(rel)), 0o755))
	require.NoError(u.t, os.WriteFile(u.Path(rel), []byte(body), mode))
	require.NoError(u.t, os.Chmod(u.Path(rel), mode))
}

// Whiteout records the deletion of dir/name.
func (u *Upper) Whiteout(dir, name string) { u.File(filepath.Join(dir, ".wh."+name), "", 0o600) }

// Opaque hides every lower child of dir.
func (u *Upper) Opaque(dir string) { u.File(filepath.Join(dir, ".wh..wh..opq"), "", 0o600) }

func (u *Upper) Link(target, rel string) {
	u.t.Helper()
	require.NoError(u.t, os.Link(u.Path(target), u.Path(rel)))
}

func (u *Upper) Symlink(target, rel string) {
	u.t.Helper()
	require.NoError(u.t, os.Symlink(target, u.Path(rel)))
}

// Xattr sets an xattr on rel (not following symlinks); the test is skipped
// where the filesystem stores no user xattrs.
func (u *Upper) Xattr(rel, name, value string) {
	u.t.Helper()
	err := unix.Lsetxattr(u.Path(rel), name, []byte(value), 0)
	if errors.Is(err, unix.ENOTSUP) {
		u.t.Skipf("the filesystem of %s stores no user xattrs", u.Dir)
	}
	require.NoError(u.t, err, "setxattr %s %s", rel, name)
}

// Mtimes sets every entry's mtime, so that tests can compare headers.
func (u *Upper) Mtimes(t0 time.Time) {
	u.t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(t0.UnixNano()), unix.NsecToTimespec(t0.UnixNano())}
	require.NoError(u.t, filepath.Walk(u.Dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	}))
}

// SampleUpper is an upper directory with one of every kind of edit,
// including what an unprivileged mount records in its xattrs.
func SampleUpper(t *testing.T) *Upper {
	u := NewUpper(t)
	u.Mkdir("etc", 0o755)
	u.File("etc/hostname", "changed\n", 0o644)
	u.Whiteout("etc", "motd")
	u.Whiteout("etc", "apt")
	u.File("etc/zz-new", "new\n", 0o600)
	u.Mkdir("var/cache", 0o755)
	u.Opaque("var/cache")
	u.File("var/cache/fresh", "fresh\n", 0o644)
	u.Whiteout("", "srv")
	u.File("bin/tool", "#!/bin/sh\n", 0o755)
	u.Link("bin/tool", "bin/tool-alias")
	u.Link("bin/tool", "a-first-name")
	u.Symlink("../bin/tool", "etc/tool-link")
	u.Xattr("bin/tool", "user.note", "hi\x00there")
	// What an unprivileged mount records: the owner and setuid bit it
	// could not apply, a capability it could not set, its own bookkeeping.
	u.Xattr("bin/tool", "user.imgmount.stat", "0:0:4755")
	u.Xattr("bin/tool", "user.imgmount.xattr.security.capability", "\x01\x00\x00\x02")
	u.Xattr("bin/tool", "user.imgmount.origin", "42")
	u.Mkdir("dev", 0o755)
	u.File("dev/null0", "", 0o600)
	u.Xattr("dev/null0", "user.imgmount.stat", "0:0:0666:char:1:3")
	u.Mkdir("home/user", 0o700)
	u.Xattr("home/user", "user.imgmount.stat", "1000:1000:0750")
	require.NoError(t, unix.Mkfifo(u.Path("etc/fifo"), 0o640))
	u.Mtimes(time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC))
	return u
}

// Member is a tar member as a test sees it.
type Member struct {
	Hdr  *tar.Header
	Body string
}

// ReadTar reads every member of a tar with Go's archive/tar.
func ReadTar(t *testing.T, b []byte) []Member {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var out []Member
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		require.NoError(t, err)
		body, err := io.ReadAll(tr)
		require.NoError(t, err)
		out = append(out, Member{hdr, string(body)})
	}
}

// Names lists the members' names in order.
func Names(ms []Member) []string {
	var names []string
	for _, m := range ms {
		names = append(names, m.Hdr.Name)
	}
	return names
}

// Find returns the member called name, failing the test if there is none.
func Find(t *testing.T, ms []Member, name string) Member {
	t.Helper()
	for _, m := range ms {
		if m.Hdr.Name == name {
			return m
		}
	}
	t.Fatalf("no member %q in %q", name, Names(ms))
	return Member{}
}
