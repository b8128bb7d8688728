package repack

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/imgmount/imgmount/tarindex"
	"github.com/stretchr/testify/require"
)

// A cancelled context stops every kind of run at its first write, with the
// context's error and nothing left in the temporary directory.
func TestCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	img, _, full := simpleImage(t, "docker25")
	u := smallUpper(t)
	for name, run := range map[string]func(w io.Writer, tmp string) error{
		"commit": func(w io.Writer, tmp string) error {
			_, err := Commit(img, w, CommitOptions{Upper: u.Dir, TempDir: tmp, Context: ctx})
			return err
		},
		"squash": func(w io.Writer, tmp string) error {
			_, err := Commit(img, w, CommitOptions{Upper: u.Dir, Squash: true, Compression: tarindex.CompressionZstd, TempDir: tmp, Context: ctx})
			return err
		},
		"export": func(w io.Writer, tmp string) error {
			_, err := Export(img, w, ExportOptions{Upper: u.Dir, TempDir: tmp, Context: ctx})
			return err
		},
		"thin": func(w io.Writer, tmp string) error {
			_, err := Thin(openContents(t, full), w, ThinOptions{Context: ctx})
			return err
		},
		"complete": func(w io.Writer, tmp string) error {
			_, err := Complete(openContents(t, full), nil, w, CompleteOptions{TempDir: tmp, Context: ctx})
			return err
		},
	} {
		tmp := t.TempDir()
		f, err := os.Create(filepath.Join(t.TempDir(), "out.tar"))
		require.NoError(t, err)
		require.ErrorIs(t, run(f, tmp), context.Canceled, name)
		require.NoError(t, f.Close())
		left, _ := os.ReadDir(tmp)
		require.Empty(t, left, "%s: nothing left in the temporary directory", name)
	}
}
