package archive_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

// writeLayoutDir writes lay's members as files under a new directory
// dir/name, as tar -xf of its tarball would: symlinks stay symlinks,
// hardlinks hardlinks.
func writeLayoutDir(t *testing.T, lay *imagetest.Layout, dir, name string) string {
	t.Helper()
	root := filepath.Join(dir, name)
	require.NoError(t, os.MkdirAll(root, 0o755))
	for _, n := range lay.Names {
		f := lay.Files[n]
		p := filepath.Join(root, filepath.FromSlash(n))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		switch {
		case f.Dir:
			require.NoError(t, os.MkdirAll(p, 0o755))
		case f.Link != "":
			require.NoError(t, os.Symlink(f.Link, p))
		case f.Hard != "":
			require.NoError(t, os.Link(filepath.Join(root, filepath.FromSlash(f.Hard)), p))
		default:
			require.NoError(t, os.WriteFile(p, f.Body, 0o644))
		}
	}
	return root
}

// requireSameImage checks that two opens of one image, from a tarball and
// from a directory, found the same thing.
func requireSameImage(t *testing.T, want, got *archive.Image) {
	t.Helper()
	require.Equal(t, want.Format, got.Format)
	require.Equal(t, want.Images, got.Images)
	require.Equal(t, want.Ref, got.Ref)
	require.Equal(t, want.Config, got.Config)
	require.Equal(t, want.ConfigRaw, got.ConfigRaw)
	require.Len(t, got.Layers, len(want.Layers))
	for i, w := range want.Layers {
		g := got.Layers[i]
		require.Equal(t, w.Index, g.Index)
		require.Equal(t, w.DiffID, g.DiffID)
		require.Equal(t, w.Digest, g.Digest)
		require.Equal(t, w.MediaType, g.MediaType)
		require.Equal(t, w.Compression, g.Compression)
		require.Equal(t, w.StoredSize, g.StoredSize)
		require.Equal(t, w.Size, g.Size)
		require.Equal(t, w.CreatedBy, g.CreatedBy)
		require.Equal(t, w.StoredVerified, g.StoredVerified)
		require.True(t, bytes.Equal(w.Stored, g.Stored), "layer %d: the blob as stored", i)
		require.Equal(t, imagetest.Files(t, w), imagetest.Files(t, g), "layer %d", i)
		require.Equal(t, len(w.TarIndex.Entries), len(g.TarIndex.Entries))
	}
}

