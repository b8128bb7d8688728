package overlay

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

// Test helpers for the repack tests start with "rp".

// rpUpper builds an upper directory by hand, as the writable mount would
// leave it.
type rpUpper struct {
	t   *testing.T
	dir string
}

func rpNewUpper(t *testing.T) *rpUpper {
	t.Helper()
	u := &rpUpper{t: t, dir: filepath.Join(t.TempDir(), "upper")}
	require.NoError(t, os.Mkdir(u.dir, 0o755))
	return u
}

func (u *rpUpper) p(rel string) string { return filepath.Join(u.dir, rel) }

func (u *rpUpper) mkdir(rel string, mode os.FileMode) {
	u.t.Helper()
	require.NoError(u.t, os.MkdirAll(u.p(rel), 0o755))
	require.NoError(u.t, os.Chmod(u.p(rel), mode))
}

func (u *rpUpper) file(rel, body string, mode os.FileMode) {
	u.t.Helper()
	require.NoError(u.t, os.MkdirAll(filepath.Dir(u.p(rel)), 0o755))
	require.NoError(u.t, os.WriteFile(u.p(rel), []byte(body), mode))
	require.NoError(u.t, os.Chmod(u.p(rel), mode))
}

func (u *rpUpper) whiteout(dir, name string) {
	u.file(filepath.Join(dir, WhiteoutPrefix+name), "", 0o600)
}
func (u *rpUpper) opaque(dir string) { u.file(filepath.Join(dir, OpaqueMarker), "", 0o600) }

func (u *rpUpper) link(target, rel string) {
	u.t.Helper()
	require.NoError(u.t, os.Link(u.p(target), u.p(rel)))
}

func (u *rpUpper) symlink(target, rel string) {
	u.t.Helper()
	require.NoError(u.t, os.Symlink(target, u.p(rel)))
}

func (u *rpUpper) xattr(rel, name, value string) {
	u.t.Helper()
	err := unix.Lsetxattr(u.p(rel), name, []byte(value), 0)
	if errors.Is(err, unix.ENOTSUP) {
		u.t.Skipf("the filesystem of %s stores no user xattrs", u.dir)
	}
	require.NoError(u.t, err, "setxattr %s %s", rel, name)
}

// mtime sets every entry's mtime, so that tests can compare headers.
func (u *rpUpper) mtimes(t0 time.Time) {
	u.t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(t0.UnixNano()), unix.NsecToTimespec(t0.UnixNano())}
	require.NoError(u.t, filepath.Walk(u.dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	}))
}

// rpEntry is a tar member as a test sees it.
type rpEntry struct {
	hdr  *tar.Header
	body string
}

func rpReadTar(t *testing.T, b []byte) []rpEntry {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var out []rpEntry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		require.NoError(t, err)
		body, err := io.ReadAll(tr)
		require.NoError(t, err)
		out = append(out, rpEntry{hdr, string(body)})
	}
}

func rpNames(es []rpEntry) []string {
	var names []string
	for _, e := range es {
		names = append(names, e.hdr.Name)
	}
	return names
}

func rpFind(t *testing.T, es []rpEntry, name string) rpEntry {
	t.Helper()
	for _, e := range es {
		if e.hdr.Name == name {
			return e
		}
	}
	t.Fatalf("no member %q in %q", name, rpNames(es))
	return rpEntry{}
}

func rpLayer(t *testing.T, dir string) ([]byte, []string) {
	t.Helper()
	var buf bytes.Buffer
	var warnings []string
	n, err := WriteUpperLayer(&buf, dir, func(s string) { warnings = append(warnings, s) })
	require.NoError(t, err)
	require.Len(t, rpReadTar(t, buf.Bytes()), n)
	return buf.Bytes(), warnings
}

// rpSampleUpper is an upper directory with one of every kind of edit.
func rpSampleUpper(t *testing.T) *rpUpper {
	u := rpNewUpper(t)
	u.mkdir("etc", 0o755)
	u.file("etc/hostname", "changed\n", 0o644)
	u.whiteout("etc", "motd")
	u.whiteout("etc", "apt")
	u.file("etc/zz-new", "new\n", 0o600)
	u.mkdir("var/cache", 0o755)
	u.opaque("var/cache")
	u.file("var/cache/fresh", "fresh\n", 0o644)
	u.whiteout("", "srv")
	u.file("bin/tool", "#!/bin/sh\n", 0o755)
	u.link("bin/tool", "bin/tool-alias")
	u.link("bin/tool", "a-first-name")
	u.symlink("../bin/tool", "etc/tool-link")
	u.xattr("bin/tool", "user.note", "hi\x00there")
	// What an unprivileged mount records: the owner and setuid bit it
	// could not apply, a capability it could not set, its own bookkeeping.
	u.xattr("bin/tool", StatXattr, "0:0:4755")
	u.xattr("bin/tool", XattrPrefix+"security.capability", "\x01\x00\x00\x02")
	u.xattr("bin/tool", "user.imgmount.origin", "42")
	u.mkdir("dev", 0o755)
	u.file("dev/null0", "", 0o600)
	u.xattr("dev/null0", StatXattr, "0:0:0666:char:1:3")
	u.mkdir("home/user", 0o700)
	u.xattr("home/user", StatXattr, "1000:1000:0750")
	require.NoError(t, unix.Mkfifo(u.p("etc/fifo"), 0o640))
	u.mtimes(time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC))
	return u
}

