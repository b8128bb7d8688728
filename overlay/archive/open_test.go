package archive_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/imgmount/imgmount/internal/progress"
	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

// The files of imagetest.Simple's two layers.
var (
	simpleBaseFiles = map[string]string{"etc/os-release": "ID=test\n", "bin/sh": "#!shell"}
	simpleAppFiles  = map[string]string{"app/main": "hello world", "etc/os-release": "ID=app\n"}
)

func TestArchOpenDockerLegacySharedLayer(t *testing.T) {
	dir := t.TempDir()
	app := imagetest.Build(t, imagetest.Simple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	other := imagetest.Build(t, imagetest.Spec{
		Tags:   []string{"other:latest", "other:v2"},
		Layers: []imagetest.LayerSpec{{Files: simpleBaseFiles}, {Files: map[string]string{"other": "x"}}},
	})
	require.Equal(t, app.DiffIDs[0], other.DiffIDs[0], "the base layer is shared")
	lay := imagetest.Legacy(t, app, other)
	links := 0
	for _, f := range lay.Files {
		if f.Link != "" {
			links++
		}
	}
	require.Equal(t, 1, links, "the second image's base layer.tar is a symlink")
	p := lay.Write(t, dir, "app.tar")

	img, err := imagetest.Open(t, p, archive.OpenOptions{Image: "other"})
	require.NoError(t, err)
	require.Equal(t, archive.FormatDockerLegacy, img.Format)
	require.Equal(t, p, img.Archive)
	require.Len(t, img.Images, 2)
	require.Equal(t, []string{"other:latest", "other:v2"}, img.Ref.Tags)
	require.Equal(t, other.ConfigDigest, img.Ref.ConfigDigest)
	require.Equal(t, "linux/amd64", img.Ref.Platform)
	require.Len(t, img.Layers, 2)
	require.Equal(t, other.DiffIDs, []digest.Digest{img.Layers[0].DiffID, img.Layers[1].DiffID})
	require.Equal(t, simpleBaseFiles, imagetest.Files(t, img.Layers[0]))
	require.Equal(t, map[string]string{"other": "x"}, imagetest.Files(t, img.Layers[1]))
	for i, l := range img.Layers {
		require.Equal(t, i, l.Index)
		require.Equal(t, tarindex.CompressionNone, l.Compression)
		require.Equal(t, l.DiffID, l.Digest)
		require.Equal(t, archive.MediaTypeDockerLayer, l.MediaType)
		require.Equal(t, int64(len(other.Tars[i])), l.Size)
		require.Equal(t, l.Size, l.StoredSize)
		fi, err := os.Stat(p)
		require.NoError(t, err)
		require.Len(t, l.Data, int(fi.Size()), "uncompressed layers are served from the outer mapping")
	}

	img, err = imagetest.Open(t, p, archive.OpenOptions{Image: "app:1"})
	require.NoError(t, err)
	require.Equal(t, app.DiffIDs, []digest.Digest{img.Layers[0].DiffID, img.Layers[1].DiffID})
	require.Equal(t, simpleBaseFiles, imagetest.Files(t, img.Layers[0]))
	require.Equal(t, simpleAppFiles, imagetest.Files(t, img.Layers[1]))
	require.Equal(t, "ADD rootfs.tar /", img.Layers[0].CreatedBy)
	require.Equal(t, "COPY main /app/main", img.Layers[1].CreatedBy)
	require.Equal(t, []string{"/app/main"}, img.Config.Config.Entrypoint)
}

func TestArchOpenSelection(t *testing.T) {
	dir := t.TempDir()
	app := imagetest.Build(t, imagetest.Simple([]string{"example.com/team/app:1.0"}, tarindex.CompressionNone, tarindex.CompressionNone))
	other := imagetest.Build(t, imagetest.Spec{Tags: []string{"busybox:latest"}, Layers: []imagetest.LayerSpec{{Files: map[string]string{"x": "y"}}}})
	p := imagetest.Legacy(t, app, other).Write(t, dir, "two.tar")

	_, err := imagetest.Open(t, p, archive.OpenOptions{})
	require.ErrorIs(t, err, archive.ErrAmbiguous)
	require.ErrorContains(t, err, p)
	require.ErrorContains(t, err, "example.com/team/app:1.0")
	require.ErrorContains(t, err, "busybox:latest")
	require.ErrorContains(t, err, "--image")
	t.Log(err)

	for _, q := range []string{
		"busybox", "busybox:latest", // exact and implied :latest
		other.ConfigDigest.String(),                       // full digest
		other.ConfigDigest.Encoded()[:6],                  // bare prefix
		"sha256:" + other.ConfigDigest.Encoded()[:3],      // explicit prefix
		strings.ToUpper(other.ConfigDigest.Encoded()[:8]), // case
	} {
		img, err := imagetest.Open(t, p, archive.OpenOptions{Image: q})
		require.NoError(t, err, q)
		require.Equal(t, other.ConfigDigest, img.Ref.ConfigDigest, q)
		require.Len(t, img.Layers, 1)
	}
	for _, q := range []string{"app:1.0", "team/app:1.0", "example.com/team/app:1.0"} {
		img, err := imagetest.Open(t, p, archive.OpenOptions{Image: q})
		require.NoError(t, err, q)
		require.Equal(t, app.ConfigDigest, img.Ref.ConfigDigest, q)
	}
	for _, q := range []string{"app", "pp:1.0", "busybox:1", "ffffffffff", "sha256:zz"} {
		_, err := imagetest.Open(t, p, archive.OpenOptions{Image: q})
		require.ErrorIs(t, err, archive.ErrNoSuchImage, q)
		require.ErrorContains(t, err, "busybox:latest")
		require.ErrorContains(t, err, "example.com/team/app:1.0")
	}
	_, err = imagetest.Open(t, p, archive.OpenOptions{Image: "busybox", Platform: "linux/arm64"})
	require.ErrorIs(t, err, archive.ErrNoSuchImage)
	require.ErrorContains(t, err, "linux/arm64")
	_, err = imagetest.Open(t, p, archive.OpenOptions{Image: "busybox", Platform: "linux"})
	require.ErrorContains(t, err, "invalid platform")

	// An image named only by an OCI ref.name tag, and an untagged one.
	a := imagetest.Build(t, imagetest.Spec{Tags: []string{"v1"}, Layers: []imagetest.LayerSpec{{Files: map[string]string{"a": "1"}}}})
	b := imagetest.Build(t, imagetest.Spec{Layers: []imagetest.LayerSpec{{Files: map[string]string{"b": "2"}}}})
	p2 := imagetest.OCI(t, false, a, b).Write(t, dir, "oci.tar")
	img, err := imagetest.Open(t, p2, archive.OpenOptions{Image: "v1"})
	require.NoError(t, err)
	require.Equal(t, a.ManifestDesc.Digest, img.Ref.ManifestDigest)
	img, err = imagetest.Open(t, p2, archive.OpenOptions{Image: b.ManifestDesc.Digest.Encoded()[:12]})
	require.NoError(t, err)
	require.Equal(t, b.ConfigDigest, img.Ref.ConfigDigest)
	require.Empty(t, img.Ref.Tags)
	_, err = imagetest.Open(t, p2, archive.OpenOptions{})
	require.ErrorIs(t, err, archive.ErrAmbiguous)
	require.ErrorContains(t, err, "(untagged)")
	require.ErrorContains(t, err, archive.ShortDigest(b.ManifestDesc.Digest))
}

func TestArchOpenDockerOCI(t *testing.T) {
	dir := t.TempDir()
	b := imagetest.Build(t, imagetest.Simple([]string{"app:latest", "app:1"}, tarindex.CompressionGzip, tarindex.CompressionNone))
	p := imagetest.OCI(t, true, b).Write(t, dir, "docker25.tar")

	tasks := &recordedTasks{}
	img, err := imagetest.Open(t, p, archive.OpenOptions{Tasks: tasks})
	require.NoError(t, err)
	require.Equal(t, archive.FormatDockerOCI, img.Format)
	require.Len(t, img.Images, 1, "manifest.json and index.json describe the same image")
	require.ElementsMatch(t, []string{"docker.io/library/app:latest", "docker.io/library/app:1", "app:latest", "app:1"}, img.Ref.Tags)
	require.Equal(t, b.ManifestDesc.Digest, img.Ref.ManifestDigest)
	require.Equal(t, b.ConfigDigest, img.Ref.ConfigDigest)
	require.Len(t, img.Layers, 2)

	l0, l1 := img.Layers[0], img.Layers[1]
	require.Equal(t, tarindex.CompressionGzip, l0.Compression)
	require.Equal(t, b.DiffIDs[0], l0.DiffID)
	require.Equal(t, b.BlobDigests[0], l0.Digest)
	require.Equal(t, ocispec.MediaTypeImageLayerGzip, l0.MediaType)
	require.Equal(t, int64(len(b.Blobs[0])), l0.StoredSize)
	require.Equal(t, int64(len(b.Tars[0])), l0.Size)
	require.Nil(t, l0.Data, "compressed layers are served in place, not from a decompressed copy")
	require.Positive(t, l0.Checkpoints)
	require.Equal(t, simpleBaseFiles, imagetest.Files(t, l0))

	require.Equal(t, tarindex.CompressionNone, l1.Compression)
	require.Equal(t, b.DiffIDs[1], l1.Digest)
	require.Equal(t, simpleAppFiles, imagetest.Files(t, l1))
	// What repack may copy without hashing again: the uncompressed blob was
	// checked against its diff_id; the gzip blob's own digest was not.
	require.True(t, l1.StoredVerified)
	require.False(t, l0.StoredVerified)
	require.Equal(t, []string{"ADD rootfs.tar /", "COPY main /app/main"}, []string{l0.CreatedBy, l1.CreatedBy})

	require.Len(t, tasks.done, 1)
	require.Contains(t, tasks.done[0], "indexing 1/1: layer 0 ("+archive.ShortDigest(b.DiffIDs[0]))
	require.Contains(t, tasks.done[0], "gzip")
	require.Contains(t, tasks.done[0], fmt.Sprintf("%d/%d bytes, ok", len(b.Blobs[0]), len(b.Blobs[0])))

	for _, q := range []string{"app", "app:1", "library/app:1", "docker.io/library/app:1"} {
		_, err := imagetest.Open(t, p, archive.OpenOptions{Image: q})
		require.NoError(t, err, q)
	}
}

func TestArchOpenOCIArchiveGzipZstd(t *testing.T) {
	dir := t.TempDir()
	b := imagetest.Build(t, imagetest.Simple([]string{"localhost/app:2"}, tarindex.CompressionGzip, tarindex.CompressionZstd))
	p := imagetest.OCI(t, false, b).Write(t, dir, "oci.tar")
	cache := t.TempDir()
	for range 2 { // the second time from the cache
		img, err := imagetest.Open(t, p, archive.OpenOptions{CacheDir: cache})
		require.NoError(t, err)
		require.Equal(t, archive.FormatOCI, img.Format)
		require.Equal(t, []string{"localhost/app:2"}, img.Ref.Tags)
		require.Len(t, img.Layers, 2)
		require.Equal(t, tarindex.CompressionGzip, img.Layers[0].Compression)
		require.Equal(t, tarindex.CompressionZstd, img.Layers[1].Compression)
		require.Equal(t, ocispec.MediaTypeImageLayerZstd, img.Layers[1].MediaType)
		require.Equal(t, b.DiffIDs, []digest.Digest{img.Layers[0].DiffID, img.Layers[1].DiffID})
		require.Equal(t, b.BlobDigests, []digest.Digest{img.Layers[0].Digest, img.Layers[1].Digest})
		require.Equal(t, simpleBaseFiles, imagetest.Files(t, img.Layers[0]))
		require.Equal(t, simpleAppFiles, imagetest.Files(t, img.Layers[1]))
		require.Equal(t, "COPY main /app/main", img.Layers[1].CreatedBy)
	}
	// Media types lie; magic bytes decide.
	b2 := imagetest.Build(t, imagetest.Simple(nil, tarindex.CompressionZstd, tarindex.CompressionNone))
	b2.LayerDescs[0].MediaType = ocispec.MediaTypeImageLayerGzip
	b2.LayerDescs[1].MediaType = ocispec.MediaTypeImageLayerGzip
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: b2.ConfigDigest, Size: int64(len(b2.Config))}, Layers: b2.LayerDescs}
	b2.Manifest = imagetest.JSON(t, m)
	b2.ManifestDesc.Digest = digest.FromBytes(b2.Manifest)
	b2.ManifestDesc.Size = int64(len(b2.Manifest))
	img, err := imagetest.Open(t, imagetest.OCI(t, false, b2).Write(t, dir, "lying.tar"), archive.OpenOptions{})
	require.NoError(t, err)
	require.Equal(t, tarindex.CompressionZstd, img.Layers[0].Compression)
	require.Equal(t, tarindex.CompressionNone, img.Layers[1].Compression)
	require.Equal(t, simpleAppFiles, imagetest.Files(t, img.Layers[1]))
}

