package repack

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

// thinImages are a base image and two images built on it, as docker save
// a b would write them: the base's two layers shared, one layer each of
// their own.
func thinImages(t *testing.T, c0, c1, c2 tarindex.Compression) (base, a, b *imagetest.Built) {
	t.Helper()
	l0 := imagetest.LayerSpec{Files: map[string]string{"etc/os-release": "ID=base\n", "bin/sh": "#!shell"}, Comp: c0}
	l1 := imagetest.LayerSpec{Files: map[string]string{"usr/lib/libc.so": strings.Repeat("libc", 1000)}, Comp: c1}
	base = imagetest.Build(t, imagetest.Spec{Tags: []string{"example/base:1"}, Layers: []imagetest.LayerSpec{l0, l1}})
	a = imagetest.Build(t, imagetest.Spec{Tags: []string{"example/a:1"}, Layers: []imagetest.LayerSpec{l0, l1,
		{Files: map[string]string{"app/a": "the a app"}, Comp: c2}}})
	b = imagetest.Build(t, imagetest.Spec{Tags: []string{"example/b:1"}, Layers: []imagetest.LayerSpec{l0, l1,
		{Files: map[string]string{"app/b": "the b app", "etc/os-release": "ID=b\n"}, Comp: c2}}})
	return base, a, b
}

// thinLayout lays images out as the layout named.
func thinLayout(t *testing.T, layout string, imgs ...*imagetest.Built) *imagetest.Layout {
	t.Helper()
	switch layout {
	case "legacy":
		return imagetest.Legacy(t, imgs...)
	case "oci":
		return imagetest.OCI(t, false, imgs...)
	}
	return imagetest.OCI(t, true, imgs...)
}

// thinMember is a member as the tests compare them.
type thinMember struct {
	typ  byte
	body string
	link string
}

func readMembers(t *testing.T, p string) (map[string]thinMember, []string) {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	out := map[string]thinMember{}
	var names []string
	for _, m := range imagetest.ReadTar(t, b) {
		name := strings.TrimSuffix(m.Hdr.Name, "/")
		_, dup := out[name]
		require.False(t, dup, "%s twice", name)
		out[name] = thinMember{typ: m.Hdr.Typeflag, body: m.Body, link: m.Hdr.Linkname}
		names = append(names, name)
	}
	return out, names
}

func openContents(t *testing.T, p string) *archive.Contents {
	t.Helper()
	c, err := archive.OpenContents(p, t.TempDir(), 0)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func runThin(t *testing.T, in string, opts ThinOptions) (string, *ThinResult) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "thin.tar")
	f, err := os.Create(out)
	require.NoError(t, err)
	res, err := Thin(openContents(t, in), f, opts)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	fi, err := os.Stat(out)
	require.NoError(t, err)
	require.Equal(t, fi.Size(), res.Size)
	return out, res
}

func runComplete(t *testing.T, in string, bases ...string) (string, *CompleteResult, error) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "full.tar")
	f, err := os.Create(out)
	require.NoError(t, err)
	var bs []*archive.Contents
	for _, b := range bases {
		bs = append(bs, openContents(t, b))
	}
	tmp := t.TempDir()
	res, err := Complete(openContents(t, in), bs, f, CompleteOptions{TempDir: tmp})
	require.NoError(t, f.Close())
	left, _ := os.ReadDir(tmp)
	require.Empty(t, left, "no decompressed layer is left behind")
	return out, res, err
}

func haveOf(t *testing.T, p string) *Have {
	t.Helper()
	return HaveOf(openContents(t, p))
}

