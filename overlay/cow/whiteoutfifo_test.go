package cow

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// An upper directory holding a fifo under the whiteout name of a lower
// entry (damaged, or hostile: found by FuzzUpperDir) must not hang the
// removal of that entry: the whiteout was opened for writing, which on a
// fifo waits for a reader, with the view locked. The fifo is replaced by
// the whiteout, never opened.
func TestWhiteoutOverFifo(t *testing.T) {
	c, dir := sampleView(t)
	require.NoError(t, unix.Mkdir(filepath.Join(dir, "etc"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "etc", "b"), []byte("upper b\n"), 0o644))
	require.NoError(t, unix.Mkfifo(filepath.Join(dir, "etc", ".wh.b"), 0o644))
	done := make(chan error, 1)
	go func() { done <- c.Unlink("etc/b") }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("rm etc/b over an upper fifo named .wh.b is still blocked after 10 s")
	}
	fi, err := os.Lstat(filepath.Join(dir, "etc", ".wh.b"))
	require.NoError(t, err)
	require.True(t, fi.Mode().IsRegular(), "the whiteout is a regular file")
	_, err = c.Lookup("etc/b")
	require.ErrorIs(t, err, unix.ENOENT)
}