func TestArchOpenCompressedOuter(t *testing.T) {
	dir := t.TempDir()
	b := imagetest.Build(t, imagetest.Simple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	raw := imagetest.Legacy(t, b).Tar(t)
	for _, comp := range []tarindex.Compression{tarindex.CompressionGzip, tarindex.CompressionZstd} {
		p := imagetest.WriteFile(t, dir, "app.tar."+comp.String(), imagetest.Compress(t, comp, raw))
		img, err := imagetest.Open(t, p, archive.OpenOptions{})
		require.NoError(t, err, comp)
		require.Equal(t, archive.FormatDockerLegacy, img.Format)
		require.Equal(t, simpleAppFiles, imagetest.Files(t, img.Layers[1]))
		require.True(t, img.Layers[1].StoredVerified, "the pass over the outer hashed the layer")
		// Small enough for zstd's one frame to be read in place too (a big
		// one is decompressed: tarindex's TestIndexCompressedZstdFrames).
		require.Nil(t, img.Layers[1].Data, "layers are read in place through the outer's checkpoints")
		img, err = archive.Open(p, archive.OpenOptions{})
		require.NoError(t, err, "in place needs no cache directory")
		require.Equal(t, simpleAppFiles, imagetest.Files(t, img.Layers[1]))
		require.NoError(t, img.Close())
		img, err = imagetest.Open(t, p, archive.OpenOptions{Materialize: true})
		require.NoError(t, err, comp)
		require.Len(t, img.Layers[1].Data, len(raw), "materialize: layers are slices of the decompressed outer tar")
	}
	// An OCI archive gzipped as a whole, with a gzip layer: a stream in
	// a stream, both read in place; and a layer whose bytes do not match
	// its diff_id is refused.
	bz := imagetest.Build(t, imagetest.Simple([]string{"app:1"}, tarindex.CompressionGzip, tarindex.CompressionNone))
	pz := imagetest.WriteFile(t, dir, "oci.tar.gz", imagetest.Compress(t, tarindex.CompressionGzip, imagetest.OCI(t, false, bz).Tar(t)))
	img, err := imagetest.Open(t, pz, archive.OpenOptions{})
	require.NoError(t, err)
	require.Equal(t, simpleBaseFiles, imagetest.Files(t, img.Layers[0]))
	require.Equal(t, simpleAppFiles, imagetest.Files(t, img.Layers[1]))
	require.Nil(t, img.Layers[0].Data)
	badSpec := imagetest.Simple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone)
	badSpec.Mutate = func(c *ocispec.Image) { c.RootFS.DiffIDs[1] = digest.FromString("other") }
	bad := imagetest.Build(t, badSpec)
	raw2 := imagetest.Legacy(t, bad).Tar(t)
	pb := imagetest.WriteFile(t, dir, "bad.tar.gz", imagetest.Compress(t, tarindex.CompressionGzip, raw2))
	_, err = imagetest.Open(t, pb, archive.OpenOptions{})
	require.ErrorIs(t, err, archive.ErrDiffIDMismatch)
	// A truncated compressed outer tarball.
	gz := imagetest.Compress(t, tarindex.CompressionGzip, raw)
	p := imagetest.WriteFile(t, dir, "trunc.tar.gz", gz[:len(gz)/2])
	_, err = imagetest.Open(t, p, archive.OpenOptions{})
	require.Error(t, err)
	require.ErrorContains(t, err, p)
	t.Log(err)
}

