package archive_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/tarindex"
)

// FuzzOpen opens arbitrary tarballs with arbitrary --image and --platform
// choices: every layout parser, the image and platform choice and the layer
// index run on what the fuzzer makes of real layouts. Open must return an
// image or an error, never panic or hang, and an image it returns must be
// readable.
func FuzzOpen(f *testing.F) {
	simple := imagetest.Simple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone)
	b := imagetest.Build(f, simple)
	other := imagetest.Build(f, imagetest.Spec{Tags: []string{"other:2"}, Layers: []imagetest.LayerSpec{{Files: map[string]string{"x": "y"}}}})
	gz := imagetest.Build(f, imagetest.Simple([]string{"gz:1"}, tarindex.CompressionGzip, tarindex.CompressionNone))
	multi, _ := imagetest.MultiPlatform(f, "multi:1", b)
	for _, seed := range [][]byte{
		imagetest.Legacy(f, b, other).Tar(f),
		imagetest.OCI(f, false, b).Tar(f),
		imagetest.OCI(f, true, b, other).Tar(f),
		imagetest.OCI(f, false, gz).Tar(f),
		multi.Tar(f),
	} {
		f.Add(seed, "", "")
		f.Add(seed, "app:1", "linux/amd64")
	}
	f.Fuzz(func(t *testing.T, tarball []byte, image, platform string) {
		defer imagetest.Watchdog(10 * time.Second)()
		dir := t.TempDir()
		p := filepath.Join(dir, "image.tar")
		if err := os.WriteFile(p, tarball, 0o644); err != nil {
			t.Fatal(err)
		}
		img, err := archive.Open(p, archive.OpenOptions{Image: image, Platform: platform, CacheDir: filepath.Join(dir, "cache")})
		if err != nil {
			return
		}
		defer img.Close()
		buf := make([]byte, 64)
		for _, l := range img.Layers {
			for i := range l.TarIndex.Entries {
				_, _ = l.TarIndex.Entries[i].ReadAt(l.Data, buf, 0)
			}
		}
		_ = archive.Inspect(img, nil).WriteText(discard{})
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
