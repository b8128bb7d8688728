package repack

import (
	"archive/tar"
	"strings"
	"testing"

	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/overlay/union"
	"github.com/stretchr/testify/require"
)

// The free-space estimate of an export or squash is never below what
// WriteTreeTar writes, and not far above it. Deep trees are where it
// matters: each member carries its whole path, in a PAX header past 100
// bytes, so a tiny image of nested directories writes the square of its
// depth (a one-entry layer 10,000 deep writes 107 MB, which counting two
// blocks an entry put at 10 MB).
func TestTreeBytesBoundsWhatIsWritten(t *testing.T) {
	deep := func(depth int) string { return strings.Repeat("a/", depth) }
	long := strings.Repeat("n", 200)
	xattrs := func(h *tar.Header) {
		h.PAXRecords = map[string]string{"SCHILY.xattr.user.note": strings.Repeat("v", 1000), "SCHILY.xattr.security.capability": "\x01\x00"}
	}
	for _, c := range []struct {
		name   string
		layers [][]imagetest.Entry
		raw    []byte // a member added to the first layer
	}{
		// One entry: its 3,000 parents are implied (no layer stores them).
		{name: "implied-parents", layers: [][]imagetest.Entry{{imagetest.File(deep(3000)+"leaf", "x")}}},
		// Stored parents: nanosecond mtimes, xattrs, a large owner.
		{name: "stored-parents", layers: [][]imagetest.Entry{func() []imagetest.Entry {
			var es []imagetest.Entry
			for p := "a"; len(p) < 2*1500; p += "/a" {
				es = append(es, imagetest.Dir(p).With(xattrs).With(func(h *tar.Header) { h.Uid = 1 << 30 }))
			}
			return append(es, imagetest.File(deep(1500)+"leaf", "x"))
		}()}},
		// Long and non-ASCII names and link targets, hardlinks named by a
		// long first name, in a deep directory; a sparse file in it.
		{name: "names-and-links", layers: [][]imagetest.Entry{{
			imagetest.File(deep(300)+long, strings.Repeat("c", 5000)),
			imagetest.Hardlink(deep(300)+"h1", deep(300)+long),
			imagetest.Hardlink("h2", deep(300)+long),
			imagetest.Symlink(deep(300)+"s", strings.Repeat("t/", 2000)),
			imagetest.Symlink("s2", "é"),
			imagetest.File("é", "accent"),
			imagetest.Fifo(deep(300) + "fifo").With(xattrs),
			imagetest.File("shallow", "y"),
		}}, raw: imagetest.RawSparse(deep(40)+"sparse", 1<<30, map[int64]string{0: "start", 1 << 29: "middle", 1<<30 - 3: "end"})},
		// A root with attributes ("./"), a whiteout and an opaque
		// directory from a second layer.
		{name: "layers", layers: [][]imagetest.Entry{
			{imagetest.Dir("."), imagetest.Dir(deep(100) + "d"), imagetest.File(deep(100)+"d/f", "f"), imagetest.File("g", "g")},
			{imagetest.Opaque(deep(100) + "d"), imagetest.File(deep(100)+"d/new", "new"), imagetest.Whiteout("g")},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tars := make([][]byte, len(c.layers))
			for i, es := range c.layers {
				if i == 0 && c.raw != nil {
					tars[i] = imagetest.LayerTar(t, es, c.raw)
				} else {
					tars[i] = imagetest.LayerTar(t, es)
				}
			}
			tree, err := union.BuildUnion(imagetest.Image(t, tars...))
			require.NoError(t, err)
			var cw countingWriter
			_, err = WriteTreeTar(&cw, tree)
			require.NoError(t, err)
			est := treeBytes(tree)
			t.Logf("written %d, estimated %d (%+.2f%%)", cw.n, est, 100*float64(est-cw.n)/float64(cw.n))
			require.GreaterOrEqual(t, est, cw.n, "the estimate is below what is written")
			require.LessOrEqual(t, est, cw.n+cw.n/20+4<<10, "the estimate is far above what is written")
		})
	}
}

// An export of a deep tree that does not fit stops before writing: the
// estimate counts its long names.
func TestExportDeepTreeChecksFreeSpace(t *testing.T) {
	img := imagetest.Layers(t, []imagetest.Entry{imagetest.File(strings.Repeat("a/", 3000)+"leaf", "x")})
	tree, err := union.BuildUnion(img)
	require.NoError(t, err)
	var cw countingWriter
	_, err = WriteTreeTar(&cw, tree)
	require.NoError(t, err)
	free := func(n int64) func() (int64, error) { return func() (int64, error) { return n, nil } }

	var out countingWriter
	_, err = Export(img, &out, ExportOptions{Free: free(cw.n - 1)})
	require.ErrorIs(t, err, ErrNoSpace)
	require.Zero(t, out.n, "nothing written")
	_, err = Export(img, &out, ExportOptions{Free: free(cw.n + cw.n/10)})
	require.NoError(t, err)
	require.Equal(t, cw.n, out.n)
}