func TestArchOpenMultiPlatform(t *testing.T) {
	dir := t.TempDir()
	amd := imagetest.Build(t, imagetest.Spec{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Layers: []imagetest.LayerSpec{{Files: map[string]string{"arch": "amd64"}, Comp: tarindex.CompressionGzip}}})
	arm := imagetest.Build(t, imagetest.Spec{Platform: ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"},
		Layers: []imagetest.LayerSpec{{Files: map[string]string{"arch": "arm64"}, Comp: tarindex.CompressionGzip}}})
	armv7 := imagetest.Build(t, imagetest.Spec{Platform: ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"},
		Layers: []imagetest.LayerSpec{{Files: map[string]string{"arch": "armv7"}, Comp: tarindex.CompressionGzip}}})
	s390 := imagetest.Build(t, imagetest.Spec{Platform: ocispec.Platform{OS: "linux", Architecture: "s390x"},
		Layers: []imagetest.LayerSpec{{Files: map[string]string{"arch": "s390x"}, Comp: tarindex.CompressionGzip}}})
	lay, indexDigest := imagetest.MultiPlatform(t, "docker.io/library/multi:1", amd, arm, armv7, s390)
	lay.DelBlob(arm.BlobDigests[0])       // arm64: manifest and config here, layer absent
	lay.DelBlob(s390.ManifestDesc.Digest) // s390x: not even the manifest
	lay.DelBlob(s390.ConfigDigest)
	lay.DelBlob(s390.BlobDigests[0])
	p := lay.Write(t, dir, "multi.tar")

	img, err := imagetest.Open(t, p, archive.OpenOptions{Platform: "linux/amd64"})
	require.NoError(t, err)
	require.Equal(t, archive.FormatOCI, img.Format)
	require.Equal(t, "linux/amd64", img.Ref.Platform)
	require.Equal(t, []string{"docker.io/library/multi:1"}, img.Ref.Tags)
	require.Equal(t, map[string]string{"arch": "amd64"}, imagetest.Files(t, img.Layers[0]))
	require.Len(t, img.Images, 4, "every platform is listed; the attestation is not")
	var plats []string
	for _, r := range img.Images {
		plats = append(plats, r.Platform)
	}
	require.Equal(t, []string{"linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x"}, plats)

	// Without --platform: only fully present platforms are candidates, then
	// the host's; here amd64 and arm/v7 are present.
	img, err = imagetest.Open(t, p, archive.OpenOptions{Image: "multi:1"})
	switch archive.HostPlatform().Architecture {
	case "amd64":
		require.NoError(t, err)
		require.Equal(t, "linux/amd64", img.Ref.Platform)
	case "arm":
		require.NoError(t, err)
		require.Equal(t, "linux/arm/v7", img.Ref.Platform)
	default:
		require.ErrorIs(t, err, archive.ErrAmbiguous)
		require.ErrorContains(t, err, "--platform")
	}

	img, err = imagetest.Open(t, p, archive.OpenOptions{Platform: "linux/arm"}) // variant not given: any
	require.NoError(t, err)
	require.Equal(t, map[string]string{"arch": "armv7"}, imagetest.Files(t, img.Layers[0]))
	img, err = imagetest.Open(t, p, archive.OpenOptions{Image: indexDigest.Encoded()[:10], Platform: "linux/arm/v7"})
	require.NoError(t, err)
	require.Equal(t, armv7.ManifestDesc.Digest, img.Ref.ManifestDigest)

	_, err = imagetest.Open(t, p, archive.OpenOptions{Platform: "linux/arm64"})
	require.ErrorIs(t, err, archive.ErrLayerMissing)
	require.ErrorContains(t, err, arm.DiffIDs[0].String())
	require.ErrorContains(t, err, "--base")
	t.Log(err)
	_, err = imagetest.Open(t, p, archive.OpenOptions{Platform: "linux/aarch64/v8"}) // aliases
	require.ErrorIs(t, err, archive.ErrLayerMissing)

	_, err = imagetest.Open(t, p, archive.OpenOptions{Platform: "linux/s390x"})
	require.ErrorIs(t, err, archive.ErrLayerMissing)
	require.ErrorContains(t, err, s390.ManifestDesc.Digest.String())
	t.Log(err)

	_, err = imagetest.Open(t, p, archive.OpenOptions{Platform: "windows/amd64"})
	require.ErrorIs(t, err, archive.ErrNoSuchImage)
	require.ErrorContains(t, err, "linux/arm64 [absent]")
	t.Log(err)
}

func TestArchOpenThinWithBase(t *testing.T) {
	dir := t.TempDir()
	base := imagetest.Build(t, imagetest.Spec{Tags: []string{"base:1"}, Layers: []imagetest.LayerSpec{
		{Files: simpleBaseFiles, Comp: tarindex.CompressionGzip},
		{Files: map[string]string{"usr/lib/x": "lib"}},
	}})
	basePath := imagetest.Legacy(t, base).Write(t, dir, "base.tar")
	app := imagetest.Build(t, imagetest.Spec{Tags: []string{"app:1"}, Layers: []imagetest.LayerSpec{
		{Files: simpleBaseFiles, Comp: tarindex.CompressionGzip},
		{Files: map[string]string{"usr/lib/x": "lib"}},
		{Files: simpleAppFiles, Comp: tarindex.CompressionGzip},
	}})
	require.Equal(t, base.DiffIDs, app.DiffIDs[:2])
	lay := imagetest.OCI(t, false, app)
	lay.DelBlob(app.BlobDigests[0])
	lay.DelBlob(app.BlobDigests[1])
	p := lay.Write(t, dir, "thin.tar")

	_, err := imagetest.Open(t, p, archive.OpenOptions{})
	require.ErrorIs(t, err, archive.ErrLayerMissing)
	require.ErrorContains(t, err, p+": layers 0 ("+app.DiffIDs[0].String()+"), 1 ("+app.DiffIDs[1].String()+") are not in the tarball")
	require.ErrorContains(t, err, "--base BASE.tar")
	t.Log(err)

	other := imagetest.Legacy(t, imagetest.Build(t, imagetest.Spec{Layers: []imagetest.LayerSpec{{Files: map[string]string{"z": "z"}}}})).Write(t, dir, "other.tar")
	img, err := imagetest.Open(t, p, archive.OpenOptions{Bases: []string{other, basePath}})
	require.NoError(t, err)
	require.Len(t, img.Layers, 3)
	require.Equal(t, simpleBaseFiles, imagetest.Files(t, img.Layers[0]))
	require.Equal(t, map[string]string{"usr/lib/x": "lib"}, imagetest.Files(t, img.Layers[1]))
	require.Equal(t, simpleAppFiles, imagetest.Files(t, img.Layers[2]))
	require.Equal(t, app.DiffIDs, []digest.Digest{img.Layers[0].DiffID, img.Layers[1].DiffID, img.Layers[2].DiffID})

	_, err = imagetest.Open(t, p, archive.OpenOptions{Bases: []string{other}})
	require.ErrorIs(t, err, archive.ErrLayerMissing)
	require.ErrorContains(t, err, "do not have them either")

	_, err = imagetest.Open(t, p, archive.OpenOptions{Bases: []string{filepath.Join(dir, "nope.tar")}})
	require.ErrorContains(t, err, "nope.tar")
}

