package integration

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgmount/imgmount/integration/bench"
	"github.com/stretchr/testify/require"
)

// TestCompressedInPlace: every compressed input mounts with nothing
// decompressed to disk but checkpoints and indexes (issue 11), and still
// equals umoci's unpack on every path. The exception is a zstd stream of
// one frame (skopeo's zstd), which cannot be entered mid-way and keeps a
// decompressed copy.
func TestCompressedInPlace(t *testing.T) {
	requireFUSE(t)
	od := oracle(t, debianImages[2])
	uncompressed := fileSize(t, debianImages[0].path())
	zstdFrames := filepath.Join(t.TempDir(), "debian-oci-zstd-frames.tar")
	require.NoError(t, bench.RecompressOCIArchive(debianImages[2].path(), zstdFrames, bench.ZstdFrames))
	for _, c := range []struct {
		name, path   string
		decompressed bool // a single-frame zstd layer: a copy is expected
	}{
		{"docker save | gzip", debianImages[1].path(), false},
		{"oci-archive, gzip layers", debianImages[2].path(), false},
		{"oci-archive, zstd layers of one frame", debianImages[3].path(), true},
		{"oci-archive, zstd layers of 1 MiB frames", zstdFrames, false},
		{"docker 25 containerd store", debianImages[5].path(), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cache := t.TempDir()
			mnt := mountImage(t, c.path, "--cache-dir", cache)
			compareWithOracle(t, mnt, od.rootfs, false)
			var saved, copies int64
			for rel, f := range cacheFiles(t, cache) {
				if strings.HasPrefix(rel, "blobs/") {
					copies += f.size
					continue
				}
				saved += f.size
			}
			t.Logf("cache: %d bytes of indexes and checkpoints (%.2f%% of the uncompressed image), %d bytes of decompressed copies", saved, 100*float64(saved)/float64(uncompressed), copies)
			require.Less(t, saved, uncompressed/20)
			if c.decompressed {
				require.Positive(t, copies)
			} else {
				require.Zero(t, copies, "nothing decompressed to disk")
			}
		})
	}
}
