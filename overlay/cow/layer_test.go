package cow

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func upperLayerTar(t *testing.T, dir string) ([]byte, []string) {
	t.Helper()
	var buf bytes.Buffer
	var warnings []string
	n, err := WriteUpperLayer(&buf, dir, func(s string) { warnings = append(warnings, s) })
	require.NoError(t, err)
	require.Len(t, imagetest.ReadTar(t, buf.Bytes()), n)
	return buf.Bytes(), warnings
}

func TestWriteUpperLayerOrder(t *testing.T) {
	u := imagetest.SampleUpper(t)
	b, _ := upperLayerTar(t, u.Dir)
	require.Equal(t, []string{
		".wh.srv",
		"a-first-name",
		"bin/", "bin/tool", "bin/tool-alias",
		"dev/", "dev/null0",
		"etc/", "etc/.wh.apt", "etc/.wh.motd", "etc/fifo", "etc/hostname", "etc/tool-link", "etc/zz-new",
		"home/", "home/user/",
		"var/", "var/cache/", "var/cache/.wh..wh..opq", "var/cache/fresh",
	}, imagetest.Names(imagetest.ReadTar(t, b)), "whiteouts first in each directory, then the rest by name, depth first; no root entry")
}

func TestWriteUpperLayerAttributes(t *testing.T) {
	u := imagetest.SampleUpper(t)
	b, _ := upperLayerTar(t, u.Dir)
	es := imagetest.ReadTar(t, b)
	t0 := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

	first := imagetest.Find(t, es, "a-first-name")
	require.Equal(t, byte(tar.TypeReg), first.Hdr.Typeflag, "the first name of a hardlinked file carries the content")
	require.Equal(t, "#!/bin/sh\n", first.Body)
	require.Equal(t, int64(0o4755), first.Hdr.Mode, "mode from the stat override, setuid included")
	require.Equal(t, 0, first.Hdr.Uid)
	require.True(t, first.Hdr.ModTime.Equal(t0), "nanosecond mtime kept: %v", first.Hdr.ModTime)
	require.Equal(t, "hi\x00there", first.Hdr.PAXRecords["SCHILY.xattr.user.note"])
	require.Equal(t, "\x01\x00\x00\x02", first.Hdr.PAXRecords["SCHILY.xattr.security.capability"], "a kept xattr is written under its real name")
	for k := range first.Hdr.PAXRecords {
		require.NotContains(t, k, "imgmount", "bookkeeping xattrs never reach the layer")
	}
	for _, name := range []string{"bin/tool", "bin/tool-alias"} {
		e := imagetest.Find(t, es, name)
		require.Equal(t, byte(tar.TypeLink), e.Hdr.Typeflag, name)
		require.Equal(t, "a-first-name", e.Hdr.Linkname, name)
	}

	dev := imagetest.Find(t, es, "dev/null0")
	require.Equal(t, byte(tar.TypeChar), dev.Hdr.Typeflag, "an empty file whose override says char is that device")
	require.Equal(t, int64(1), dev.Hdr.Devmajor)
	require.Equal(t, int64(3), dev.Hdr.Devminor)
	require.Equal(t, int64(0o666), dev.Hdr.Mode)

	home := imagetest.Find(t, es, "home/user/")
	require.Equal(t, byte(tar.TypeDir), home.Hdr.Typeflag)
	require.Equal(t, 1000, home.Hdr.Uid)
	require.Equal(t, 1000, home.Hdr.Gid)
	require.Equal(t, int64(0o750), home.Hdr.Mode)

	wh := imagetest.Find(t, es, "etc/.wh.motd")
	require.Equal(t, byte(tar.TypeReg), wh.Hdr.Typeflag)
	require.Equal(t, int64(0), wh.Hdr.Size)

	link := imagetest.Find(t, es, "etc/tool-link")
	require.Equal(t, byte(tar.TypeSymlink), link.Hdr.Typeflag)
	require.Equal(t, "../bin/tool", link.Hdr.Linkname)

	require.Equal(t, byte(tar.TypeFifo), imagetest.Find(t, es, "etc/fifo").Hdr.Typeflag)
	zz := imagetest.Find(t, es, "etc/zz-new")
	require.Equal(t, int64(0o600), zz.Hdr.Mode, "no override: the real mode")
	require.Equal(t, os.Getuid(), zz.Hdr.Uid, "no override: the real owner")
	for _, e := range es {
		require.Equal(t, tar.FormatPAX, e.Hdr.Format, "%s: PAX", e.Hdr.Name)
		require.Empty(t, e.Hdr.Uname, e.Hdr.Name)
		require.Empty(t, e.Hdr.Gname, e.Hdr.Name)
	}
}

