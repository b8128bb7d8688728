package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/tarindex"
	"github.com/stretchr/testify/require"
)

// TestHostileGzipBomb: a small gzip layer that inflates far past its size
// is refused under --max-ratio with a clear error naming the layer, having
// written nothing but what indexes take; under the default limit (which
// no real layer reaches) the same image mounts, served in place.
func TestHostileGzipBomb(t *testing.T) {
	requireFUSE(t)
	zeros := imagetest.LayerTar(t, []imagetest.Entry{imagetest.File("zeros", strings.Repeat("\x00", 256<<20))})
	b := imagetest.Build(t, imagetest.Spec{Tags: []string{"bomb:latest"}, Layers: []imagetest.LayerSpec{{Tar: zeros, Comp: tarindex.CompressionGzip}}})
	img := imagetest.OCI(t, false, b).Write(t, t.TempDir(), "bomb.tar")
	t.Logf("a %d-byte gzip layer of %d bytes", len(b.Blobs[0]), len(zeros))

	cache := t.TempDir()
	mnt := newMountpoint(t)
	t.Cleanup(func() { unmount(t, mnt) })
	r := run(t, 2*time.Minute, "--cache-dir", cache, "--max-ratio", "50", img, mnt)
	require.Equal(t, 7, r.code, "%s", r)
	requireClearError(t, r, "bomb.tar", "layer 0", "decompression bomb", "--max-ratio")
	requireNoMount(t, mnt)
	var written int64
	for _, f := range cacheFiles(t, cache) {
		written += f.size
	}
	require.Less(t, written, int64(64<<10), "a refused bomb leaves (almost) nothing in the cache")

	mnt = mountImage(t, img, "--cache-dir", cache)
	require.Equal(t, int64(256<<20), fileSize(t, mnt+"/zeros"))
	written = 0
	for _, f := range cacheFiles(t, cache) {
		written += f.size
	}
	require.Less(t, written, int64(1<<20), "served in place: checkpoints and an index only")
}