func TestWriteUpperLayerOrder(t *testing.T) {
	u := rpSampleUpper(t)
	b, _ := rpLayer(t, u.dir)
	require.Equal(t, []string{
		".wh.srv",
		"a-first-name",
		"bin/", "bin/tool", "bin/tool-alias",
		"dev/", "dev/null0",
		"etc/", "etc/.wh.apt", "etc/.wh.motd", "etc/fifo", "etc/hostname", "etc/tool-link", "etc/zz-new",
		"home/", "home/user/",
		"var/", "var/cache/", "var/cache/.wh..wh..opq", "var/cache/fresh",
	}, rpNames(rpReadTar(t, b)), "whiteouts first in each directory, then the rest by name, depth first; no root entry")
}

func TestWriteUpperLayerAttributes(t *testing.T) {
	u := rpSampleUpper(t)
	b, _ := rpLayer(t, u.dir)
	es := rpReadTar(t, b)
	t0 := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

	first := rpFind(t, es, "a-first-name")
	require.Equal(t, byte(tar.TypeReg), first.hdr.Typeflag, "the first name of a hardlinked file carries the content")
	require.Equal(t, "#!/bin/sh\n", first.body)
	require.Equal(t, int64(0o4755), first.hdr.Mode, "mode from the stat override, setuid included")
	require.Equal(t, 0, first.hdr.Uid)
	require.True(t, first.hdr.ModTime.Equal(t0), "nanosecond mtime kept: %v", first.hdr.ModTime)
	require.Equal(t, "hi\x00there", first.hdr.PAXRecords["SCHILY.xattr.user.note"])
	require.Equal(t, "\x01\x00\x00\x02", first.hdr.PAXRecords["SCHILY.xattr.security.capability"], "a kept xattr is written under its real name")
	for k := range first.hdr.PAXRecords {
		require.NotContains(t, k, "imgmount", "bookkeeping xattrs never reach the layer")
	}
	for _, name := range []string{"bin/tool", "bin/tool-alias"} {
		e := rpFind(t, es, name)
		require.Equal(t, byte(tar.TypeLink), e.hdr.Typeflag, name)
		require.Equal(t, "a-first-name", e.hdr.Linkname, name)
	}

	dev := rpFind(t, es, "dev/null0")
	require.Equal(t, byte(tar.TypeChar), dev.hdr.Typeflag, "an empty file whose override says char is that device")
	require.Equal(t, int64(1), dev.hdr.Devmajor)
	require.Equal(t, int64(3), dev.hdr.Devminor)
	require.Equal(t, int64(0o666), dev.hdr.Mode)

	home := rpFind(t, es, "home/user/")
	require.Equal(t, byte(tar.TypeDir), home.hdr.Typeflag)
	require.Equal(t, 1000, home.hdr.Uid)
	require.Equal(t, 1000, home.hdr.Gid)
	require.Equal(t, int64(0o750), home.hdr.Mode)

	wh := rpFind(t, es, "etc/.wh.motd")
	require.Equal(t, byte(tar.TypeReg), wh.hdr.Typeflag)
	require.Equal(t, int64(0), wh.hdr.Size)

	link := rpFind(t, es, "etc/tool-link")
	require.Equal(t, byte(tar.TypeSymlink), link.hdr.Typeflag)
	require.Equal(t, "../bin/tool", link.hdr.Linkname)

	require.Equal(t, byte(tar.TypeFifo), rpFind(t, es, "etc/fifo").hdr.Typeflag)
	zz := rpFind(t, es, "etc/zz-new")
	require.Equal(t, int64(0o600), zz.hdr.Mode, "no override: the real mode")
	require.Equal(t, os.Getuid(), zz.hdr.Uid, "no override: the real owner")
	for _, e := range es {
		require.Equal(t, tar.FormatPAX, e.hdr.Format, "%s: PAX", e.hdr.Name)
		require.Empty(t, e.hdr.Uname, e.hdr.Name)
		require.Empty(t, e.hdr.Gname, e.hdr.Name)
	}
}

func TestWriteUpperLayerDeterministic(t *testing.T) {
	u := rpSampleUpper(t)
	a, _ := rpLayer(t, u.dir)
	// Reading files changes their atime, and listing order on disk may
	// differ after new entries come and go: neither may change the bytes.
	u.file("tmp-entry", "x", 0o644)
	require.NoError(t, os.Remove(u.p("tmp-entry")))
	u.mtimes(time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC))
	b, _ := rpLayer(t, u.dir)
	require.True(t, bytes.Equal(a, b), "two layers of the same upper directory differ")
}

func TestWriteUpperLayerEmptyAndSocket(t *testing.T) {
	u := rpNewUpper(t)
	b, _ := rpLayer(t, u.dir)
	require.Empty(t, rpReadTar(t, b), "an empty upper directory is an empty layer")

	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	require.NoError(t, unix.Bind(fd, &unix.SockaddrUnix{Name: u.p("sock")}))
	b, warnings := rpLayer(t, u.dir)
	require.Empty(t, rpReadTar(t, b))
	require.Len(t, warnings, 1)
	require.Contains(t, warnings[0], "sock")
}

func TestWriteUpperLayerErrors(t *testing.T) {
	u := rpNewUpper(t)
	u.file("dir-claimed", "content", 0o644)
	u.xattr("dir-claimed", StatXattr, "0:0:0755:dir")
	_, err := WriteUpperLayer(io.Discard, u.dir, nil)
	require.ErrorContains(t, err, "dir-claimed")
	require.ErrorContains(t, err, "says the entry is a dir")

	u = rpNewUpper(t)
	u.file("bad", "", 0o644)
	u.xattr("bad", StatXattr, "root:0:0755")
	_, err = WriteUpperLayer(io.Discard, u.dir, nil)
	require.ErrorContains(t, err, "bad")
	require.ErrorContains(t, err, "malformed")

	_, err = WriteUpperLayer(io.Discard, filepath.Join(t.TempDir(), "absent"), nil)
	require.ErrorContains(t, err, "absent")
}
