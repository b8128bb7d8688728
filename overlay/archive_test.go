package overlay

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

var (
	archBaseFiles = map[string]string{"etc/os-release": "ID=test\n", "bin/sh": "#!shell"}
	archAppFiles  = map[string]string{"app/main": "hello world", "etc/os-release": "ID=app\n"}
)

func TestArchOpenDockerLegacySharedLayer(t *testing.T) {
	dir := t.TempDir()
	app := archBuild(t, archSimple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	other := archBuild(t, archImage{
		Tags:   []string{"other:latest", "other:v2"},
		Layers: []archLayerSpec{{Files: archBaseFiles}, {Files: map[string]string{"other": "x"}}},
	})
	require.Equal(t, app.DiffIDs[0], other.DiffIDs[0], "the base layer is shared")
	lay := archLegacy(t, app, other)
	links := 0
	for _, f := range lay.files {
		if f.Link != "" {
			links++
		}
	}
	require.Equal(t, 1, links, "the second image's base layer.tar is a symlink")
	p := lay.write(t, dir, "app.tar")

	img, err := archOpen(t, p, OpenOptions{Image: "other"})
	require.NoError(t, err)
	require.Equal(t, FormatDockerLegacy, img.Format)
	require.Equal(t, p, img.Archive)
	require.Len(t, img.Images, 2)
	require.Equal(t, []string{"other:latest", "other:v2"}, img.Ref.Tags)
	require.Equal(t, other.ConfigDigest, img.Ref.ConfigDigest)
	require.Equal(t, "linux/amd64", img.Ref.Platform)
	require.Len(t, img.Layers, 2)
	require.Equal(t, other.DiffIDs, []digest.Digest{img.Layers[0].DiffID, img.Layers[1].DiffID})
	require.Equal(t, archBaseFiles, archFiles(t, img.Layers[0]))
	require.Equal(t, map[string]string{"other": "x"}, archFiles(t, img.Layers[1]))
	for i, l := range img.Layers {
		require.Equal(t, i, l.Index)
		require.Equal(t, tarindex.CompressionNone, l.Compression)
		require.Equal(t, l.DiffID, l.Digest)
		require.Equal(t, mediaTypeDockerLayer, l.MediaType)
		require.Equal(t, int64(len(other.Tars[i])), l.Size)
		require.Equal(t, l.Size, l.StoredSize)
		fi, err := os.Stat(p)
		require.NoError(t, err)
		require.Len(t, l.Data, int(fi.Size()), "uncompressed layers are served from the outer mapping")
	}

	img, err = archOpen(t, p, OpenOptions{Image: "app:1"})
	require.NoError(t, err)
	require.Equal(t, app.DiffIDs, []digest.Digest{img.Layers[0].DiffID, img.Layers[1].DiffID})
	require.Equal(t, archBaseFiles, archFiles(t, img.Layers[0]))
	require.Equal(t, archAppFiles, archFiles(t, img.Layers[1]))
	require.Equal(t, "ADD rootfs.tar /", img.Layers[0].CreatedBy)
	require.Equal(t, "COPY main /app/main", img.Layers[1].CreatedBy)
	require.Equal(t, []string{"/app/main"}, img.Config.Config.Entrypoint)
}

func TestArchOpenSelection(t *testing.T) {
	dir := t.TempDir()
	app := archBuild(t, archSimple([]string{"example.com/team/app:1.0"}, tarindex.CompressionNone, tarindex.CompressionNone))
	other := archBuild(t, archImage{Tags: []string{"busybox:latest"}, Layers: []archLayerSpec{{Files: map[string]string{"x": "y"}}}})
	p := archLegacy(t, app, other).write(t, dir, "two.tar")

	_, err := archOpen(t, p, OpenOptions{})
	require.ErrorIs(t, err, ErrAmbiguous)
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
		img, err := archOpen(t, p, OpenOptions{Image: q})
		require.NoError(t, err, q)
		require.Equal(t, other.ConfigDigest, img.Ref.ConfigDigest, q)
		require.Len(t, img.Layers, 1)
	}
	for _, q := range []string{"app:1.0", "team/app:1.0", "example.com/team/app:1.0"} {
		img, err := archOpen(t, p, OpenOptions{Image: q})
		require.NoError(t, err, q)
		require.Equal(t, app.ConfigDigest, img.Ref.ConfigDigest, q)
	}
	for _, q := range []string{"app", "pp:1.0", "busybox:1", "ffffffffff", "sha256:zz"} {
		_, err := archOpen(t, p, OpenOptions{Image: q})
		require.ErrorIs(t, err, ErrNoSuchImage, q)
		require.ErrorContains(t, err, "busybox:latest")
		require.ErrorContains(t, err, "example.com/team/app:1.0")
	}
	_, err = archOpen(t, p, OpenOptions{Image: "busybox", Platform: "linux/arm64"})
	require.ErrorIs(t, err, ErrNoSuchImage)
	require.ErrorContains(t, err, "linux/arm64")
	_, err = archOpen(t, p, OpenOptions{Image: "busybox", Platform: "linux"})
	require.ErrorContains(t, err, "invalid platform")

	// An image named only by an OCI ref.name tag, and an untagged one.
	a := archBuild(t, archImage{Tags: []string{"v1"}, Layers: []archLayerSpec{{Files: map[string]string{"a": "1"}}}})
	b := archBuild(t, archImage{Layers: []archLayerSpec{{Files: map[string]string{"b": "2"}}}})
	p2 := archOCI(t, false, a, b).write(t, dir, "oci.tar")
	img, err := archOpen(t, p2, OpenOptions{Image: "v1"})
	require.NoError(t, err)
	require.Equal(t, a.ManifestDesc.Digest, img.Ref.ManifestDigest)
	img, err = archOpen(t, p2, OpenOptions{Image: b.ManifestDesc.Digest.Encoded()[:12]})
	require.NoError(t, err)
	require.Equal(t, b.ConfigDigest, img.Ref.ConfigDigest)
	require.Empty(t, img.Ref.Tags)
	_, err = archOpen(t, p2, OpenOptions{})
	require.ErrorIs(t, err, ErrAmbiguous)
	require.ErrorContains(t, err, "(untagged)")
	require.ErrorContains(t, err, shortDigest(b.ManifestDesc.Digest))
}