// Thin then complete gives the original back, member for member, in every
// layout and with compressed and uncompressed layers; the thin tarball
// mounts with --base and keeps the images' IDs and digests.
func TestThinCompleteRoundTrip(t *testing.T) {
	for _, layout := range []string{"legacy", "oci", "docker25"} {
		comps := []tarindex.Compression{tarindex.CompressionNone, tarindex.CompressionGzip}
		if layout == "legacy" {
			comps = comps[:1] // docker save stores layers uncompressed
		}
		for _, comp := range comps {
			t.Run(layout+"-"+comp.String(), func(t *testing.T) {
				base, a, b := thinImages(t, comp, comp, tarindex.CompressionNone)
				dir := t.TempDir()
				basePath := thinLayout(t, layout, base).Write(t, dir, "base.tar")
				full := thinLayout(t, layout, a, b).Write(t, dir, "ab.tar")

				thin, res := runThin(t, full, ThinOptions{Have: haveOf(t, basePath)})
				require.ElementsMatch(t, base.DiffIDs, res.Omitted, "the base's layers, each once")
				require.Equal(t, []string{"example/a:1", "example/b:1"}, normTags(res.Images))
				require.Empty(t, res.Dropped)
				want, wantNames := readMembers(t, full)
				got, gotNames := readMembers(t, thin)
				for name, m := range want {
					g, ok := got[name]
					if m.typ == tar.TypeReg && slicesContainsBlob(base.Blobs, m.body) {
						require.False(t, ok, "%s: a base blob is left out", name)
						continue
					}
					require.True(t, ok, "%s is kept", name)
					require.Equal(t, m, g, "%s is as it was", name)
				}
				require.Subset(t, wantNames, gotNames)
				for _, bl := range append(a.Blobs[2:], b.Blobs[2:]...) {
					require.True(t, hasBody(got, bl), "the images' own layers are kept")
				}
				thinSize, fullSize := fileSize(t, thin), fileSize(t, full)
				require.Less(t, thinSize, fullSize-int64(len(base.Blobs[1]))+512)

				// The thin tarball is still the same images, and mounts with --base.
				for _, im := range []*imagetest.Built{a, b} {
					_, err := imagetest.Open(t, thin, archive.OpenOptions{Image: im.Img.Tags[0]})
					require.ErrorIs(t, err, archive.ErrLayerMissing)
					img, err := imagetest.Open(t, thin, archive.OpenOptions{Image: im.Img.Tags[0], Bases: []string{basePath}})
					require.NoError(t, err)
					require.Equal(t, im.ConfigDigest, img.Ref.ConfigDigest)
					if layout != "legacy" {
						require.Equal(t, im.ManifestDesc.Digest, img.Ref.ManifestDigest)
					}
					require.Equal(t, "the "+strings.TrimPrefix(strings.Split(im.Img.Tags[0], ":")[0], "example/")+" app",
						imagetest.Files(t, img.Layers[2])["app/"+strings.TrimPrefix(strings.Split(im.Img.Tags[0], ":")[0], "example/")])
				}

				// Complete puts every blob back: the same members, the same bytes.
				out, cres, err := runComplete(t, thin, basePath)
				require.NoError(t, err)
				require.ElementsMatch(t, base.DiffIDs, cres.Restored)
				back, backNames := readMembers(t, out)
				require.ElementsMatch(t, wantNames, backNames)
				for name, m := range want {
					require.Equal(t, m, back[name], "%s", name)
				}
				require.Equal(t, len(a.Blobs)+len(b.Blobs)-len(base.Blobs), cres.Verified, "every layer blob checked, each once")
				for _, im := range []*imagetest.Built{a, b} {
					img, err := imagetest.Open(t, out, archive.OpenOptions{Image: im.Img.Tags[0]})
					require.NoError(t, err, "self-contained")
					require.Equal(t, im.ConfigDigest, img.Ref.ConfigDigest)
				}

				// Completing a complete tarball changes nothing.
				again, cres, err := runComplete(t, out)
				require.NoError(t, err)
				require.Empty(t, cres.Restored)
				same, _ := readMembers(t, again)
				require.Equal(t, back, same)
			})
		}
	}
}

func normTags(names []string) []string {
	var out []string
	for _, n := range names {
		// Docker 25 names an image both ways.
		for _, t := range strings.Split(n, ", ") {
			if !strings.HasPrefix(t, "docker.io/") {
				out = append(out, t)
			}
		}
	}
	return out
}

func slicesContainsBlob(blobs [][]byte, body string) bool {
	for _, b := range blobs {
		if string(b) == body {
			return true
		}
	}
	return false
}

