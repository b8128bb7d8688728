package repack

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/overlay/union"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// countingWriter counts what is written and keeps none of it.
type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// Sparse files leave the export as sparse members: their holes are not
// written, and Go's archive/tar and GNU tar read them back exactly.
func TestExportSparse(t *testing.T) {
	frags := map[int64]string{0: "start", 4 << 20: "middle", 8<<20 - 3: "end"}
	img := imagetest.Image(t, imagetest.LayerTar(t, []imagetest.Entry{
		imagetest.Dir("d"),
		imagetest.File("d/plain", "plain file"),
	}, imagetest.RawSparse("d/sparse", 8<<20, frags), imagetest.RawSparse("d/huge", 1<<40, map[int64]string{1<<40 - 4: "tail"})))
	tree, err := union.BuildUnion(img)
	require.NoError(t, err)

	var cw countingWriter
	_, err = WriteTreeTar(&cw, tree)
	require.NoError(t, err)
	require.Less(t, cw.n, int64(64<<10), "a 1 TiB file of holes takes a few blocks")

	var buf bytes.Buffer
	_, err = WriteTreeTar(&buf, &union.Tree{Root: tree.Root.Lookup("d"), Layers: tree.Layers})
	require.NoError(t, err)
	want := make([]byte, 8<<20)
	for off, s := range frags {
		copy(want[off:], s)
	}
	tr := tar.NewReader(bytes.NewReader(buf.Bytes()))
	seen := map[string]int64{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		seen[hdr.Name] = hdr.Size
		if hdr.Name == "sparse" {
			got, err := io.ReadAll(tr)
			require.NoError(t, err)
			require.True(t, bytes.Equal(want, got), "sparse content read back by archive/tar")
		}
	}
	require.Equal(t, map[string]int64{"./": 0, "plain": 10, "sparse": 8 << 20, "huge": 1 << 40}, seen)

	// GNU tar, the other reader people use, extracts it with its holes.
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("no tar")
	}
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "x.tar"), buf.Bytes(), 0o644))
	out := filepath.Join(dir, "out")
	require.NoError(t, os.Mkdir(out, 0o755))
	cmd := exec.Command("tar", "-xf", "../x.tar", "--exclude", "huge")
	cmd.Dir = out
	msg, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", msg)
	got, err := os.ReadFile(filepath.Join(out, "sparse"))
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "sparse content extracted by GNU tar")
	var st unix.Stat_t
	require.NoError(t, unix.Stat(filepath.Join(out, "sparse"), &st))
	require.Less(t, st.Blocks*512, int64(1<<20), "extracted with its holes")
}

// A layer that ends inside a file's content is a corrupt layer, whether
// the export slices its mapping or reads it (a compressed layer).
func TestExportTruncatedLayer(t *testing.T) {
	for _, mapped := range []bool{true, false} {
		tree, err := union.BuildUnion(imagetest.Layers(t, []imagetest.Entry{imagetest.File("f", strings.Repeat("x", 5000))}))
		require.NoError(t, err)
		l := *tree.Layers[0]
		cut := l.Data[:tree.Find("f").Entry.Offset+3000]
		l.Data, l.Content = nil, bytes.NewReader(cut)
		if mapped {
			l.Data = cut
		}
		tree.Layers[0] = &l
		_, err = WriteTreeTar(io.Discard, tree)
		require.ErrorIs(t, err, archive.ErrCorruptLayer, "mapped %v", mapped)
	}
}

// A deep tree exports in work proportional to what it writes: each
// entry's name is built from its parent's, not by walking up from every
// node. Time is no measure on a loaded machine; what is allocated is:
// building every name from the root again (the regression, 3.7 s at this
// depth) allocates hundreds of times the output, in thousands of
// allocations per entry, where archive/tar's PAX headers take about 9
// times the output and 35 allocations an entry.
func TestExportDeepTree(t *testing.T) {
	const depth = 3000
	var entries []imagetest.Entry
	p := ""
	for range depth {
		p += "d/"
		entries = append(entries, imagetest.Dir(strings.TrimSuffix(p, "/")))
	}
	entries = append(entries, imagetest.File(p+"leaf", "deep"))
	tree, err := union.BuildUnion(imagetest.Layers(t, entries))
	require.NoError(t, err)

	var cw countingWriter
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	n, err := WriteTreeTar(&cw, tree)
	runtime.ReadMemStats(&after)
	require.NoError(t, err)
	require.Equal(t, depth+1, n)
	allocated, allocs := after.TotalAlloc-before.TotalAlloc, after.Mallocs-before.Mallocs
	t.Logf("depth %d: %d bytes written; %d bytes allocated (%.1f times), %d allocations (%.1f an entry)",
		depth, cw.n, allocated, float64(allocated)/float64(cw.n), allocs, float64(allocs)/float64(n))
	require.Less(t, allocated, uint64(40*cw.n), "bytes allocated against bytes written: names are built from the root again")
	require.Less(t, allocs, uint64(200*n), "allocations an entry: names are built from the root again")

	var buf bytes.Buffer
	_, err = WriteTreeTar(&buf, tree)
	require.NoError(t, err)
	es := imagetest.ReadTar(t, buf.Bytes())
	require.Equal(t, p+"leaf", es[len(es)-1].Hdr.Name)
	require.Equal(t, "deep", es[len(es)-1].Body)
	require.Equal(t, depth*2+4, len(tree.Find(strings.TrimSuffix(p, "/")+"/leaf").Path()))
}

// An export or commit that would not fit in the free space stops before
// writing: a 1 TiB file of holes exports in a few blocks, but a 1 MiB file
// does not fit in 100 KiB.
func TestOutputsCheckFreeSpace(t *testing.T) {
	img := imagetest.Image(t, imagetest.LayerTar(t, []imagetest.Entry{
		imagetest.File("big", strings.Repeat("x", 1<<20)),
	}, imagetest.RawSparse("holes", 1<<40, map[int64]string{0: "a"})))
	free := func(n int64) func() (int64, error) { return func() (int64, error) { return n, nil } }

	var cw countingWriter
	_, err := Export(img, &cw, ExportOptions{Free: free(100 << 10)})
	require.ErrorIs(t, err, ErrNoSpace)
	require.Zero(t, cw.n, "nothing written")
	_, err = Export(img, &cw, ExportOptions{Free: free(2 << 20)})
	require.NoError(t, err)

	img.ConfigRaw = []byte(`{"rootfs":{"type":"layers","diff_ids":["` + img.Layers[0].DiffID.String() + `"]}}`)
	img.Layers[0].Stored = img.Layers[0].Data
	_, err = Commit(img, io.Discard, CommitOptions{Free: free(100 << 10), TempDir: t.TempDir()})
	require.ErrorIs(t, err, ErrNoSpace)
	_, err = Commit(img, io.Discard, CommitOptions{Squash: true, Free: free(100 << 10), TempDir: t.TempDir()})
	require.ErrorIs(t, err, ErrNoSpace)
	require.ErrorContains(t, err, "the squashed layer needs about")
}