func TestArchOpenDockerOCI(t *testing.T) {
	dir := t.TempDir()
	b := archBuild(t, archSimple([]string{"app:latest", "app:1"}, tarindex.CompressionGzip, tarindex.CompressionNone))
	p := archOCI(t, true, b).write(t, dir, "docker25.tar")

	var mu sync.Mutex
	var msgs []string
	img, err := archOpen(t, p, OpenOptions{Progress: func(m string) { mu.Lock(); msgs = append(msgs, m); mu.Unlock() }})
	require.NoError(t, err)
	require.Equal(t, FormatDockerOCI, img.Format)
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
	require.Len(t, l0.Data, len(b.Tars[0]), "compressed layers are served from the decompressed cache file")
	require.Equal(t, archBaseFiles, archFiles(t, l0))

	require.Equal(t, tarindex.CompressionNone, l1.Compression)
	require.Equal(t, b.DiffIDs[1], l1.Digest)
	require.Equal(t, archAppFiles, archFiles(t, l1))
	// What repack may copy without hashing again: the uncompressed blob was
	// checked against its diff_id; the gzip blob's own digest was not.
	require.True(t, l1.StoredVerified)
	require.False(t, l0.StoredVerified)
	require.Equal(t, []string{"ADD rootfs.tar /", "COPY main /app/main"}, []string{l0.CreatedBy, l1.CreatedBy})

	require.Len(t, msgs, 1)
	require.Contains(t, msgs[0], "decompressing 1/1: layer 0 ("+shortDigest(b.DiffIDs[0]))
	require.Contains(t, msgs[0], "gzip")

	for _, q := range []string{"app", "app:1", "library/app:1", "docker.io/library/app:1"} {
		_, err := archOpen(t, p, OpenOptions{Image: q})
		require.NoError(t, err, q)
	}
}