func hasBody(ms map[string]thinMember, b []byte) bool {
	for _, m := range ms {
		if m.typ == tar.TypeReg && m.body == string(b) {
			return true
		}
	}
	return false
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	require.NoError(t, err)
	return fi.Size()
}

// --image keeps the images named, the layers they share with the others
// once, and drops the rest: their configs, manifests, layers and entries
// in index.json, manifest.json and repositories.
func TestThinImages(t *testing.T) {
	for _, layout := range []string{"legacy", "oci", "docker25"} {
		t.Run(layout, func(t *testing.T) {
			base, a, b := thinImages(t, tarindex.CompressionNone, tarindex.CompressionNone, tarindex.CompressionNone)
			dir := t.TempDir()
			l := thinLayout(t, layout, b, a) // b first: under legacy, a's base layers are links to b's
			if layout == "legacy" {
				l.Add("repositories", []byte(`{"example/a":{"1":"aaaa"},"example/b":{"1":"bbbb"}}`))
			}
			full := l.Write(t, dir, "ba.tar")
			thin, res := runThin(t, full, ThinOptions{Have: NewHave(), Images: []string{"example/a:1"}})
			require.Equal(t, []string{"example/a:1"}, normTags(res.Images))
			require.Equal(t, []string{"example/b:1"}, normTags(res.Dropped))
			require.Empty(t, res.Omitted)
			got, _ := readMembers(t, thin)
			require.False(t, hasBody(got, b.Blobs[2]), "b's own layer is dropped")
			require.False(t, hasBody(got, b.Config), "b's config is dropped")
			require.False(t, hasBody(got, b.Manifest) && layout != "legacy", "b's manifest is dropped")
			for _, bl := range a.Blobs {
				require.True(t, hasBody(got, bl), "a's layers are all there, shared ones included")
			}
			img, err := imagetest.Open(t, thin, archive.OpenOptions{})
			require.NoError(t, err, "one image left: no --image needed")
			require.Equal(t, a.ConfigDigest, img.Ref.ConfigDigest)
			require.Len(t, img.Images, 1)
			require.Equal(t, "the a app", imagetest.Files(t, img.Layers[2])["app/a"])
			if layout == "legacy" {
				var repos map[string]map[string]string
				require.NoError(t, json.Unmarshal([]byte(got["repositories"].body), &repos))
				require.Equal(t, map[string]map[string]string{"example/a": {"1": "aaaa"}}, repos)
				for name, m := range got {
					if dir := filepath.Dir(name); len(dir) == 64 && m.typ == tar.TypeSymlink {
						_, ok := got[filepath.Join(dir, m.link)]
						require.True(t, ok, "%s: links to a member that is kept", name)
					}
				}
			}

			// And thin against the base at the same time.
			thin2, res2 := runThin(t, full, ThinOptions{Have: haveOf(t, thinLayout(t, layout, base).Write(t, dir, "base.tar")), Images: []string{"example/a:1"}})
			require.ElementsMatch(t, base.DiffIDs, res2.Omitted)
			got2, _ := readMembers(t, thin2)
			require.True(t, hasBody(got2, a.Blobs[2]))
			for _, bl := range append(base.Blobs, b.Blobs[2]) {
				require.False(t, hasBody(got2, bl))
			}

			_, err = Thin(openContents(t, full), &bytes.Buffer{}, ThinOptions{Images: []string{"example/nope"}})
			require.ErrorIs(t, err, archive.ErrNoSuchImage)
		})
	}
}

