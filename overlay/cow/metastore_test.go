package cow

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestCOWRootlessMeta runs a view with rootlessMeta, as a mount without
// privilege has (the tests run as root, which would chown for real):
// owners, modes and devices are recorded in StatXattr and shown by stat.
func TestCOWRootlessMeta(t *testing.T) {
	c, dir := sampleView(t)
	c.metaStore = rootlessMeta{}
	statXattr := func(rel string) string {
		t.Helper()
		v, err := getxattrPath(filepath.Join(dir, rel), StatXattr)
		require.NoError(t, err)
		return string(v)
	}
	var real unix.Stat_t

	f, st, err := c.Create("etc/new", unix.O_WRONLY, 0o4450, Owner{UID: 1234, GID: 5678})
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.Equal(t, [3]uint32{1234, 5678, unix.S_IFREG | 0o4450}, [3]uint32{st.Uid, st.Gid, st.Mode})
	require.Equal(t, "1234:5678:4450:file", statXattr("etc/new"))
	require.NoError(t, unix.Lstat(filepath.Join(dir, "etc/new"), &real))
	require.Equal(t, uint32(unix.S_IFREG|0o650), real.Mode, "the real mode keeps the owner able to read and write")

	uid := uint32(42)
	st, err = c.Setattr("etc/new", nil, SetAttr{UID: &uid})
	require.NoError(t, err)
	require.Equal(t, [3]uint32{42, 5678, unix.S_IFREG | 0o450}, [3]uint32{st.Uid, st.Gid, st.Mode}, "chown clears setuid")

	st, err = c.Mknod("etc/null", unix.S_IFCHR|0o666, unix.Mkdev(1, 3), Owner{})
	require.NoError(t, err)
	require.Equal(t, uint32(unix.S_IFCHR|0o666), st.Mode)
	require.Equal(t, unix.Mkdev(1, 3), st.Rdev)
	require.Equal(t, "0:0:0666:char:1:3", statXattr("etc/null"))
	require.NoError(t, unix.Lstat(filepath.Join(dir, "etc/null"), &real))
	require.Equal(t, uint32(unix.S_IFREG), real.Mode&unix.S_IFMT, "a device is an empty file in the upper directory")

	_, err = c.Symlink("new", "etc/ln", Owner{UID: 1234, GID: 5678})
	require.NoError(t, err)
	_, err = getxattrPath(filepath.Join(dir, "etc/ln"), StatXattr)
	require.ErrorIs(t, err, unix.ENODATA, "symlinks carry no record")
}