func TestArchOpenOCIArchiveGzipZstd(t *testing.T) {
	dir := t.TempDir()
	b := archBuild(t, archSimple([]string{"localhost/app:2"}, tarindex.CompressionGzip, tarindex.CompressionZstd))
	p := archOCI(t, false, b).write(t, dir, "oci.tar")
	cache := t.TempDir()
	for range 2 { // the second time from the cache
		img, err := archOpen(t, p, OpenOptions{CacheDir: cache})
		require.NoError(t, err)
		require.Equal(t, FormatOCI, img.Format)
		require.Equal(t, []string{"localhost/app:2"}, img.Ref.Tags)
		require.Len(t, img.Layers, 2)
		require.Equal(t, tarindex.CompressionGzip, img.Layers[0].Compression)
		require.Equal(t, tarindex.CompressionZstd, img.Layers[1].Compression)
		require.Equal(t, ocispec.MediaTypeImageLayerZstd, img.Layers[1].MediaType)
		require.Equal(t, b.DiffIDs, []digest.Digest{img.Layers[0].DiffID, img.Layers[1].DiffID})
		require.Equal(t, b.BlobDigests, []digest.Digest{img.Layers[0].Digest, img.Layers[1].Digest})
		require.Equal(t, archBaseFiles, archFiles(t, img.Layers[0]))
		require.Equal(t, archAppFiles, archFiles(t, img.Layers[1]))
		require.Equal(t, "COPY main /app/main", img.Layers[1].CreatedBy)
	}
	// Media types lie; magic bytes decide.
	b2 := archBuild(t, archSimple(nil, tarindex.CompressionZstd, tarindex.CompressionNone))
	b2.LayerDescs[0].MediaType = ocispec.MediaTypeImageLayerGzip
	b2.LayerDescs[1].MediaType = ocispec.MediaTypeImageLayerGzip
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: b2.ConfigDigest, Size: int64(len(b2.Config))}, Layers: b2.LayerDescs}
	b2.Manifest = archJSON(t, m)
	b2.ManifestDesc.Digest = digest.FromBytes(b2.Manifest)
	b2.ManifestDesc.Size = int64(len(b2.Manifest))
	img, err := archOpen(t, archOCI(t, false, b2).write(t, dir, "lying.tar"), OpenOptions{})
	require.NoError(t, err)
	require.Equal(t, tarindex.CompressionZstd, img.Layers[0].Compression)
	require.Equal(t, tarindex.CompressionNone, img.Layers[1].Compression)
	require.Equal(t, archAppFiles, archFiles(t, img.Layers[1]))
}