func TestArchOpenDiffIDMismatch(t *testing.T) {
	dir := t.TempDir()
	wrong := digest.FromString("something else")
	for _, comp := range []tarindex.Compression{tarindex.CompressionGzip, tarindex.CompressionZstd} {
		im := imagetest.Simple([]string{"app:1"}, tarindex.CompressionNone, comp)
		im.Mutate = func(c *ocispec.Image) { c.RootFS.DiffIDs[1] = wrong }
		p := imagetest.OCI(t, false, imagetest.Build(t, im)).Write(t, dir, "bad-"+comp.String()+".tar")
		cache := t.TempDir()
		_, err := imagetest.Open(t, p, archive.OpenOptions{CacheDir: cache})
		require.ErrorIs(t, err, archive.ErrDiffIDMismatch)
		require.ErrorIs(t, err, tarindex.ErrDigestMismatch)
		require.ErrorContains(t, err, p+": layer 1 ("+wrong.String()+")")
		t.Log(err)
		// Nothing bad was left in the cache: a second attempt fails again.
		_, err = imagetest.Open(t, p, archive.OpenOptions{CacheDir: cache})
		require.ErrorIs(t, err, archive.ErrDiffIDMismatch)
	}
	// An uncompressed blob named by a digest other than its diff_id.
	im := imagetest.Simple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone)
	im.Mutate = func(c *ocispec.Image) { c.RootFS.DiffIDs[0] = wrong }
	p := imagetest.OCI(t, true, imagetest.Build(t, im)).Write(t, dir, "bad-none.tar")
	_, err := imagetest.Open(t, p, archive.OpenOptions{})
	require.ErrorIs(t, err, archive.ErrDiffIDMismatch)
	require.ErrorContains(t, err, "layer 0")
	t.Log(err)
}

func TestArchOpenCorruptLayer(t *testing.T) {
	dir := t.TempDir()
	b := imagetest.Build(t, imagetest.Simple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionGzip))
	lay := imagetest.OCI(t, false, b)
	blob := bytes.Clone(b.Blobs[1])
	for i := 20; i < len(blob)-10; i++ {
		blob[i] ^= 0x55
	}
	lay.Add("blobs/sha256/"+b.BlobDigests[1].Encoded(), blob)
	p := lay.Write(t, dir, "corrupt.tar")
	_, err := imagetest.Open(t, p, archive.OpenOptions{})
	require.ErrorIs(t, err, archive.ErrCorruptLayer)
	require.ErrorContains(t, err, p+": layer 1 ("+b.DiffIDs[1].String()+")")
	t.Log(err)

	// A truncated blob: its size disagrees with the manifest.
	lay.Add("blobs/sha256/"+b.BlobDigests[1].Encoded(), b.Blobs[1][:len(b.Blobs[1])-5])
	p = lay.Write(t, dir, "short.tar")
	_, err = imagetest.Open(t, p, archive.OpenOptions{})
	require.ErrorIs(t, err, archive.ErrCorruptLayer)
	require.ErrorContains(t, err, "layer 1")

	// A layer whose tar escapes the root.
	evil := imagetest.Tar(t, imagetest.TarFile{Name: "../../etc/passwd", Body: []byte("root::0:0")})
	im := imagetest.Spec{Tags: []string{"evil:1"}, Layers: []imagetest.LayerSpec{{Files: map[string]string{"a": "b"}}}}
	eb := imagetest.Build(t, im)
	lay = imagetest.Legacy(t, eb)
	for _, n := range lay.Names {
		if strings.HasSuffix(n, "/layer.tar") {
			lay.Add(n, evil)
		}
	}
	p = lay.Write(t, dir, "evil.tar")
	_, err = imagetest.Open(t, p, archive.OpenOptions{})
	require.ErrorIs(t, err, tarindex.ErrUnsafeName)
	require.ErrorIs(t, err, archive.ErrCorruptLayer)
	require.ErrorContains(t, err, p+": layer 0")
	t.Log(err)
}