// A layer is left out only where docker load can take it from its store:
// its whole chain is had.
func TestHaveLeftOut(t *testing.T) {
	d := func(s string) digest.Digest { return digest.FromString(s) }
	A, B, C, X := d("A"), d("B"), d("C"), d("X")

	h := NewHave()
	h.AddImage([]digest.Digest{A, B})
	h.AddImage([]digest.Digest{X, C})
	require.Equal(t, []bool{true, true, false}, h.LeftOut([]digest.Digest{A, B, C}), "C is had, but on another chain")
	require.Equal(t, []bool{false, false}, h.LeftOut([]digest.Digest{B, A}))
	require.Equal(t, []bool{true, false, false}, h.LeftOut([]digest.Digest{A, X, C}))

	p := NewHave()
	p.AddDiffID(A)
	p.AddDiffID(C)
	require.Equal(t, []bool{true, false, false}, p.LeftOut([]digest.Digest{A, B, C}), "a plain list: every layer below must be listed")
	p.AddDiffID(B)
	require.Equal(t, []bool{true, true, true}, p.LeftOut([]digest.Digest{A, B, C}))

	require.Equal(t, []digest.Digest{A, digest.FromString(A.String() + " " + B.String())}, ChainIDs([]digest.Digest{A, B}))
}

func TestParseHave(t *testing.T) {
	d := func(s string) digest.Digest { return digest.FromString(s) }
	A, B := d("A"), d("B")
	chain := []digest.Digest{A, B}

	h, err := ParseHave([]byte("# what the site has\n"+A.String()+"\n\n  "+B.String()+"  \n"), "list")
	require.NoError(t, err)
	require.Equal(t, map[digest.Digest]bool{A: true, B: true}, h.DiffIDs)
	require.Empty(t, h.ChainIDs)
	require.Equal(t, []bool{true, true}, h.LeftOut(chain))

	src := NewHave()
	src.AddImage(chain)
	js, err := json.Marshal(src.List())
	require.NoError(t, err)
	h, err = ParseHave(js, "json")
	require.NoError(t, err)
	require.Empty(t, h.DiffIDs, "chained: the diff_ids alone do not count")
	require.Equal(t, src.ChainIDs, h.ChainIDs)
	require.Equal(t, src.All, h.All)
	require.Equal(t, []bool{false}, h.LeftOut([]digest.Digest{B}))

	h, err = ParseHave([]byte(`{"diff_ids": ["`+A.String()+`"]}`), "json")
	require.NoError(t, err)
	require.Equal(t, map[digest.Digest]bool{A: true}, h.DiffIDs)

	h, err = ParseHave([]byte(`[{"Id":"sha256:1","RootFS":{"Type":"layers","Layers":["`+A.String()+`","`+B.String()+`"]}}]`), "inspect")
	require.NoError(t, err)
	require.Equal(t, []bool{true, true}, h.LeftOut(chain))

	h, err = ParseHave(nil, "empty")
	require.NoError(t, err)
	require.Empty(t, h.All)

	for _, bad := range []string{"sha256:abc\n", "hello\n", `{"layers": []}`, `{"diff_ids": ["x"]}`, `[{"RootFS":{"Layers":["y"]}}]`, `{`} {
		_, err := ParseHave([]byte(bad), "bad")
		require.Error(t, err, "%q", bad)
		require.Contains(t, err.Error(), "bad")
	}
}

// A layer no base has is named in the error with the images that need it.
func TestCompleteMissing(t *testing.T) {
	base, a, b := thinImages(t, tarindex.CompressionGzip, tarindex.CompressionNone, tarindex.CompressionNone)
	dir := t.TempDir()
	basePath := imagetest.OCI(t, true, base).Write(t, dir, "base.tar")
	full := imagetest.OCI(t, true, a, b).Write(t, dir, "ab.tar")
	thin, _ := runThin(t, full, ThinOptions{Have: haveOf(t, basePath)})

	_, _, err := runComplete(t, thin)
	require.ErrorIs(t, err, archive.ErrLayerMissing)
	for _, s := range []string{base.DiffIDs[0].String(), base.DiffIDs[1].String(), "example/a:1", "example/b:1", "no base was given"} {
		require.Contains(t, err.Error(), s)
	}

	// A base with only the first layer: the second is still missing.
	only0 := imagetest.Build(t, imagetest.Spec{Layers: []imagetest.LayerSpec{base.Img.Layers[0]}})
	p0 := imagetest.OCI(t, false, only0).Write(t, dir, "only0.tar")
	_, _, err = runComplete(t, thin, p0)
	require.ErrorIs(t, err, archive.ErrLayerMissing)
	require.Contains(t, err.Error(), base.DiffIDs[1].String())
	require.NotContains(t, err.Error(), base.DiffIDs[0].String())
	require.Contains(t, err.Error(), p0)

	// The base holds the layer uncompressed, the manifest names its gzip
	// blob: that cannot be made again.
	plain := imagetest.Build(t, imagetest.Spec{Layers: []imagetest.LayerSpec{{Files: base.Img.Layers[0].Files}, base.Img.Layers[1]}})
	require.Equal(t, base.DiffIDs, plain.DiffIDs)
	pp := imagetest.Legacy(t, plain).Write(t, dir, "plain.tar")
	_, _, err = runComplete(t, thin, pp)
	require.ErrorIs(t, err, archive.ErrLayerMissing)
	require.Contains(t, err.Error(), "cannot be made again")
}