func TestArchOpenCompressedOuter(t *testing.T) {
	dir := t.TempDir()
	b := archBuild(t, archSimple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	raw := archLegacy(t, b).tar(t)
	for _, comp := range []tarindex.Compression{tarindex.CompressionGzip, tarindex.CompressionZstd} {
		p := archWriteFile(t, dir, "app.tar."+comp.String(), archCompress(t, comp, raw))
		img, err := archOpen(t, p, OpenOptions{})
		require.NoError(t, err, comp)
		require.Equal(t, FormatDockerLegacy, img.Format)
		require.Equal(t, archAppFiles, archFiles(t, img.Layers[1]))
		require.Len(t, img.Layers[1].Data, len(raw), "layers are slices of the decompressed outer tar")

		_, err = Open(p, OpenOptions{})
		require.ErrorContains(t, err, "cache directory")
	}
	// A truncated compressed outer tarball.
	gz := archCompress(t, tarindex.CompressionGzip, raw)
	p := archWriteFile(t, dir, "trunc.tar.gz", gz[:len(gz)/2])
	_, err := archOpen(t, p, OpenOptions{})
	require.Error(t, err)
	require.ErrorContains(t, err, p)
	t.Log(err)
}

func TestArchOpenMultiPlatform(t *testing.T) {
	dir := t.TempDir()
	amd := archBuild(t, archImage{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Layers: []archLayerSpec{{Files: map[string]string{"arch": "amd64"}, Comp: tarindex.CompressionGzip}}})
	arm := archBuild(t, archImage{Platform: ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"},
		Layers: []archLayerSpec{{Files: map[string]string{"arch": "arm64"}, Comp: tarindex.CompressionGzip}}})
	armv7 := archBuild(t, archImage{Platform: ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"},
		Layers: []archLayerSpec{{Files: map[string]string{"arch": "armv7"}, Comp: tarindex.CompressionGzip}}})
	s390 := archBuild(t, archImage{Platform: ocispec.Platform{OS: "linux", Architecture: "s390x"},
		Layers: []archLayerSpec{{Files: map[string]string{"arch": "s390x"}, Comp: tarindex.CompressionGzip}}})
	lay, indexDigest := archMultiPlatform(t, "docker.io/library/multi:1", amd, arm, armv7, s390)
	lay.delBlob(arm.BlobDigests[0])       // arm64: manifest and config here, layer absent
	lay.delBlob(s390.ManifestDesc.Digest) // s390x: not even the manifest
	lay.delBlob(s390.ConfigDigest)
	lay.delBlob(s390.BlobDigests[0])
	p := lay.write(t, dir, "multi.tar")

	img, err := archOpen(t, p, OpenOptions{Platform: "linux/amd64"})
	require.NoError(t, err)
	require.Equal(t, FormatOCI, img.Format)
	require.Equal(t, "linux/amd64", img.Ref.Platform)
	require.Equal(t, []string{"docker.io/library/multi:1"}, img.Ref.Tags)
	require.Equal(t, map[string]string{"arch": "amd64"}, archFiles(t, img.Layers[0]))
	require.Len(t, img.Images, 4, "every platform is listed; the attestation is not")
	var plats []string
	for _, r := range img.Images {
		plats = append(plats, r.Platform)
	}
	require.Equal(t, []string{"linux/amd64", "linux/arm64", "linux/arm/v7", "linux/s390x"}, plats)

	// Without --platform: only fully present platforms are candidates, then
	// the host's; here amd64 and arm/v7 are present.
	img, err = archOpen(t, p, OpenOptions{Image: "multi:1"})
	switch hostPlatform().Architecture {
	case "amd64":
		require.NoError(t, err)
		require.Equal(t, "linux/amd64", img.Ref.Platform)
	case "arm":
		require.NoError(t, err)
		require.Equal(t, "linux/arm/v7", img.Ref.Platform)
	default:
		require.ErrorIs(t, err, ErrAmbiguous)
		require.ErrorContains(t, err, "--platform")
	}

	img, err = archOpen(t, p, OpenOptions{Platform: "linux/arm"}) // variant not given: any
	require.NoError(t, err)
	require.Equal(t, map[string]string{"arch": "armv7"}, archFiles(t, img.Layers[0]))
	img, err = archOpen(t, p, OpenOptions{Image: indexDigest.Encoded()[:10], Platform: "linux/arm/v7"})
	require.NoError(t, err)
	require.Equal(t, armv7.ManifestDesc.Digest, img.Ref.ManifestDigest)

	_, err = archOpen(t, p, OpenOptions{Platform: "linux/arm64"})
	require.ErrorIs(t, err, ErrLayerMissing)
	require.ErrorContains(t, err, arm.DiffIDs[0].String())
	require.ErrorContains(t, err, "--base")
	t.Log(err)
	_, err = archOpen(t, p, OpenOptions{Platform: "linux/aarch64/v8"}) // aliases
	require.ErrorIs(t, err, ErrLayerMissing)

	_, err = archOpen(t, p, OpenOptions{Platform: "linux/s390x"})
	require.ErrorIs(t, err, ErrLayerMissing)
	require.ErrorContains(t, err, s390.ManifestDesc.Digest.String())
	t.Log(err)

	_, err = archOpen(t, p, OpenOptions{Platform: "windows/amd64"})
	require.ErrorIs(t, err, ErrNoSuchImage)
	require.ErrorContains(t, err, "linux/arm64 [absent]")
	t.Log(err)
}

func TestArchOpenThinWithBase(t *testing.T) {
	dir := t.TempDir()
	base := archBuild(t, archImage{Tags: []string{"base:1"}, Layers: []archLayerSpec{
		{Files: archBaseFiles, Comp: tarindex.CompressionGzip},
		{Files: map[string]string{"usr/lib/x": "lib"}},
	}})
	basePath := archLegacy(t, base).write(t, dir, "base.tar")
	app := archBuild(t, archImage{Tags: []string{"app:1"}, Layers: []archLayerSpec{
		{Files: archBaseFiles, Comp: tarindex.CompressionGzip},
		{Files: map[string]string{"usr/lib/x": "lib"}},
		{Files: archAppFiles, Comp: tarindex.CompressionGzip},
	}})
	require.Equal(t, base.DiffIDs, app.DiffIDs[:2])
	lay := archOCI(t, false, app)
	lay.delBlob(app.BlobDigests[0])
	lay.delBlob(app.BlobDigests[1])
	p := lay.write(t, dir, "thin.tar")

	_, err := archOpen(t, p, OpenOptions{})
	require.ErrorIs(t, err, ErrLayerMissing)
	require.ErrorContains(t, err, p+": layers 0 ("+app.DiffIDs[0].String()+"), 1 ("+app.DiffIDs[1].String()+") are not in the tarball")
	require.ErrorContains(t, err, "--base BASE.tar")
	t.Log(err)

	other := archLegacy(t, archBuild(t, archImage{Layers: []archLayerSpec{{Files: map[string]string{"z": "z"}}}})).write(t, dir, "other.tar")
	img, err := archOpen(t, p, OpenOptions{Bases: []string{other, basePath}})
	require.NoError(t, err)
	require.Len(t, img.Layers, 3)
	require.Equal(t, archBaseFiles, archFiles(t, img.Layers[0]))
	require.Equal(t, map[string]string{"usr/lib/x": "lib"}, archFiles(t, img.Layers[1]))
	require.Equal(t, archAppFiles, archFiles(t, img.Layers[2]))
	require.Equal(t, app.DiffIDs, []digest.Digest{img.Layers[0].DiffID, img.Layers[1].DiffID, img.Layers[2].DiffID})

	_, err = archOpen(t, p, OpenOptions{Bases: []string{other}})
	require.ErrorIs(t, err, ErrLayerMissing)
	require.ErrorContains(t, err, "do not have them either")

	_, err = archOpen(t, p, OpenOptions{Bases: []string{filepath.Join(dir, "nope.tar")}})
	require.ErrorContains(t, err, "nope.tar")
}

func TestArchOpenDiffIDMismatch(t *testing.T) {
	dir := t.TempDir()
	wrong := digest.FromString("something else")
	for _, comp := range []tarindex.Compression{tarindex.CompressionGzip, tarindex.CompressionZstd} {
		im := archSimple([]string{"app:1"}, tarindex.CompressionNone, comp)
		im.Mutate = func(c *ocispec.Image) { c.RootFS.DiffIDs[1] = wrong }
		p := archOCI(t, false, archBuild(t, im)).write(t, dir, "bad-"+comp.String()+".tar")
		cache := t.TempDir()
		_, err := archOpen(t, p, OpenOptions{CacheDir: cache})
		require.ErrorIs(t, err, ErrDiffIDMismatch)
		require.ErrorIs(t, err, tarindex.ErrDigestMismatch)
		require.ErrorContains(t, err, p+": layer 1 ("+wrong.String()+")")
		t.Log(err)
		// Nothing bad was left in the cache: a second attempt fails again.
		_, err = archOpen(t, p, OpenOptions{CacheDir: cache})
		require.ErrorIs(t, err, ErrDiffIDMismatch)
	}
	// An uncompressed blob named by a digest other than its diff_id.
	im := archSimple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone)
	im.Mutate = func(c *ocispec.Image) { c.RootFS.DiffIDs[0] = wrong }
	p := archOCI(t, true, archBuild(t, im)).write(t, dir, "bad-none.tar")
	_, err := archOpen(t, p, OpenOptions{})
	require.ErrorIs(t, err, ErrDiffIDMismatch)
	require.ErrorContains(t, err, "layer 0")
	t.Log(err)
}