func TestArchOpenNotImage(t *testing.T) {
	dir := t.TempDir()
	cases := map[string][]byte{
		"text.txt":  []byte("hello, this is not a tarball at all\n"),
		"empty":     nil,
		"plain.tar": imagetest.Tar(t, imagetest.TarFile{Name: "etc/hosts", Body: []byte("127.0.0.1 localhost")}),
		"nested.tar": imagetest.Tar(t, imagetest.TarFile{Name: "img/", Dir: true},
			imagetest.TarFile{Name: "img/index.json", Body: []byte(`{}`)}),
		"gzipped-text.gz": imagetest.Compress(t, tarindex.CompressionGzip, []byte("just text")),
	}
	for name, body := range cases {
		p := imagetest.WriteFile(t, dir, name, body)
		_, err := imagetest.Open(t, p, archive.OpenOptions{})
		require.ErrorIs(t, err, archive.ErrNotImage, name)
		require.ErrorContains(t, err, p)
		t.Log(err)
	}
	_, err := imagetest.Open(t, filepath.Join(dir, "nested.tar"), archive.OpenOptions{})
	require.ErrorContains(t, err, "img/index.json")
	_, err = imagetest.Open(t, filepath.Join(dir, "plain.tar"), archive.OpenOptions{})
	require.ErrorContains(t, err, "manifest.json")

	_, err = imagetest.Open(t, dir, archive.OpenOptions{})
	require.ErrorIs(t, err, archive.ErrNotImage)
	_, err = imagetest.Open(t, filepath.Join(dir, "absent.tar"), archive.OpenOptions{})
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestArchOpenTruncatedOuter(t *testing.T) {
	dir := t.TempDir()
	b := imagetest.Build(t, imagetest.Simple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	raw := imagetest.Legacy(t, b).Tar(t)
	// Cut inside the first layer's data, and exactly before manifest.json's
	// header (a block boundary: archive/tar sees a clean end there).
	manifestAt := bytes.Index(raw, []byte("manifest.json\x00"))
	require.Positive(t, manifestAt)
	for _, cut := range []int{3000, manifestAt} {
		p := imagetest.WriteFile(t, dir, "trunc.tar", raw[:cut])
		_, err := imagetest.Open(t, p, archive.OpenOptions{})
		require.Error(t, err, cut)
		require.ErrorContains(t, err, p)
		require.ErrorContains(t, err, "truncated")
		t.Log(err)
	}
}

func TestArchOpenMalformedJSON(t *testing.T) {
	dir := t.TempDir()
	b := imagetest.Build(t, imagetest.Simple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	cases := []struct {
		name   string
		layout func() *imagetest.Layout
		want   string
	}{
		{"manifest syntax", func() *imagetest.Layout {
			l := imagetest.Legacy(t, b)
			l.Add("manifest.json", []byte(`[{"Config": "x.json", "Layers": [`))
			return l
		}, "manifest.json"},
		{"manifest type", func() *imagetest.Layout {
			l := imagetest.Legacy(t, b)
			l.Add("manifest.json", []byte(`{"Config": 7}`))
			return l
		}, "manifest.json"},
		{"manifest empty", func() *imagetest.Layout {
			l := imagetest.Legacy(t, b)
			l.Add("manifest.json", []byte(`[]`))
			return l
		}, "manifest.json lists no container images"},
		{"manifest null", func() *imagetest.Layout {
			l := imagetest.Legacy(t, b)
			l.Add("manifest.json", []byte(`[null]`))
			return l
		}, "no Config"},
		{"manifest escaping layer", func() *imagetest.Layout {
			l := imagetest.Legacy(t, b)
			l.Add("manifest.json", []byte(`[{"Config":"`+b.ConfigDigest.Encoded()+`.json","Layers":["../../etc/passwd"]}]`))
			return l
		}, "unsafe"},
		{"legacy config", func() *imagetest.Layout {
			l := imagetest.Legacy(t, b)
			l.Add(b.ConfigDigest.Encoded()+".json", []byte(`{"rootfs": {"diff_ids": 3}}`))
			return l
		}, b.ConfigDigest.Encoded() + ".json"},
		{"index syntax", func() *imagetest.Layout {
			l := imagetest.OCI(t, false, b)
			l.Add("index.json", []byte(`{"manifests": [{"digest": `))
			return l
		}, "index.json"},
		{"index bad digest", func() *imagetest.Layout {
			l := imagetest.OCI(t, false, b)
			l.Add("index.json", []byte(`{"manifests": [{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest": "sha256:../../etc"}]}`))
			return l
		}, "index.json"},
		{"index null entry", func() *imagetest.Layout {
			l := imagetest.OCI(t, false, b)
			l.Add("index.json", []byte(`{"manifests": [null]}`))
			return l
		}, "index.json"},
		{"oci manifest", func() *imagetest.Layout {
			l := imagetest.OCI(t, false, b)
			l.Add("blobs/sha256/"+b.ManifestDesc.Digest.Encoded(), []byte(`{"config": [1,2]}`))
			return l
		}, "blobs/sha256/" + b.ManifestDesc.Digest.Encoded()},
		{"oci config", func() *imagetest.Layout {
			l := imagetest.OCI(t, false, b)
			l.Add("blobs/sha256/"+b.ConfigDigest.Encoded(), []byte(`not json`))
			return l
		}, "blobs/sha256/" + b.ConfigDigest.Encoded()},
		{"config diff_id", func() *imagetest.Layout {
			im := b.Img
			im.Mutate = func(c *ocispec.Image) { c.RootFS.DiffIDs[0] = "sha256:../../../tmp/x" }
			return imagetest.OCI(t, false, imagetest.Build(t, im))
		}, "diff_ids[0]"},
		{"layer count", func() *imagetest.Layout {
			im := b.Img
			im.Mutate = func(c *ocispec.Image) { c.RootFS.DiffIDs = c.RootFS.DiffIDs[:1] }
			return imagetest.OCI(t, false, imagetest.Build(t, im))
		}, "lists 1 diff_ids but its manifest lists 2 layers"},
		{"symlink loop", func() *imagetest.Layout {
			l := imagetest.Legacy(t, b)
			var e imagetest.DockerEntry
			e.Config = b.ConfigDigest.Encoded() + ".json"
			e.Layers = []string{"a/layer.tar", "b/layer.tar"}
			l.Add("manifest.json", imagetest.JSON(t, []imagetest.DockerEntry{e}))
			l.Put(imagetest.TarFile{Name: "a/layer.tar", Link: "../b/layer.tar"})
			l.Put(imagetest.TarFile{Name: "b/layer.tar", Link: "../a/layer.tar"})
			return l
		}, "too many levels of links"},
		{"symlink escape", func() *imagetest.Layout {
			l := imagetest.Legacy(t, b)
			var e imagetest.DockerEntry
			e.Config = b.ConfigDigest.Encoded() + ".json"
			e.Layers = []string{"a/layer.tar", "b/layer.tar"}
			l.Add("manifest.json", imagetest.JSON(t, []imagetest.DockerEntry{e}))
			l.Put(imagetest.TarFile{Name: "a/layer.tar", Link: "../../../etc/passwd"})
			l.Put(imagetest.TarFile{Name: "b/layer.tar", Link: "/a/layer.tar"})
			return l
		}, "escapes the root"},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			p := c.layout().Write(t, dir, "bad.tar")
			_, err := imagetest.Open(t, p, archive.OpenOptions{})
			require.Error(t, err)
			require.ErrorContains(t, err, p)
			require.ErrorContains(t, err, c.want)
			t.Log(err)
		})
	}
}

func TestArchOpenHardlinkedBlob(t *testing.T) {
	// skopeo-style docker-archive: top-level <diffid>.tar files, legacy
	// directories linking to them (here by hardlink and absolute symlink).
	dir := t.TempDir()
	b := imagetest.Build(t, imagetest.Simple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	l := imagetest.NewLayout()
	l.Add(b.DiffIDs[0].Encoded()+".tar", b.Blobs[0])
	l.Add(b.DiffIDs[1].Encoded()+".tar", b.Blobs[1])
	l.Put(imagetest.TarFile{Name: "x/layer.tar", Hard: b.DiffIDs[0].Encoded() + ".tar"})
	l.Put(imagetest.TarFile{Name: "y/layer.tar", Link: "/" + b.DiffIDs[1].Encoded() + ".tar"})
	l.Add(b.ConfigDigest.Encoded()+".json", b.Config)
	l.Add("manifest.json", imagetest.JSON(t, []imagetest.DockerEntry{{Config: b.ConfigDigest.Encoded() + ".json", RepoTags: []string{"app:1"}, Layers: []string{"x/layer.tar", "./y/layer.tar"}}}))
	img, err := imagetest.Open(t, l.Write(t, dir, "skopeo.tar"), archive.OpenOptions{CacheDir: ""})
	require.NoError(t, err)
	require.Equal(t, simpleBaseFiles, imagetest.Files(t, img.Layers[0]))
	require.Equal(t, simpleAppFiles, imagetest.Files(t, img.Layers[1]))

	// Without a cache directory, uncompressed images still open, unchecked.
	img2, err := archive.Open(filepath.Join(dir, "skopeo.tar"), archive.OpenOptions{})
	require.NoError(t, err)
	require.False(t, img2.Layers[0].StoredVerified, "no cache, no check on open")
	require.NoError(t, img2.Close())
}

func TestArchOpenErrorsClose(t *testing.T) {
	// Errors after mappings were made must not leak them or panic; Close on
	// a good image is idempotent.
	dir := t.TempDir()
	b := imagetest.Build(t, imagetest.Simple([]string{"app:1"}, tarindex.CompressionGzip, tarindex.CompressionGzip))
	lay := imagetest.OCI(t, false, b)
	blob := bytes.Clone(b.Blobs[1])
	blob[len(blob)-3] ^= 0xff // bad CRC only: the first layer maps fine
	lay.Add("blobs/sha256/"+b.BlobDigests[1].Encoded(), blob)
	_, err := imagetest.Open(t, lay.Write(t, dir, "x.tar"), archive.OpenOptions{})
	require.Error(t, err)
	require.True(t, errors.Is(err, archive.ErrCorruptLayer) || errors.Is(err, archive.ErrDiffIDMismatch), err)

	img, err := archive.Open(imagetest.OCI(t, false, b).Write(t, dir, "ok.tar"), archive.OpenOptions{CacheDir: t.TempDir()})
	require.NoError(t, err)
	require.NoError(t, img.Close())
	require.NoError(t, img.Close())
}

// TestArchOpenSkopeoUmoci checks tarballs written by real tools: umoci
// builds an OCI layout, skopeo writes it as a docker-archive (top-level
// <diffid>.tar files and legacy symlinks) and as OCI archives (gzip and
// zstd layers).
func TestArchOpenSkopeoUmoci(t *testing.T) {
	umoci, err1 := exec.LookPath("umoci")
	skopeo, err2 := exec.LookPath("skopeo")
	if err1 != nil || err2 != nil || testing.Short() {
		t.Skip("needs umoci and skopeo")
	}
	dir := t.TempDir()
	run := func(name string, args ...string) {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		require.NoError(t, err, "%s %v: %s", name, args, out)
	}
	lay := filepath.Join(dir, "lay")
	for sub, files := range map[string]map[string]string{"r1": simpleBaseFiles, "r2": simpleAppFiles} {
		for n, c := range files {
			p := filepath.Join(dir, sub, n)
			require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
			require.NoError(t, os.WriteFile(p, []byte(c), 0o644))
		}
	}
	run(umoci, "init", "--layout", lay)
	run(umoci, "new", "--image", lay+":t1")
	run(umoci, "insert", "--image", lay+":t1", filepath.Join(dir, "r1"), "/")
	run(umoci, "insert", "--image", lay+":t1", filepath.Join(dir, "r2"), "/")
	run(umoci, "config", "--image", lay+":t1", "--config.entrypoint", "/app/main", "--config.env", "A=b")
	da := filepath.Join(dir, "da.tar")
	oa := filepath.Join(dir, "oa.tar")
	oz := filepath.Join(dir, "oz.tar")
	run(skopeo, "copy", "oci:"+lay+":t1", "docker-archive:"+da+":myapp:v1")
	run(skopeo, "copy", "oci:"+lay+":t1", "oci-archive:"+oa+":myapp:v1")
	run(skopeo, "copy", "--dest-compress-format", "zstd", "oci:"+lay+":t1", "oci-archive:"+oz)

	for _, c := range []struct {
		path   string
		format archive.Format
		comp   tarindex.Compression
		tags   []string
	}{
		{da, archive.FormatDockerLegacy, tarindex.CompressionNone, []string{"docker.io/library/myapp:v1"}},
		{oa, archive.FormatOCI, tarindex.CompressionGzip, []string{"myapp:v1"}},
		{oz, archive.FormatOCI, tarindex.CompressionZstd, []string{}},
	} {
		img, err := imagetest.Open(t, c.path, archive.OpenOptions{})
		require.NoError(t, err, c.path)
		require.Equal(t, c.format, img.Format)
		require.Equal(t, c.tags, img.Ref.Tags)
		require.Equal(t, []string{"/app/main"}, img.Config.Config.Entrypoint)
		require.Len(t, img.Layers, 2)
		require.Equal(t, c.comp, img.Layers[0].Compression)
		require.Equal(t, simpleBaseFiles, imagetest.Files(t, img.Layers[0]))
		require.Equal(t, simpleAppFiles, imagetest.Files(t, img.Layers[1]))
		require.Equal(t, "umoci insert", img.Layers[1].CreatedBy)
		if c.path == da {
			_, err := imagetest.Open(t, c.path, archive.OpenOptions{Image: "myapp:v1"})
			require.NoError(t, err)
		}
	}
}

// Docker 25.0.x wrote tarballs whose OCI half is wrong while manifest.json
// is right (moby#47065: an OCI manifest with no layers; moby#47210:
// "manifests": null when saving by digest). docker load reads manifest.json,
// and so do we.
func TestArchOpenDockerOCIQuirks(t *testing.T) {
	dir := t.TempDir()
	b := imagetest.Build(t, imagetest.Simple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone))

	lay := imagetest.OCI(t, true, b)
	var m ocispec.Manifest
	require.NoError(t, json.Unmarshal(b.Manifest, &m))
	m.Layers = nil
	noLayers := imagetest.JSON(t, m)
	// Docker 25.0.0 could write an OCI manifest that lists no layers, with
	// the layers only in manifest.json.
	lay.Blob(noLayers)
	var idx ocispec.Index
	require.NoError(t, json.Unmarshal(lay.Files["index.json"].Body, &idx))
	idx.Manifests[0].Digest, idx.Manifests[0].Size = digest.FromBytes(noLayers), int64(len(noLayers))
	lay.Add("index.json", imagetest.JSON(t, idx))
	img, err := imagetest.Open(t, lay.Write(t, dir, "nolayers.tar"), archive.OpenOptions{})
	require.NoError(t, err)
	require.Equal(t, archive.FormatDockerOCI, img.Format)
	require.Len(t, img.Layers, 2)
	require.Equal(t, simpleAppFiles, imagetest.Files(t, img.Layers[1]))

	lay = imagetest.OCI(t, true, b)
	lay.Add("index.json", []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":null}`))
	img, err = imagetest.Open(t, lay.Write(t, dir, "nullindex.tar"), archive.OpenOptions{Image: "app:1"})
	require.NoError(t, err)
	require.Equal(t, b.ConfigDigest, img.Ref.ConfigDigest)
	require.Empty(t, img.Ref.ManifestDigest)
	require.Equal(t, []string{"app:1"}, img.Ref.Tags)
	require.Equal(t, simpleBaseFiles, imagetest.Files(t, img.Layers[0]))
}

// An index that lists itself must neither loop nor explode.
func TestArchOpenIndexCycle(t *testing.T) {
	dir := t.TempDir()
	b := imagetest.Build(t, imagetest.Simple(nil, tarindex.CompressionNone, tarindex.CompressionNone))

	// Indexes that list each other: a digest cycle cannot be built from real
	// hashes, so the blobs are named by digests they do not have, and the
	// first one read is refused.
	lay := imagetest.OCI(t, false, b)
	var ia, ib ocispec.Index
	ia.Manifests = []ocispec.Descriptor{b.ManifestDesc}
	da, db := digest.FromString("index a"), digest.FromString("index b")
	for range 40 {
		ia.Manifests = append(ia.Manifests, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: db})
		ib.Manifests = append(ib.Manifests, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: da})
	}
	lay.Add("blobs/sha256/"+da.Encoded(), imagetest.JSON(t, ia))
	lay.Add("blobs/sha256/"+db.Encoded(), imagetest.JSON(t, ib))
	lay.Add("index.json", imagetest.JSON(t, ocispec.Index{Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageIndex, Digest: da, Annotations: map[string]string{ocispec.AnnotationRefName: "cyc"}}}}))
	_, err := imagetest.Open(t, lay.Write(t, dir, "cycle.tar"), archive.OpenOptions{Image: "cyc"})
	require.ErrorIs(t, err, archive.ErrDigestMismatch)
	require.ErrorContains(t, err, da.Encoded())

	// A chain of real indexes, each listing the next 40 times: read once
	// each, not 40^depth times.
	lay = imagetest.OCI(t, false, b)
	next := b.ManifestDesc
	for range archive.MaxIndexDepth - 1 {
		var idx ocispec.Index
		for range 40 {
			idx.Manifests = append(idx.Manifests, next)
		}
		js := imagetest.JSON(t, idx)
		lay.Blob(js)
		next = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(js), Size: int64(len(js))}
	}
	next.Annotations = map[string]string{ocispec.AnnotationRefName: "fan"}
	lay.Add("index.json", imagetest.JSON(t, ocispec.Index{Manifests: []ocispec.Descriptor{next}}))
	img, err := imagetest.Open(t, lay.Write(t, dir, "fan.tar"), archive.OpenOptions{Image: "fan"})
	require.NoError(t, err)
	require.Len(t, img.Images, 1)
	require.Equal(t, simpleAppFiles, imagetest.Files(t, img.Layers[1]))
}