func TestWriteUpperLayerDeterministic(t *testing.T) {
	u := imagetest.SampleUpper(t)
	a, _ := upperLayerTar(t, u.Dir)
	// Reading files changes their atime, and listing order on disk may
	// differ after new entries come and go: neither may change the bytes.
	u.File("tmp-entry", "x", 0o644)
	require.NoError(t, os.Remove(u.Path("tmp-entry")))
	u.Mtimes(time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC))
	b, _ := upperLayerTar(t, u.Dir)
	require.True(t, bytes.Equal(a, b), "two layers of the same upper directory differ")
}

func TestWriteUpperLayerEmptyAndSocket(t *testing.T) {
	u := imagetest.NewUpper(t)
	b, _ := upperLayerTar(t, u.Dir)
	require.Empty(t, imagetest.ReadTar(t, b), "an empty upper directory is an empty layer")

	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	require.NoError(t, unix.Bind(fd, &unix.SockaddrUnix{Name: u.Path("sock")}))
	b, warnings := upperLayerTar(t, u.Dir)
	require.Empty(t, imagetest.ReadTar(t, b))
	require.Len(t, warnings, 1)
	require.Contains(t, warnings[0], "sock")
}

func TestWriteUpperLayerErrors(t *testing.T) {
	u := imagetest.NewUpper(t)
	u.File("dir-claimed", "content", 0o644)
	u.Xattr("dir-claimed", StatXattr, "0:0:0755:dir")
	_, err := WriteUpperLayer(io.Discard, u.Dir, nil)
	require.ErrorContains(t, err, "dir-claimed")
	require.ErrorContains(t, err, "says the entry is a dir")

	u = imagetest.NewUpper(t)
	u.File("bad", "", 0o644)
	u.Xattr("bad", StatXattr, "root:0:0755")
	_, err = WriteUpperLayer(io.Discard, u.Dir, nil)
	require.ErrorContains(t, err, "bad")
	require.ErrorContains(t, err, "malformed")

	_, err = WriteUpperLayer(io.Discard, filepath.Join(t.TempDir(), "absent"), nil)
	require.ErrorContains(t, err, "absent")
}

// A file of the upper directory hard-linked to a file outside it (more
// links than names inside) is refused, naming it: its content is not the
// upper directory's to give (someone with write access to the upper
// directory could otherwise put a host file into the layer).
func TestWriteUpperLayerRefusesLinksOutside(t *testing.T) {
	host := filepath.Join(t.TempDir(), "host-secret")
	require.NoError(t, os.WriteFile(host, []byte("not for the layer\n"), 0o600))

	u := imagetest.NewUpper(t)
	u.File("etc/hosts", "fine", 0o644)
	u.File("bin/a", "linked inside only", 0o755)
	u.Link("bin/a", "bin/b")
	u.Mkdir("etc/ssl", 0o755)
	require.NoError(t, os.Link(host, u.Path("etc/ssl/key")))
	var buf bytes.Buffer
	_, err := WriteUpperLayer(&buf, u.Dir, nil)
	require.ErrorContains(t, err, "etc/ssl/key")
	require.ErrorContains(t, err, "outside the upper directory")
	require.NotContains(t, err.Error(), "bin/a")

	// Also when some of its names are inside.
	require.NoError(t, os.Remove(u.Path("etc/ssl/key")))
	require.NoError(t, os.Link(host, u.Path("etc/key1")))
	require.NoError(t, os.Link(host, u.Path("etc/key2")))
	_, err = WriteUpperLayer(io.Discard, u.Dir, nil)
	require.ErrorContains(t, err, "etc/key1")

	require.NoError(t, os.Remove(host))
	b, _ := upperLayerTar(t, u.Dir)
	require.Equal(t, "etc/key1", imagetest.Find(t, imagetest.ReadTar(t, b), "etc/key2").Hdr.Linkname, "links all inside are fine")
}

// In a directory with the opaque marker, which hides every lower child,
// a ".wh.NAME" hides nothing more: the layer leaves it out.
func TestWriteUpperLayerOpaqueDropsWhiteouts(t *testing.T) {
	u := imagetest.NewUpper(t)
	u.Mkdir("etc/moved", 0o755)
	u.Opaque("etc/moved")
	u.Whiteout("etc/moved", "gone")
	u.File("etc/moved/kept", "k", 0o644)
	u.Whiteout("etc", "old")
	b, _ := upperLayerTar(t, u.Dir)
	require.Equal(t, []string{"etc/", "etc/.wh.old", "etc/moved/", "etc/moved/.wh..wh..opq", "etc/moved/kept"}, imagetest.Names(imagetest.ReadTar(t, b)))
}