// docker save's <id>/layer.tar is the layer, uncompressed or not: a base
// that holds it gzip-compressed supplies it decompressed.
func TestCompleteDecompresses(t *testing.T) {
	base, a, _ := thinImages(t, tarindex.CompressionGzip, tarindex.CompressionZstd, tarindex.CompressionNone)
	dir := t.TempDir()
	ociBase := imagetest.OCI(t, false, base).Write(t, dir, "base-oci.tar")
	plainA := imagetest.Build(t, imagetest.Spec{Tags: a.Img.Tags, Layers: []imagetest.LayerSpec{
		{Files: a.Img.Layers[0].Files}, {Files: a.Img.Layers[1].Files}, a.Img.Layers[2]}})
	full := imagetest.Legacy(t, plainA).Write(t, dir, "a.tar")
	thin, res := runThin(t, full, ThinOptions{Have: haveOf(t, ociBase)})
	require.ElementsMatch(t, base.DiffIDs, res.Omitted)
	out, cres, err := runComplete(t, thin, ociBase)
	require.NoError(t, err)
	require.Len(t, cres.Restored, 2)
	want, _ := readMembers(t, full)
	got, _ := readMembers(t, out)
	require.Equal(t, want, got)
}

// Complete checks every layer blob: one changed in the thin tarball is
// refused.
func TestCompleteVerifies(t *testing.T) {
	base, a, _ := thinImages(t, tarindex.CompressionNone, tarindex.CompressionNone, tarindex.CompressionNone)
	dir := t.TempDir()
	basePath := imagetest.Legacy(t, base).Write(t, dir, "base.tar")
	l := imagetest.Legacy(t, a)
	for _, n := range l.Names {
		if f := l.Files[n]; string(f.Body) == string(a.Blobs[2]) {
			f.Body = bytes.Replace(f.Body, []byte("the a app"), []byte("the A app"), 1)
			l.Put(f)
		}
	}
	full := l.Write(t, dir, "a.tar")
	thin, _ := runThin(t, full, ThinOptions{Have: haveOf(t, basePath)})
	_, _, err := runComplete(t, thin, basePath)
	require.ErrorIs(t, err, archive.ErrDiffIDMismatch)
	require.Contains(t, err.Error(), "layer.tar")

	// A base blob that is not what its name says is refused too.
	bl := imagetest.OCI(t, false, base)
	bad := append([]byte{}, base.Blobs[1]...)
	bad[len(bad)-2000] ^= 1
	bl.Add("blobs/sha256/"+base.BlobDigests[1].Encoded(), bad)
	badBase := bl.Write(t, dir, "bad-base.tar")
	good := imagetest.Legacy(t, a).Write(t, dir, "a-good.tar")
	thin, _ = runThin(t, good, ThinOptions{Have: haveOf(t, basePath)})
	_, _, err = runComplete(t, thin, badBase)
	require.Error(t, err)
	require.True(t, errors.Is(err, archive.ErrDiffIDMismatch) || errors.Is(err, archive.ErrDigestMismatch), "%v", err)
}