// A directory holding what a tarball holds (an OCI layout, a docker save
// extracted, legacy or 25+) opens as the same image.
func TestDirSameAsTarball(t *testing.T) {
	dir := t.TempDir()
	app := imagetest.Build(t, imagetest.Simple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	gz := imagetest.Build(t, imagetest.Simple([]string{"gz:1"}, tarindex.CompressionGzip, tarindex.CompressionZstd))
	other := imagetest.Build(t, imagetest.Spec{
		Tags:   []string{"other:latest"},
		Layers: []imagetest.LayerSpec{{Files: simpleBaseFiles}, {Files: map[string]string{"other": "x"}}},
	})
	amd := imagetest.Build(t, imagetest.Spec{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Layers: []imagetest.LayerSpec{{Files: map[string]string{"arch": "amd64"}, Comp: tarindex.CompressionGzip}}})
	arm := imagetest.Build(t, imagetest.Spec{Platform: ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"},
		Layers: []imagetest.LayerSpec{{Files: map[string]string{"arch": "arm64"}, Comp: tarindex.CompressionGzip}}})
	multi, _ := imagetest.MultiPlatform(t, "docker.io/library/multi:1", amd, arm)

	legacy := imagetest.Legacy(t, app, other)
	links := 0
	for _, f := range legacy.Files {
		if f.Link != "" {
			links++
		}
	}
	require.Equal(t, 1, links, "the shared base layer is a relative symlink ../<id>/layer.tar")

	cases := []struct {
		name   string
		lay    *imagetest.Layout
		opts   []archive.OpenOptions
		format archive.Format
	}{
		{"legacy", legacy, []archive.OpenOptions{{Image: "app:1"}, {Image: "other"}}, archive.FormatDockerLegacy},
		{"oci", imagetest.OCI(t, false, app), []archive.OpenOptions{{}}, archive.FormatOCI},
		{"oci-compressed", imagetest.OCI(t, false, gz), []archive.OpenOptions{{}}, archive.FormatOCI},
		{"docker25", imagetest.OCI(t, true, app, other), []archive.OpenOptions{{Image: "app:1"}, {Image: "other"}}, archive.FormatDockerOCI},
		{"docker25-compressed", imagetest.OCI(t, true, gz), []archive.OpenOptions{{}}, archive.FormatDockerOCI},
		{"multi", multi, []archive.OpenOptions{{Platform: "linux/amd64"}, {Platform: "linux/arm64"}}, archive.FormatOCI},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tarPath := c.lay.Write(t, dir, c.name+".tar")
			dirPath := writeLayoutDir(t, c.lay, dir, c.name)
			for _, o := range c.opts {
				want, err := imagetest.Open(t, tarPath, o)
				require.NoError(t, err)
				got, err := imagetest.Open(t, dirPath, o)
				require.NoError(t, err)
				require.Equal(t, c.format, got.Format)
				require.Equal(t, dirPath, got.Archive)
				requireSameImage(t, want, got)

				// Without a cache too (uncompressed layers only need none).
				if c.name == "legacy" || c.name == "oci" {
					o.CacheDir = ""
					got, err := archive.Open(dirPath, o)
					require.NoError(t, err)
					require.Equal(t, imagetest.Files(t, want.Layers[1]), imagetest.Files(t, got.Layers[1]))
					require.NoError(t, got.Close())
				}
			}

			wantIDs, err := archive.StoredDiffIDs(tarPath, "")
			require.NoError(t, err)
			gotIDs, err := archive.StoredDiffIDs(dirPath, "")
			require.NoError(t, err)
			require.Equal(t, wantIDs, gotIDs)
			require.NotEmpty(t, gotIDs)
		})
	}
}