// A blob whose content is another's (image B's config stored under image
// A's config digest) would show one image while naming another: every
// index, manifest and config is checked against the digest that names it.
func TestArchOpenBlobDigests(t *testing.T) {
	dir := t.TempDir()
	a := imagetest.Build(t, imagetest.Simple([]string{"a:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	other := imagetest.Simple([]string{"b:1"}, tarindex.CompressionNone, tarindex.CompressionNone)
	other.Config.User = "evil"
	b := imagetest.Build(t, other)

	for _, tc := range []struct {
		name   string
		layout func() *imagetest.Layout
		member string
		body   []byte
	}{
		{"oci config", func() *imagetest.Layout { return imagetest.OCI(t, false, a) }, "blobs/sha256/" + a.ConfigDigest.Encoded(), b.Config},
		{"docker 25 config", func() *imagetest.Layout { return imagetest.OCI(t, true, a) }, "blobs/sha256/" + a.ConfigDigest.Encoded(), b.Config},
		{"oci manifest", func() *imagetest.Layout { return imagetest.OCI(t, false, a) }, "blobs/sha256/" + a.ManifestDesc.Digest.Encoded(), b.Manifest},
		{"legacy config", func() *imagetest.Layout { return imagetest.Legacy(t, a) }, a.ConfigDigest.Encoded() + ".json", b.Config},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lay := tc.layout()
			lay.Add(tc.member, tc.body)
			_, err := imagetest.Open(t, lay.Write(t, dir, "swapped.tar"), archive.OpenOptions{})
			require.ErrorIs(t, err, archive.ErrDigestMismatch)
			require.ErrorContains(t, err, tc.member)
		})
	}
}

// Two members of one name: skopeo and umoci read the first, tar and docker
// load the last, so the tarball is refused, naming them.
func TestArchOpenDuplicateMembers(t *testing.T) {
	dir := t.TempDir()
	b := imagetest.Build(t, imagetest.Simple([]string{"a:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	other := imagetest.Build(t, imagetest.Spec{Tags: []string{"b:1"}, Layers: []imagetest.LayerSpec{{Files: map[string]string{"x": "y"}}}})
	for _, tc := range []struct{ name, member string }{
		{"manifest.json", "manifest.json"},
		{"a layer", "blobs/sha256/" + b.BlobDigests[0].Encoded()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lay := imagetest.OCI(t, true, b)
			tarball := lay.Tar(t)
			var extra []byte
			if tc.member == "manifest.json" {
				extra = imagetest.OCI(t, true, other).Files["manifest.json"].Body
			} else {
				extra = b.Blobs[1]
			}
			// The second copy goes after the first, before the end blocks.
			dup := imagetest.Tar(t, imagetest.TarFile{Name: tc.member, Body: extra})
			tarball = append(tarball[:len(tarball)-1024], dup...)
			p := imagetest.WriteFile(t, dir, "dup.tar", tarball)
			_, err := imagetest.Open(t, p, archive.OpenOptions{})
			require.ErrorIs(t, err, archive.ErrNotImage)
			require.ErrorContains(t, err, `"`+tc.member+`" more than once`)
		})
	}
	// A directory listed twice is harmless.
	lay := imagetest.Legacy(t, b)
	first := lay.Names[0]
	require.True(t, lay.Files[first].Dir, first)
	tarball := lay.Tar(t)
	tarball = append(tarball[:len(tarball)-1024], imagetest.Tar(t, imagetest.TarFile{Name: first, Dir: true})...)
	_, err := imagetest.Open(t, imagetest.WriteFile(t, dir, "dirs.tar", tarball), archive.OpenOptions{})
	require.NoError(t, err)
}

// An index listing thousands of images gives an error of a few lines.
func TestArchOpenManyImagesShortError(t *testing.T) {
	dir := t.TempDir()
	b := imagetest.Build(t, imagetest.Simple(nil, tarindex.CompressionNone, tarindex.CompressionNone))
	lay := imagetest.OCI(t, false, b)
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	var m ocispec.Manifest
	require.NoError(t, json.Unmarshal(b.Manifest, &m))
	for i := range 5000 {
		m.Annotations = map[string]string{"n": fmt.Sprint(i)} // a distinct manifest each
		js := imagetest.JSON(t, m)
		lay.Blob(js)
		idx.Manifests = append(idx.Manifests, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest,
			Digest: digest.FromBytes(js), Size: int64(len(js)), Annotations: map[string]string{ocispec.AnnotationRefName: fmt.Sprintf("v%d", i)}})
	}
	lay.Add("index.json", imagetest.JSON(t, idx))
	_, err := imagetest.Open(t, lay.Write(t, dir, "many.tar"), archive.OpenOptions{})
	require.ErrorIs(t, err, archive.ErrAmbiguous)
	require.Less(t, len(err.Error()), 2000, err.Error())
	require.ErrorContains(t, err, "and 4990 more (imgmount inspect lists them all)")
}

// Each image's tags are capped in messages too: the first three, each cut
// to 200 bytes, then how many more. Two images of 50,000 tags made a
// "choose one with --image" error 1.6 MB long; one tag of 100 KB made it
// 200 KB. A multi-platform image of 50,000 names, none of its platforms
// the host's, says it has several platforms as briefly.
func TestArchOpenManyTagsShortError(t *testing.T) {
	dir := t.TempDir()
	a := imagetest.Build(t, imagetest.Simple([]string{"a:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	other := imagetest.Build(t, imagetest.Spec{Tags: []string{"b:1"}, Layers: []imagetest.LayerSpec{{Files: map[string]string{"x": "y"}}}})
	withTags := func(tags func(i int) []string) string {
		lay := imagetest.Legacy(t, a, other)
		var m []map[string]any
		require.NoError(t, json.Unmarshal(lay.Files["manifest.json"].Body, &m))
		for i := range m {
			m[i]["RepoTags"] = tags(i)
		}
		lay.Add("manifest.json", imagetest.JSON(t, m))
		return lay.Write(t, dir, fmt.Sprintf("tags-%d.tar", len(tags(0))))
	}

	many := withTags(func(i int) []string {
		tags := make([]string, 50000)
		for j := range tags {
			tags[j] = fmt.Sprintf("img%d:tag-%d", i, j)
		}
		return tags
	})
	_, err := imagetest.Open(t, many, archive.OpenOptions{})
	require.ErrorIs(t, err, archive.ErrAmbiguous)
	require.Less(t, len(err.Error()), 1000, err.Error())
	require.ErrorContains(t, err, "img0:tag-0, img0:tag-1, img0:tag-2, +49997 more (")
	require.ErrorContains(t, err, "img1:tag-0, img1:tag-1, img1:tag-2, +49997 more (")
	_, err = imagetest.Open(t, many, archive.OpenOptions{Image: "nothing-like-it"})
	require.ErrorIs(t, err, archive.ErrNoSuchImage)
	require.Less(t, len(err.Error()), 1000, err.Error())

	long := withTags(func(i int) []string { return []string{fmt.Sprintf("img%d:%s", i, strings.Repeat("é", 50000))} })
	_, err = imagetest.Open(t, long, archive.OpenOptions{})
	require.ErrorIs(t, err, archive.ErrAmbiguous)
	require.Less(t, len(err.Error()), 1000, err.Error())
	require.ErrorContains(t, err, "img0:"+strings.Repeat("é", 97)+"... (")
	require.True(t, utf8.ValidString(err.Error()), "cut at a character boundary")

	var plats []*imagetest.Built
	for _, arch := range []string{"s390x", "ppc64le"} {
		plats = append(plats, imagetest.Build(t, imagetest.Spec{Platform: ocispec.Platform{OS: "linux", Architecture: arch},
			Layers: []imagetest.LayerSpec{{Files: map[string]string{"arch": arch}}}}))
	}
	lay, _ := imagetest.MultiPlatform(t, "multi:1", plats...)
	var idx ocispec.Index
	require.NoError(t, json.Unmarshal(lay.Files["index.json"].Body, &idx))
	d := idx.Manifests[0]
	idx.Manifests = nil
	for j := range 50000 {
		d.Annotations = map[string]string{ocispec.AnnotationRefName: fmt.Sprintf("multi:%d", j)}
		idx.Manifests = append(idx.Manifests, d)
	}
	lay.Add("index.json", imagetest.JSON(t, idx))
	_, err = imagetest.Open(t, lay.Write(t, dir, "multi.tar"), archive.OpenOptions{})
	require.ErrorIs(t, err, archive.ErrAmbiguous)
	require.Less(t, len(err.Error()), 1000, err.Error())
	require.ErrorContains(t, err, "image multi:0, multi:1, multi:2, +49997 more has several platforms")
}

// A layer edited in place, its size and mtime restored, is checked again:
// the ctime, which nobody can set back, is part of the cache's key.
func TestArchOpenEditedInPlaceIsVerifiedAgain(t *testing.T) {
	dir, cache := t.TempDir(), t.TempDir()
	b := imagetest.Build(t, imagetest.Simple([]string{"a:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	p := imagetest.OCI(t, false, b).Write(t, dir, "img.tar")
	_, err := imagetest.Open(t, p, archive.OpenOptions{CacheDir: cache})
	require.NoError(t, err)

	fi, err := os.Stat(p)
	require.NoError(t, err)
	data, err := os.ReadFile(p)
	require.NoError(t, err)
	i := bytes.Index(data, []byte("hello world"))
	require.Positive(t, i)
	copy(data[i:], "HELLO WORLD")
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(data, 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.Chtimes(p, fi.ModTime(), fi.ModTime()))

	_, err = imagetest.Open(t, p, archive.OpenOptions{CacheDir: cache})
	require.ErrorIs(t, err, archive.ErrDiffIDMismatch)
}

// An image with more entries than the memory budget allows stops with a
// clear error before their memory is taken (a 21 MB gzipped layer can hold
// three million files).
func TestArchOpenMaxEntries(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{}
	for i := range 40 {
		files[fmt.Sprintf("f%02d", i)] = "x"
	}
	for _, comp := range []tarindex.Compression{tarindex.CompressionNone, tarindex.CompressionGzip} {
		b := imagetest.Build(t, imagetest.Spec{Tags: []string{"big:1"}, Layers: []imagetest.LayerSpec{
			{Files: map[string]string{"a": "a"}, Comp: comp}, {Files: files, Comp: comp}}})
		p := imagetest.OCI(t, false, b).Write(t, dir, "big.tar")
		_, err := imagetest.Open(t, p, archive.OpenOptions{MaxEntries: 30})
		require.ErrorIs(t, err, archive.ErrTooLarge)
		require.ErrorContains(t, err, "more than 30 entries")
		require.ErrorContains(t, err, "layer 1")
		img, err := imagetest.Open(t, p, archive.OpenOptions{MaxEntries: 41})
		require.NoError(t, err)
		require.Len(t, img.Layers, 2)
		_, err = imagetest.Open(t, p, archive.OpenOptions{MaxEntries: 40})
		require.ErrorIs(t, err, archive.ErrTooLarge, "the budget is for all layers together")
		_, err = imagetest.Open(t, p, archive.OpenOptions{MaxEntries: 2})
		require.ErrorIs(t, err, archive.ErrTooLarge, "the outer tarball's members count too")
		require.ErrorContains(t, err, "members")
	}
}

// recordedTasks keeps what progress tasks reported, one line per finished
// task: its name, bytes done/total, and ok or the error.
type recordedTasks struct {
	mu   sync.Mutex
	done []string
}

func (r *recordedTasks) Start(name string, total int64) progress.Task {
	return &recordedTask{r: r, name: name, total: total}
}

type recordedTask struct {
	r           *recordedTasks
	name        string
	total, done int64
}

func (t *recordedTask) Add(n int64) { t.done += n }

func (t *recordedTask) Done(err error) {
	res := "ok"
	if err != nil {
		res = err.Error()
	}
	t.r.mu.Lock()
	defer t.r.mu.Unlock()
	t.r.done = append(t.r.done, fmt.Sprintf("%s: %d/%d bytes, %s", t.name, t.done, t.total, res))
}

// A compressed layer blob is checked against the digest that names it,
// not only its content against the diff_id: one changed byte of the gzip
// header (same size, same tar once inflated) is refused, in place, with
// -o materialize, and in a docker save | gzip of the layout, whose pass
// over the outer stream hashes every member.
func TestArchOpenCompressedBlobDigest(t *testing.T) {
	dir := t.TempDir()
	b := imagetest.Build(t, imagetest.Simple([]string{"a:1"}, tarindex.CompressionGzip, tarindex.CompressionGzip))
	good := imagetest.OCI(t, false, b).Write(t, dir, "good.tar")
	_, err := imagetest.Open(t, good, archive.OpenOptions{CacheDir: t.TempDir()})
	require.NoError(t, err)

	lay := imagetest.OCI(t, false, b)
	swapped := bytes.Clone(b.Blobs[0])
	swapped[9] ^= 0x7f // the gzip header's OS byte
	lay.Add("blobs/sha256/"+b.BlobDigests[0].Encoded(), swapped)
	bad := lay.Write(t, dir, "swapped.tar")
	for _, mat := range []bool{false, true} {
		_, err := imagetest.Open(t, bad, archive.OpenOptions{CacheDir: t.TempDir(), Materialize: mat})
		require.ErrorIs(t, err, archive.ErrDigestMismatch, "materialize %v", mat)
		require.ErrorContains(t, err, b.BlobDigests[0].String())
	}
	gz := filepath.Join(dir, "swapped.tar.gz")
	out, err := exec.Command("sh", "-c", "gzip -c "+bad+" > "+gz).CombinedOutput()
	require.NoError(t, err, string(out))
	_, err = imagetest.Open(t, gz, archive.OpenOptions{CacheDir: t.TempDir()})
	require.ErrorIs(t, err, archive.ErrDigestMismatch, "docker save | gzip")
}

// The memory budget counts long names: 300 members with 90 KB PAX names
// in a gzip layer are refused under a budget of 8,192 entries rather
// than taking ten times what the budget allows.
func TestArchOpenMaxEntriesCountsNames(t *testing.T) {
	var ms []imagetest.TarFile
	comp := strings.Repeat("c", 200)
	for i := range 300 {
		ms = append(ms, imagetest.TarFile{Name: fmt.Sprintf("x%d/", i) + strings.Repeat(comp+"/", 450) + "f"})
	}
	b := imagetest.Build(t, imagetest.Spec{Tags: []string{"a:1"}, Layers: []imagetest.LayerSpec{{Tar: imagetest.Tar(t, ms...), Comp: tarindex.CompressionGzip}}})
	p := imagetest.OCI(t, false, b).Write(t, t.TempDir(), "long.tar")
	_, err := imagetest.Open(t, p, archive.OpenOptions{CacheDir: t.TempDir(), MaxEntries: 8192})
	require.ErrorIs(t, err, archive.ErrTooLarge)
	require.ErrorContains(t, err, "a name longer than 2048 bytes counting as more")
}

// A whole tarball gzipped (docker save | gzip) that inflates past
// --max-ratio is refused as a bomb (ErrTooLarge, exit status 7) whether it
// is read in place or decompressed into the cache (-o materialize), which
// used to decompress it with no ratio limit at all.
func TestArchOpenOuterBomb(t *testing.T) {
	zeros := imagetest.LayerTar(t, []imagetest.Entry{imagetest.File("zeros", strings.Repeat("\x00", 32<<20))})
	b := imagetest.Build(t, imagetest.Spec{Tags: []string{"bomb:1"}, Layers: []imagetest.LayerSpec{{Tar: zeros}}})
	dir := t.TempDir()
	plain := imagetest.Legacy(t, b).Write(t, dir, "bomb.tar")
	gz := plain + ".gz"
	out, err := exec.Command("sh", "-c", "gzip -c "+plain+" > "+gz).CombinedOutput()
	require.NoError(t, err, string(out))
	for _, mat := range []bool{false, true} {
		_, err := imagetest.Open(t, gz, archive.OpenOptions{CacheDir: t.TempDir(), Materialize: mat, MaxRatio: 50})
		require.ErrorIs(t, err, archive.ErrTooLarge, "materialize %v", mat)
		_, err = imagetest.Open(t, gz, archive.OpenOptions{CacheDir: t.TempDir(), Materialize: mat})
		require.NoError(t, err, "materialize %v: under the default limit", mat)
	}
}