// Links in the outer tarball: a symlink to a left-out blob stays (docker
// load does not read it when it has the layer), a hard link to one goes
// (it could not be extracted); complete puts the blob back under the
// link's target.
func TestThinLinks(t *testing.T) {
	base, a, _ := thinImages(t, tarindex.CompressionNone, tarindex.CompressionNone, tarindex.CompressionNone)
	dir := t.TempDir()
	basePath := imagetest.Legacy(t, base).Write(t, dir, "base.tar")
	l := imagetest.Legacy(t, a)
	// The layout skopeo's docker-archive writes: the layers at the top as
	// <diff_id>.tar, the layer directories' layer.tar links to them, and a
	// hard link for good measure.
	var entries []imagetest.DockerEntry
	require.NoError(t, json.Unmarshal(l.Files["manifest.json"].Body, &entries))
	for i, name := range entries[0].Layers {
		top := a.DiffIDs[i].Encoded() + ".tar"
		l.Add(top, l.Files[name].Body)
		l.Put(imagetest.TarFile{Name: name, Link: "../" + top})
		entries[0].Layers[i] = top
	}
	l.Put(imagetest.TarFile{Name: "hard-0.tar", Hard: a.DiffIDs[0].Encoded() + ".tar"})
	l.Put(imagetest.TarFile{Name: "hard-2.tar", Hard: a.DiffIDs[2].Encoded() + ".tar"})
	l.Add("manifest.json", imagetest.JSON(t, entries))
	full := l.Write(t, dir, "a.tar")

	thin, res := runThin(t, full, ThinOptions{Have: haveOf(t, basePath)})
	require.ElementsMatch(t, base.DiffIDs, res.Omitted)
	got, _ := readMembers(t, thin)
	require.NotContains(t, got, a.DiffIDs[0].Encoded()+".tar")
	require.NotContains(t, got, "hard-0.tar")
	require.Contains(t, got, "hard-2.tar")
	require.Contains(t, got, a.DiffIDs[2].Encoded()+".tar")
	links := 0
	for _, m := range got {
		if m.typ == tar.TypeSymlink {
			links++
		}
	}
	require.Equal(t, 3, links, "the symlinks stay")

	out, cres, err := runComplete(t, thin, basePath)
	require.NoError(t, err)
	require.Len(t, cres.Restored, 2)
	back, _ := readMembers(t, out)
	want, _ := readMembers(t, full)
	delete(want, "hard-0.tar")
	require.Equal(t, want, back)
}

// A tarball gzipped as a whole is read through the cache and written
// uncompressed.
func TestThinGzipped(t *testing.T) {
	base, a, _ := thinImages(t, tarindex.CompressionNone, tarindex.CompressionNone, tarindex.CompressionNone)
	dir := t.TempDir()
	basePath := imagetest.Legacy(t, base).Write(t, dir, "base.tar")
	plain := imagetest.Legacy(t, a).Tar(t)
	gz := imagetest.WriteFile(t, dir, "a.tar.gz", imagetest.Compress(t, tarindex.CompressionGzip, plain))
	c := openContents(t, gz)
	require.Equal(t, tarindex.CompressionGzip, c.Compression)
	thin, res := runThin(t, gz, ThinOptions{Have: haveOf(t, basePath)})
	require.ElementsMatch(t, base.DiffIDs, res.Omitted)
	b, err := os.ReadFile(thin)
	require.NoError(t, err)
	require.Equal(t, tarindex.CompressionNone, tarindex.DetectCompression(b[:8]))
	_, err = imagetest.Open(t, thin, archive.OpenOptions{Bases: []string{basePath}})
	require.NoError(t, err)
}

// Thin with nothing had copies the tarball's members as they are.
func TestThinNothingHad(t *testing.T) {
	_, a, b := thinImages(t, tarindex.CompressionGzip, tarindex.CompressionNone, tarindex.CompressionNone)
	full := imagetest.OCI(t, true, a, b).Write(t, t.TempDir(), "ab.tar")
	thin, res := runThin(t, full, ThinOptions{})
	require.Empty(t, res.Omitted)
	want, err := os.ReadFile(full)
	require.NoError(t, err)
	got, err := os.ReadFile(thin)
	require.NoError(t, err)
	require.Equal(t, want, got, "Go's archive/tar writes the same end marker")
}