func TestArchOpenCorruptLayer(t *testing.T) {
	dir := t.TempDir()
	b := archBuild(t, archSimple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionGzip))
	lay := archOCI(t, false, b)
	blob := bytes.Clone(b.Blobs[1])
	for i := 20; i < len(blob)-10; i++ {
		blob[i] ^= 0x55
	}
	lay.add("blobs/sha256/"+b.BlobDigests[1].Encoded(), blob)
	p := lay.write(t, dir, "corrupt.tar")
	_, err := archOpen(t, p, OpenOptions{})
	require.ErrorIs(t, err, ErrCorruptLayer)
	require.ErrorContains(t, err, p+": layer 1 ("+b.DiffIDs[1].String()+")")
	t.Log(err)

	// A truncated blob: its size disagrees with the manifest.
	lay.add("blobs/sha256/"+b.BlobDigests[1].Encoded(), b.Blobs[1][:len(b.Blobs[1])-5])
	p = lay.write(t, dir, "short.tar")
	_, err = archOpen(t, p, OpenOptions{})
	require.ErrorIs(t, err, ErrCorruptLayer)
	require.ErrorContains(t, err, "layer 1")

	// A layer whose tar escapes the root.
	evil := archTar(t, archTarFile{Name: "../../etc/passwd", Body: []byte("root::0:0")})
	im := archImage{Tags: []string{"evil:1"}, Layers: []archLayerSpec{{Files: map[string]string{"a": "b"}}}}
	eb := archBuild(t, im)
	lay = archLegacy(t, eb)
	for _, n := range lay.names {
		if strings.HasSuffix(n, "/layer.tar") {
			lay.add(n, evil)
		}
	}
	p = lay.write(t, dir, "evil.tar")
	_, err = archOpen(t, p, OpenOptions{})
	require.ErrorIs(t, err, tarindex.ErrUnsafeName)
	require.ErrorIs(t, err, ErrCorruptLayer)
	require.ErrorContains(t, err, p+": layer 0")
	t.Log(err)
}