// An uncompressed layer in a directory is served from the mapping of its
// own file; its cache identity is that file's, so a layer file edited in
// place is checked again.
func TestDirLayerIsItsOwnFile(t *testing.T) {
	dir, cache := t.TempDir(), t.TempDir()
	b := imagetest.Build(t, imagetest.Simple([]string{"a:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	p := writeLayoutDir(t, imagetest.OCI(t, false, b), dir, "layout")
	img, err := imagetest.Open(t, p, archive.OpenOptions{CacheDir: cache})
	require.NoError(t, err)
	for i, l := range img.Layers {
		require.Len(t, l.Data, len(b.Tars[i]), "the layer's own file, mapped")
		require.Equal(t, b.Tars[i], l.Stored)
		require.True(t, l.StoredVerified)
	}
	require.NoError(t, img.Close())

	again, err := imagetest.Open(t, p, archive.OpenOptions{CacheDir: cache})
	require.NoError(t, err, "the saved indexes of the members are used again")
	require.Equal(t, simpleAppFiles, imagetest.Files(t, again.Layers[1]))

	lp := filepath.Join(p, "blobs", "sha256", b.BlobDigests[1].Encoded())
	fi, err := os.Stat(lp)
	require.NoError(t, err)
	data := bytes.Clone(b.Tars[1])
	i := bytes.Index(data, []byte("hello world"))
	require.Positive(t, i)
	copy(data[i:], "HELLO WORLD")
	require.NoError(t, os.WriteFile(lp, data, 0o644))
	require.NoError(t, os.Chtimes(lp, fi.ModTime(), fi.ModTime()))
	_, err = imagetest.Open(t, p, archive.OpenOptions{CacheDir: cache})
	require.ErrorIs(t, err, archive.ErrDiffIDMismatch)
}

// A blob the layout lists but leaves out is ErrLayerMissing naming the
// layer, and a directory supplies a thin tarball's layers as --base (and
// the other way round).
func TestDirMissingBlobAndBase(t *testing.T) {
	dir := t.TempDir()
	base := imagetest.Build(t, imagetest.Spec{Tags: []string{"base:1"}, Layers: []imagetest.LayerSpec{
		{Files: simpleBaseFiles, Comp: tarindex.CompressionGzip},
		{Files: map[string]string{"usr/lib/x": "lib"}},
	}})
	app := imagetest.Build(t, imagetest.Spec{Tags: []string{"app:1"}, Layers: []imagetest.LayerSpec{
		{Files: simpleBaseFiles, Comp: tarindex.CompressionGzip},
		{Files: map[string]string{"usr/lib/x": "lib"}},
		{Files: simpleAppFiles},
	}})
	thin := imagetest.OCI(t, false, app)
	thin.DelBlob(app.BlobDigests[0])
	thinDir := writeLayoutDir(t, thin, dir, "thin")
	thinTar := thin.Write(t, dir, "thin.tar")

	_, err := imagetest.Open(t, thinDir, archive.OpenOptions{})
	require.ErrorIs(t, err, archive.ErrLayerMissing)
	require.ErrorContains(t, err, thinDir+": layer 0 ("+app.DiffIDs[0].String()+") is not in the directory")
	require.ErrorContains(t, err, "--base")
	t.Log(err)

	baseDir := writeLayoutDir(t, imagetest.Legacy(t, base), dir, "base")
	baseTar := imagetest.OCI(t, true, base).Write(t, dir, "base.tar")
	for _, c := range [][2]string{{thinDir, baseDir}, {thinTar, baseDir}, {thinDir, baseTar}} {
		img, err := imagetest.Open(t, c[0], archive.OpenOptions{Bases: []string{c[1]}})
		require.NoError(t, err, c)
		require.Len(t, img.Layers, 3)
		require.Equal(t, simpleBaseFiles, imagetest.Files(t, img.Layers[0]))
		require.Equal(t, map[string]string{"usr/lib/x": "lib"}, imagetest.Files(t, img.Layers[1]))
		require.Equal(t, simpleAppFiles, imagetest.Files(t, img.Layers[2]))
		require.Equal(t, app.DiffIDs, []digest.Digest{img.Layers[0].DiffID, img.Layers[1].DiffID, img.Layers[2].DiffID})
	}
	ids, err := archive.StoredDiffIDs(thinDir, "")
	require.NoError(t, err)
	require.Equal(t, map[digest.Digest]bool{app.DiffIDs[1]: true, app.DiffIDs[2]: true}, ids, "a layer left out is not stored")

	// The config missing: the same error as a tarball's.
	noCfg := imagetest.OCI(t, false, app)
	noCfg.DelBlob(app.ConfigDigest)
	_, err = imagetest.Open(t, writeLayoutDir(t, noCfg, dir, "nocfg"), archive.OpenOptions{})
	require.ErrorIs(t, err, archive.ErrLayerMissing)
	require.ErrorContains(t, err, "its config blobs/sha256/"+app.ConfigDigest.Encoded()+" is not in the directory")
}

// Lookups never leave the directory: a symlink that climbs out of it or is
// absolute is refused, whatever it points to; one that stays inside is
// followed.
func TestDirSymlinkEscapeRefused(t *testing.T) {
	dir := t.TempDir()
	b := imagetest.Build(t, imagetest.Simple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	layer := "blobs/sha256/" + b.BlobDigests[1].Encoded()
	outside := filepath.Join(dir, "outside.tar")
	require.NoError(t, os.WriteFile(outside, b.Blobs[1], 0o644))

	for name, target := range map[string]string{
		"relative": "../../../outside.tar",
		"absolute": outside,
		"deep":     "../../blobs/../../outside.tar",
	} {
		lay := imagetest.OCI(t, false, b)
		lay.Del(layer)
		lay.Put(imagetest.TarFile{Name: layer, Link: target})
		p := writeLayoutDir(t, lay, dir, name)
		got, err := os.ReadFile(filepath.Join(p, filepath.FromSlash(layer)))
		require.NoError(t, err, "the link works for anyone who follows it blindly")
		require.Equal(t, b.Blobs[1], got)

		_, err = imagetest.Open(t, p, archive.OpenOptions{})
		require.Error(t, err, name)
		require.NotErrorIs(t, err, archive.ErrLayerMissing, name)
		require.ErrorContains(t, err, "layer 1")
		require.ErrorContains(t, err, "escapes")
		t.Log(err)
	}

	// index.json itself a link out of the directory.
	lay := imagetest.OCI(t, false, b)
	idx := lay.Files["index.json"].Body
	require.NoError(t, os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644))
	lay.Del("index.json")
	lay.Put(imagetest.TarFile{Name: "index.json", Link: "../index.json"})
	_, err := imagetest.Open(t, writeLayoutDir(t, lay, dir, "index-out"), archive.OpenOptions{})
	require.ErrorContains(t, err, "escapes")

	// Inside: a blob linked to another name in the directory, through a
	// linked directory.
	lay = imagetest.OCI(t, false, b)
	lay.Del(layer)
	lay.Add("store/layer.tar", b.Blobs[1])
	lay.Put(imagetest.TarFile{Name: "st", Link: "store"})
	lay.Put(imagetest.TarFile{Name: layer, Link: "../../st/./layer.tar"})
	img, err := imagetest.Open(t, writeLayoutDir(t, lay, dir, "inside"), archive.OpenOptions{})
	require.NoError(t, err)
	require.Equal(t, simpleAppFiles, imagetest.Files(t, img.Layers[1]))

	// A loop.
	lay = imagetest.OCI(t, false, b)
	lay.Del(layer)
	lay.Put(imagetest.TarFile{Name: layer, Link: "loop"})
	lay.Put(imagetest.TarFile{Name: "blobs/sha256/loop", Link: b.BlobDigests[1].Encoded()})
	_, err = imagetest.Open(t, writeLayoutDir(t, lay, dir, "loop"), archive.OpenOptions{})
	require.Error(t, err)
	require.NotErrorIs(t, err, archive.ErrLayerMissing)
	t.Log(err)
}

// Only regular files are members: a fifo where a blob should be is
// refused at once (opening it would wait for a writer), a directory too.
func TestDirNonRegularMember(t *testing.T) {
	defer imagetest.Watchdog(20 * time.Second)()
	dir := t.TempDir()
	b := imagetest.Build(t, imagetest.Simple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	layer := "blobs/sha256/" + b.BlobDigests[1].Encoded()

	lay := imagetest.OCI(t, false, b)
	lay.Del(layer)
	p := writeLayoutDir(t, lay, dir, "fifo")
	require.NoError(t, syscall.Mkfifo(filepath.Join(p, filepath.FromSlash(layer)), 0o644))
	_, err := imagetest.Open(t, p, archive.OpenOptions{})
	require.ErrorContains(t, err, "is a fifo, not a file")

	p = writeLayoutDir(t, lay, dir, "subdir")
	require.NoError(t, os.Mkdir(filepath.Join(p, filepath.FromSlash(layer)), 0o755))
	_, err = imagetest.Open(t, p, archive.OpenOptions{})
	require.ErrorContains(t, err, "is a directory, not a file")
	require.ErrorContains(t, err, "layer 1")
}

// A directory that holds no image says so, and names the subdirectory the
// image is in when it was copied one level down.
func TestDirNotImage(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.Mkdir(empty, 0o755))
	_, err := imagetest.Open(t, empty, archive.OpenOptions{})
	require.ErrorIs(t, err, archive.ErrNotImage)
	require.ErrorContains(t, err, empty+": no manifest.json (docker save) or index.json (OCI layout) at the top of the directory")

	b := imagetest.Build(t, imagetest.Simple([]string{"app:1"}, tarindex.CompressionNone, tarindex.CompressionNone))
	outer := filepath.Join(dir, "outer")
	writeLayoutDir(t, imagetest.OCI(t, false, b), outer, "myimage")
	_, err = imagetest.Open(t, outer, archive.OpenOptions{})
	require.ErrorIs(t, err, archive.ErrNotImage)
	require.ErrorContains(t, err, "myimage/index.json")
	t.Log(err)

	img, err := imagetest.Open(t, filepath.Join(outer, "myimage"), archive.OpenOptions{})
	require.NoError(t, err)
	require.Equal(t, "app:1", strings.Join(img.Ref.Tags, ","))

	// A name in manifest.json that climbs out is refused before any lookup.
	lay := imagetest.Legacy(t, b)
	lay.Add("manifest.json", []byte(`[{"Config":"../x.json","RepoTags":["a:1"],"Layers":[]}]`))
	_, err = imagetest.Open(t, writeLayoutDir(t, lay, dir, "climb"), archive.OpenOptions{})
	require.ErrorIs(t, err, tarindex.ErrUnsafeName)
}