// writeLayoutDir writes a layout as a directory: what tar -xf of its
// tarball gives.
func writeLayoutDir(t *testing.T, l *imagetest.Layout) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "image")
	require.NoError(t, os.Mkdir(dir, 0o755))
	for _, n := range l.Names {
		f := l.Files[n]
		p := filepath.Join(dir, filepath.FromSlash(strings.TrimSuffix(n, "/")))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		switch {
		case f.Dir:
			require.NoError(t, os.MkdirAll(p, 0o755))
		case f.Link != "":
			require.NoError(t, os.Symlink(f.Link, p))
		default:
			require.NoError(t, os.WriteFile(p, f.Body, 0o644))
		}
	}
	return dir
}

// regular keeps the regular files and symlinks of a member listing.
func regular(ms map[string]thinMember) map[string]thinMember {
	out := map[string]thinMember{}
	for n, m := range ms {
		if m.typ == tar.TypeReg || m.typ == tar.TypeSymlink {
			out[n] = m
		}
	}
	return out
}

// Directories (an extracted docker save, an OCI layout) as the image, as
// the base and as what have lists.
func TestThinCompleteDirs(t *testing.T) {
	for _, layout := range []string{"legacy", "docker25"} {
		t.Run(layout, func(t *testing.T) {
			base, a, b := thinImages(t, tarindex.CompressionNone, tarindex.CompressionGzip, tarindex.CompressionNone)
			if layout == "legacy" {
				base, a, b = thinImages(t, tarindex.CompressionNone, tarindex.CompressionNone, tarindex.CompressionNone)
			}
			dir := t.TempDir()
			baseL := thinLayout(t, layout, base)
			baseTar, baseDir := baseL.Write(t, dir, "base.tar"), writeLayoutDir(t, baseL)
			require.Equal(t, haveOf(t, baseTar), haveOf(t, baseDir))
			fullL := thinLayout(t, layout, a, b)
			fullTar, fullDir := fullL.Write(t, dir, "ab.tar"), writeLayoutDir(t, fullL)

			thin, res := runThin(t, fullDir, ThinOptions{Have: haveOf(t, baseDir)})
			require.ElementsMatch(t, base.DiffIDs, res.Omitted)
			thinFromTar, _ := runThin(t, fullTar, ThinOptions{Have: haveOf(t, baseTar)})
			got, _ := readMembers(t, thin)
			want, _ := readMembers(t, thinFromTar)
			require.Equal(t, regular(want), regular(got), "a directory thins as its tarball does")
			_, err := imagetest.Open(t, thin, archive.OpenOptions{Image: "example/a:1", Bases: []string{baseDir}})
			require.NoError(t, err)

			out, cres, err := runComplete(t, thin, baseDir)
			require.NoError(t, err)
			require.Len(t, cres.Restored, 2)
			back, _ := readMembers(t, out)
			orig, _ := readMembers(t, fullTar)
			require.Equal(t, regular(orig), regular(back))

			// A thin directory, completed.
			thinDir := writeLayoutDirFromTar(t, thin)
			out2, _, err := runComplete(t, thinDir, baseTar)
			require.NoError(t, err)
			back2, _ := readMembers(t, out2)
			require.Equal(t, regular(orig), regular(back2))
		})
	}
}

// writeLayoutDirFromTar extracts a tarball's regular files, symlinks and
// directories into a new directory.
func writeLayoutDirFromTar(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	l := imagetest.NewLayout()
	for _, m := range imagetest.ReadTar(t, b) {
		switch m.Hdr.Typeflag {
		case tar.TypeDir:
			l.Put(imagetest.TarFile{Name: m.Hdr.Name, Dir: true})
		case tar.TypeSymlink:
			l.Put(imagetest.TarFile{Name: m.Hdr.Name, Link: m.Hdr.Linkname})
		case tar.TypeReg:
			l.Add(m.Hdr.Name, []byte(m.Body))
		}
	}
	return writeLayoutDir(t, l)
}