func TestArchOpenNotImage(t *testing.T) {
	dir := t.TempDir()
	cases := map[string][]byte{
		"text.txt":  []byte("hello, this is not a tarball at all\n"),
		"empty":     nil,
		"plain.tar": archTar(t, archTarFile{Name: "etc/hosts", Body: []byte("127.0.0.1 localhost")}),
		"nested.tar": archTar(t, archTarFile{Name: "img/", Dir: true},
			archTarFile{Name: "img/index.json", Body: []byte(`{}`)}),
		"gzipped-text.gz": archCompress(t, tarindex.CompressionGzip, []byte("just text")),
	}
	for name, body := range cases {
		p := archWriteFile(t, dir, name, body)
		_, err := archOpen(t, p, OpenOptions{})
		require.ErrorIs(t, err, ErrNotImage, name)
		require.ErrorContains(t, err, p)
		t.Log(err)
	}
	_, err := archOpen(t, filepath.Join(dir, "nested.tar"), OpenOptions{})
	require.ErrorContains(t, err, "img/index.json")
	_, err = archOpen(t, filepath.Join(dir, "plain.tar"), OpenOptions{})
	require.ErrorContains(t, err, "manifest.json")

	_, err = archOpen(t, dir, OpenOptions{})
	require.ErrorIs(t, err, ErrNotImage)
	_, err = archOpen(t, filepath.Join(dir, "absent.tar"), OpenOptions{})
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestArchOpenTruncatedOuter(t *testing.T) {
	dir := t.TempDir()
	b := archBuild(t, archSimple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	raw := archLegacy(t, b).tar(t)
	// Cut inside the first layer's data, and exactly before manifest.json's
	// header (a block boundary: archive/tar sees a clean end there).
	manifestAt := bytes.Index(raw, []byte("manifest.json\x00"))
	require.Positive(t, manifestAt)
	for _, cut := range []int{3000, manifestAt} {
		p := archWriteFile(t, dir, "trunc.tar", raw[:cut])
		_, err := archOpen(t, p, OpenOptions{})
		require.Error(t, err, cut)
		require.ErrorContains(t, err, p)
		require.ErrorContains(t, err, "truncated")
		t.Log(err)
	}
}

func TestArchOpenMalformedJSON(t *testing.T) {
	dir := t.TempDir()
	b := archBuild(t, archSimple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	cases := []struct {
		name   string
		layout func() *archLayout
		want   string
	}{
		{"manifest syntax", func() *archLayout {
			l := archLegacy(t, b)
			l.add("manifest.json", []byte(`[{"Config": "x.json", "Layers": [`))
			return l
		}, "manifest.json"},
		{"manifest type", func() *archLayout {
			l := archLegacy(t, b)
			l.add("manifest.json", []byte(`{"Config": 7}`))
			return l
		}, "manifest.json"},
		{"manifest empty", func() *archLayout {
			l := archLegacy(t, b)
			l.add("manifest.json", []byte(`[]`))
			return l
		}, "manifest.json lists no container images"},
		{"manifest null", func() *archLayout {
			l := archLegacy(t, b)
			l.add("manifest.json", []byte(`[null]`))
			return l
		}, "no Config"},
		{"manifest escaping layer", func() *archLayout {
			l := archLegacy(t, b)
			l.add("manifest.json", []byte(`[{"Config":"`+b.ConfigDigest.Encoded()+`.json","Layers":["../../etc/passwd"]}]`))
			return l
		}, "unsafe"},
		{"legacy config", func() *archLayout {
			l := archLegacy(t, b)
			l.add(b.ConfigDigest.Encoded()+".json", []byte(`{"rootfs": {"diff_ids": 3}}`))
			return l
		}, b.ConfigDigest.Encoded() + ".json"},
		{"index syntax", func() *archLayout {
			l := archOCI(t, false, b)
			l.add("index.json", []byte(`{"manifests": [{"digest": `))
			return l
		}, "index.json"},
		{"index bad digest", func() *archLayout {
			l := archOCI(t, false, b)
			l.add("index.json", []byte(`{"manifests": [{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest": "sha256:../../etc"}]}`))
			return l
		}, "index.json"},
		{"index null entry", func() *archLayout {
			l := archOCI(t, false, b)
			l.add("index.json", []byte(`{"manifests": [null]}`))
			return l
		}, "index.json"},
		{"oci manifest", func() *archLayout {
			l := archOCI(t, false, b)
			l.add("blobs/sha256/"+b.ManifestDesc.Digest.Encoded(), []byte(`{"config": [1,2]}`))
			return l
		}, "blobs/sha256/" + b.ManifestDesc.Digest.Encoded()},
		{"oci config", func() *archLayout {
			l := archOCI(t, false, b)
			l.add("blobs/sha256/"+b.ConfigDigest.Encoded(), []byte(`not json`))
			return l
		}, "blobs/sha256/" + b.ConfigDigest.Encoded()},
		{"config diff_id", func() *archLayout {
			im := b.Img
			im.Mutate = func(c *ocispec.Image) { c.RootFS.DiffIDs[0] = "sha256:../../../tmp/x" }
			return archOCI(t, false, archBuild(t, im))
		}, "diff_ids[0]"},
		{"layer count", func() *archLayout {
			im := b.Img
			im.Mutate = func(c *ocispec.Image) { c.RootFS.DiffIDs = c.RootFS.DiffIDs[:1] }
			return archOCI(t, false, archBuild(t, im))
		}, "lists 1 diff_ids but its manifest lists 2 layers"},
		{"symlink loop", func() *archLayout {
			l := archLegacy(t, b)
			var e archDockerEntry
			e.Config = b.ConfigDigest.Encoded() + ".json"
			e.Layers = []string{"a/layer.tar", "b/layer.tar"}
			l.add("manifest.json", archJSON(t, []archDockerEntry{e}))
			l.put(archTarFile{Name: "a/layer.tar", Link: "../b/layer.tar"})
			l.put(archTarFile{Name: "b/layer.tar", Link: "../a/layer.tar"})
			return l
		}, "too many levels of links"},
		{"symlink escape", func() *archLayout {
			l := archLegacy(t, b)
			var e archDockerEntry
			e.Config = b.ConfigDigest.Encoded() + ".json"
			e.Layers = []string{"a/layer.tar", "b/layer.tar"}
			l.add("manifest.json", archJSON(t, []archDockerEntry{e}))
			l.put(archTarFile{Name: "a/layer.tar", Link: "../../../etc/passwd"})
			l.put(archTarFile{Name: "b/layer.tar", Link: "/a/layer.tar"})
			return l
		}, "escapes the root"},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			p := c.layout().write(t, dir, "bad.tar")
			_, err := archOpen(t, p, OpenOptions{})
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
	b := archBuild(t, archSimple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	l := archNewLayout()
	l.add(b.DiffIDs[0].Encoded()+".tar", b.Blobs[0])
	l.add(b.DiffIDs[1].Encoded()+".tar", b.Blobs[1])
	l.put(archTarFile{Name: "x/layer.tar", Hard: b.DiffIDs[0].Encoded() + ".tar"})
	l.put(archTarFile{Name: "y/layer.tar", Link: "/" + b.DiffIDs[1].Encoded() + ".tar"})
	l.add(b.ConfigDigest.Encoded()+".json", b.Config)
	l.add("manifest.json", archJSON(t, []archDockerEntry{{Config: b.ConfigDigest.Encoded() + ".json", RepoTags: []string{"app:1"}, Layers: []string{"x/layer.tar", "./y/layer.tar"}}}))
	img, err := archOpen(t, l.write(t, dir, "skopeo.tar"), OpenOptions{CacheDir: ""})
	require.NoError(t, err)
	require.Equal(t, archBaseFiles, archFiles(t, img.Layers[0]))
	require.Equal(t, archAppFiles, archFiles(t, img.Layers[1]))

	// Without a cache directory, uncompressed images still open, unchecked.
	img2, err := Open(filepath.Join(dir, "skopeo.tar"), OpenOptions{})
	require.NoError(t, err)
	require.False(t, img2.Layers[0].StoredVerified, "no cache, no check on open")
	require.NoError(t, img2.Close())
}

func TestArchOpenErrorsClose(t *testing.T) {
	// Errors after mappings were made must not leak them or panic; Close on
	// a good image is idempotent.
	dir := t.TempDir()
	b := archBuild(t, archSimple([]string{"app:1"}, tarindex.CompressionGzip, tarindex.CompressionGzip))
	lay := archOCI(t, false, b)
	blob := bytes.Clone(b.Blobs[1])
	blob[len(blob)-3] ^= 0xff // bad CRC only: the first layer maps fine
	lay.add("blobs/sha256/"+b.BlobDigests[1].Encoded(), blob)
	_, err := archOpen(t, lay.write(t, dir, "x.tar"), OpenOptions{})
	require.Error(t, err)
	require.True(t, errors.Is(err, ErrCorruptLayer) || errors.Is(err, ErrDiffIDMismatch), err)

	img, err := Open(archOCI(t, false, b).write(t, dir, "ok.tar"), OpenOptions{CacheDir: t.TempDir()})
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
	for sub, files := range map[string]map[string]string{"r1": archBaseFiles, "r2": archAppFiles} {
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
		format Format
		comp   tarindex.Compression
		tags   []string
	}{
		{da, FormatDockerLegacy, tarindex.CompressionNone, []string{"docker.io/library/myapp:v1"}},
		{oa, FormatOCI, tarindex.CompressionGzip, []string{"myapp:v1"}},
		{oz, FormatOCI, tarindex.CompressionZstd, []string{}},
	} {
		img, err := archOpen(t, c.path, OpenOptions{})
		require.NoError(t, err, c.path)
		require.Equal(t, c.format, img.Format)
		require.Equal(t, c.tags, img.Ref.Tags)
		require.Equal(t, []string{"/app/main"}, img.Config.Config.Entrypoint)
		require.Len(t, img.Layers, 2)
		require.Equal(t, c.comp, img.Layers[0].Compression)
		require.Equal(t, archBaseFiles, archFiles(t, img.Layers[0]))
		require.Equal(t, archAppFiles, archFiles(t, img.Layers[1]))
		require.Equal(t, "umoci insert", img.Layers[1].CreatedBy)
		if c.path == da {
			_, err := archOpen(t, c.path, OpenOptions{Image: "myapp:v1"})
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
	b := archBuild(t, archSimple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone))

	lay := archOCI(t, true, b)
	var m ocispec.Manifest
	require.NoError(t, json.Unmarshal(b.Manifest, &m))
	m.Layers = nil
	noLayers := archJSON(t, m)
	lay.add("blobs/sha256/"+b.ManifestDesc.Digest.Encoded(), noLayers) // the blob no longer hashes to its name: docker did worse
	img, err := archOpen(t, lay.write(t, dir, "nolayers.tar"), OpenOptions{})
	require.NoError(t, err)
	require.Equal(t, FormatDockerOCI, img.Format)
	require.Len(t, img.Layers, 2)
	require.Equal(t, archAppFiles, archFiles(t, img.Layers[1]))

	lay = archOCI(t, true, b)
	lay.add("index.json", []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":null}`))
	img, err = archOpen(t, lay.write(t, dir, "nullindex.tar"), OpenOptions{Image: "app:1"})
	require.NoError(t, err)
	require.Equal(t, b.ConfigDigest, img.Ref.ConfigDigest)
	require.Empty(t, img.Ref.ManifestDigest)
	require.Equal(t, []string{"app:1"}, img.Ref.Tags)
	require.Equal(t, archBaseFiles, archFiles(t, img.Layers[0]))
}

// An index that lists itself must neither loop nor explode.
func TestArchOpenIndexCycle(t *testing.T) {
	dir := t.TempDir()
	b := archBuild(t, archSimple(nil, tarindex.CompressionNone, tarindex.CompressionNone))
	lay := archOCI(t, false, b)
	// Two indexes listing each other 40 times each, plus the manifest.
	var ia, ib ocispec.Index
	ia.Manifests = []ocispec.Descriptor{b.ManifestDesc}
	// A digest cycle cannot be built from real hashes, so name the blobs by
	// digests they do not have (lookups go by name).
	da, db := digest.FromString("index a"), digest.FromString("index b")
	for range 40 {
		ia.Manifests = append(ia.Manifests, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: db})
		ib.Manifests = append(ib.Manifests, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: da})
	}
	lay.add("blobs/sha256/"+da.Encoded(), archJSON(t, ia))
	lay.add("blobs/sha256/"+db.Encoded(), archJSON(t, ib))
	lay.add("index.json", archJSON(t, ocispec.Index{Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageIndex, Digest: da, Annotations: map[string]string{ocispec.AnnotationRefName: "cyc"}}}}))
	img, err := archOpen(t, lay.write(t, dir, "cycle.tar"), OpenOptions{Image: "cyc"})
	require.NoError(t, err)
	require.Len(t, img.Images, 1)
	require.Equal(t, archAppFiles, archFiles(t, img.Layers[1]))
}
