package integration

// imgmount thin and the inspect of tarballs it makes or reads, checked
// against the tarballs as Go's archive/tar reads them: what thin keeps is
// the original byte for byte (the images keep their identity), and what
// inspect says of a tarball of several images is what its manifest.json
// or index.json and configs say.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

// goTarball is a tarball as Go's archive/tar reads it (through gzip when
// it is compressed as a whole): every member's header, the bytes of the
// small ones, and the sha256 of every regular member.
type goTarball struct {
	order  []string
	hdrs   map[string]*tar.Header
	small  map[string][]byte // regular members of up to 1 MiB
	sha256 map[string]string
}

func readGoTarball(t *testing.T, p string) *goTarball {
	t.Helper()
	f, err := os.Open(p)
	require.NoError(t, err)
	defer f.Close()
	var r io.Reader = f
	head := make([]byte, 2)
	if _, err := io.ReadFull(f, head); err == nil && head[0] == 0x1f && head[1] == 0x8b {
		_, err = f.Seek(0, io.SeekStart)
		require.NoError(t, err)
		gz, err := gzip.NewReader(f)
		require.NoError(t, err)
		defer gz.Close()
		r = gz
	} else {
		_, err = f.Seek(0, io.SeekStart)
		require.NoError(t, err)
	}
	tb := &goTarball{hdrs: map[string]*tar.Header{}, small: map[string][]byte{}, sha256: map[string]string{}}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "%s: archive/tar", p)
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		tb.order = append(tb.order, name)
		tb.hdrs[name] = h
		if h.Typeflag != tar.TypeReg {
			continue
		}
		hash := sha256.New()
		var buf bytes.Buffer
		w := io.Writer(hash)
		if h.Size <= 1<<20 {
			w = io.MultiWriter(hash, &buf)
		}
		_, err = io.Copy(w, tr)
		require.NoError(t, err, "%s: %s", p, name)
		tb.sha256[name] = hex.EncodeToString(hash.Sum(nil))
		if h.Size <= 1<<20 {
			tb.small[name] = buf.Bytes()
		}
	}
	return tb
}

// resolve follows symlinks and hard links to the regular member that
// holds name's bytes ("" when none does).
func (tb *goTarball) resolve(name string) string {
	for range 16 {
		h, ok := tb.hdrs[name]
		if !ok {
			return ""
		}
		switch h.Typeflag {
		case tar.TypeReg:
			return name
		case tar.TypeSymlink:
			name = path.Clean(path.Join(path.Dir(name), h.Linkname))
		case tar.TypeLink:
			name = path.Clean(strings.TrimPrefix(h.Linkname, "./"))
		default:
			return ""
		}
	}
	return ""
}

func (tb *goTarball) json(t *testing.T, name string, v any) {
	t.Helper()
	stored := tb.resolve(name)
	require.NotEmpty(t, stored, "member %s", name)
	b, ok := tb.small[stored]
	require.True(t, ok, "member %s is small", name)
	require.NoError(t, json.Unmarshal(b, v), "member %s", name)
}

// goImage is one image of a tarball as goTarball reads it.
type goImage struct {
	tags     []string
	config   string // member
	configID digest.Digest
	diffIDs  []digest.Digest
	layers   []string // members (docker save) or blob paths (OCI)
	metadata []string // the members that describe it: manifest, config
}

// images lists the images of the tarball: from manifest.json (docker
// save, any version) or else from index.json (an OCI archive; nested
// indexes are not followed).
func (tb *goTarball) images(t *testing.T) []goImage {
	t.Helper()
	var out []goImage
	addConfig := func(im *goImage) {
		var cfg ocispec.Image
		tb.json(t, im.config, &cfg)
		im.diffIDs = cfg.RootFS.DiffIDs
		im.configID = digest.FromBytes(tb.small[tb.resolve(im.config)])
		im.metadata = append(im.metadata, im.config)
	}
	if _, ok := tb.hdrs["manifest.json"]; ok {
		var entries []struct {
			Config   string
			RepoTags []string
			Layers   []string
		}
		tb.json(t, "manifest.json", &entries)
		for _, e := range entries {
			im := goImage{tags: e.RepoTags, config: path.Clean(e.Config), layers: e.Layers}
			addConfig(&im)
			out = append(out, im)
		}
		return out
	}
	var idx ocispec.Index
	tb.json(t, "index.json", &idx)
	for _, d := range idx.Manifests {
		var m ocispec.Manifest
		mp := "blobs/sha256/" + d.Digest.Encoded()
		tb.json(t, mp, &m)
		im := goImage{config: "blobs/sha256/" + m.Config.Digest.Encoded(), metadata: []string{mp}}
		if n := d.Annotations[ocispec.AnnotationRefName]; n != "" {
			im.tags = []string{n}
		}
		for _, l := range m.Layers {
			im.layers = append(im.layers, "blobs/sha256/"+l.Digest.Encoded())
		}
		addConfig(&im)
		out = append(out, im)
	}
	return out
}

// requireThinKeepsIdentity checks thin against the tarball full it was
// made from, both read with Go's archive/tar: every member of thin is
// full's, the same type, link target and bytes; manifest.json,
// index.json, repositories and every image's config and manifest are
// there; and what thin lacks is layer blobs only. It returns the members
// thin left out.
func requireThinKeepsIdentity(t *testing.T, full, thin string) (leftOut []string) {
	t.Helper()
	f, th := readGoTarball(t, full), readGoTarball(t, thin)
	for _, name := range th.order {
		fh, ok := f.hdrs[name]
		require.True(t, ok, "%s: %s is not in %s", thin, name, full)
		h := th.hdrs[name]
		require.Equal(t, fh.Typeflag, h.Typeflag, "%s: type", name)
		require.Equal(t, fh.Linkname, h.Linkname, "%s: link target", name)
		if h.Typeflag == tar.TypeReg {
			require.Equal(t, f.sha256[name], th.sha256[name], "%s: the same bytes as in %s", name, full)
		}
	}
	layers := map[string]bool{}
	for _, im := range f.images(t) {
		for _, l := range im.layers {
			layers[path.Clean(l)] = true
			layers[f.resolve(path.Clean(l))] = true
		}
		for _, m := range append([]string{"manifest.json", "index.json", "repositories", "oci-layout"}, im.metadata...) {
			if _, ok := f.hdrs[m]; ok {
				require.Contains(t, th.hdrs, m, "%s keeps %s", thin, m)
				require.Equal(t, f.sha256[f.resolve(m)], th.sha256[th.resolve(m)], "%s: %s byte for byte", thin, m)
			}
		}
	}
	for _, name := range f.order {
		if _, ok := th.hdrs[name]; !ok {
			require.True(t, layers[name], "%s left out %s, which is no layer blob", thin, name)
			leftOut = append(leftOut, name)
		}
	}
	return leftOut
}

// TestThinDebian: the Debian test image, in each of its layouts, thinned
// against its base (the debootstrap layer, layer 0) is under 1% of the
// full tarball; every member it keeps is the original's, byte for byte;
// inspect describes it without the base (layer 0 absent) and with it;
// complete puts back the very members it left out; and it mounts with
// the full image as --base, the same tree as umoci's unpack.
func TestThinDebian(t *testing.T) {
	requireFUSE(t)
	for _, img := range debianImages {
		t.Run(img.name, func(t *testing.T) {
			full := img.path()
			ims := readGoTarball(t, full).images(t)
			require.NotEmpty(t, ims)
			base := ims[0].diffIDs[0]
			dir := t.TempDir()
			have := filepath.Join(dir, "site.have")
			require.NoError(t, os.WriteFile(have, []byte(base.String()+"\n"), 0o644))
			thin := filepath.Join(dir, "thin.tar")
			r := run(t, 2*time.Minute, "thin", full, "--have", have, "-o", thin, "--cache-dir", sharedCache)
			require.Equal(t, 0, r.code, "%s", r)
			require.NotContains(t, r.stderr, "none of these layers")

			fullSize, thinSize := sizeOf(t, full), sizeOf(t, thin)
			t.Logf("%s: %d bytes; thinned against its debootstrap layer: %d bytes (%.2f%%)", img.name, fullSize, thinSize, 100*float64(thinSize)/float64(fullSize))
			require.Less(t, thinSize*100, fullSize, "the thin tarball is under 1%% of the full one")

			leftOut := requireThinKeepsIdentity(t, full, thin)
			require.Len(t, leftOut, 1, "one layer blob left out: %v", leftOut)

			// inspect: without the base, layer 0 absent; with it, whole.
			for _, c := range []struct {
				args   []string
				absent []bool
			}{
				{nil, []bool{true, false, false, false}},
				{[]string{"--base", full}, []bool{false, false, false, false}},
			} {
				r = run(t, 2*time.Minute, append([]string{"inspect", "--json", "--cache-dir", sharedCache, thin}, c.args...)...)
				require.Equal(t, 0, r.code, "%s", r)
				var got struct {
					Image struct {
						ConfigDigest digest.Digest `json:"config_digest"`
					} `json:"image"`
					Layers []struct {
						DiffID digest.Digest `json:"diff_id"`
						Absent bool          `json:"absent"`
					} `json:"layers"`
				}
				require.NoError(t, json.Unmarshal([]byte(r.stdout), &got))
				require.Equal(t, ims[0].configID, got.Image.ConfigDigest)
				require.Len(t, got.Layers, len(ims[0].diffIDs))
				for i, l := range got.Layers {
					require.Equal(t, ims[0].diffIDs[i], l.DiffID)
					require.Equal(t, c.absent[i], l.Absent, "layer %d (inspect %v)", i, c.args)
				}
			}
			r = run(t, 2*time.Minute, "inspect", "--cache-dir", sharedCache, thin)
			require.Equal(t, 0, r.code, "%s", r)
			require.Regexp(t, `(?m)^  0  `+base.Encoded()[:12]+`  absent `, r.stdout)
			require.Contains(t, r.stdout, "--base BASE.tar")

			if img.gz {
				return // complete writes it uncompressed: nothing to compare member for member
			}
			completed := filepath.Join(dir, "complete.tar")
			r = run(t, 2*time.Minute, "complete", thin, "--base", full, "-o", completed, "--cache-dir", sharedCache)
			require.Equal(t, 0, r.code, "%s", r)
			f, c := readGoTarball(t, full), readGoTarball(t, completed)
			require.ElementsMatch(t, f.order, c.order, "complete gives back every member")
			for name, sum := range f.sha256 {
				require.Equal(t, sum, c.sha256[name], "%s: byte for byte", name)
			}
		})
	}
	t.Run("mount", func(t *testing.T) {
		img := debianImages[0]
		ims := readGoTarball(t, img.path()).images(t)
		have := filepath.Join(t.TempDir(), "site.have")
		require.NoError(t, os.WriteFile(have, []byte(ims[0].diffIDs[0].String()+"\n"), 0o644))
		thin := filepath.Join(t.TempDir(), "thin.tar")
		r := run(t, 2*time.Minute, "thin", img.path(), "--have", have, "-o", thin, "--cache-dir", sharedCache)
		require.Equal(t, 0, r.code, "%s", r)
		mnt := mountImage(t, thin, "--base", img.path())
		compareWithOracle(t, mnt, oracle(t, img).rootfs, false)
	})
}

// requireTarballInspect checks imgmount inspect of a tarball of several
// images without --image, text and JSON, against what Go's archive/tar
// reads of it: every image with its layers and the size of their
// members, and each layer once with the images that have it.
func requireTarballInspect(t *testing.T, p string) {
	t.Helper()
	tb := readGoTarball(t, p)
	want := tb.images(t)
	require.Greater(t, len(want), 1, "%s holds several images", p)
	r := run(t, 2*time.Minute, "inspect", "--json", "--cache-dir", sharedCache, p)
	require.Equal(t, 0, r.code, "%s", r)
	type imageJSON struct {
		Tags         []string        `json:"tags"`
		ConfigDigest digest.Digest   `json:"config_digest"`
		Layers       int             `json:"layers"`
		DiffIDs      []digest.Digest `json:"diff_ids"`
		StoredSize   int64           `json:"stored_size"`
		AbsentLayers int             `json:"absent_layers"`
	}
	var got struct {
		Images []imageJSON `json:"images"`
		Layers []struct {
			DiffID digest.Digest `json:"diff_id"`
			Absent bool          `json:"absent"`
			UsedBy []int         `json:"used_by"`
		} `json:"layers"`
		StoredSize int64 `json:"stored_size"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &got), r.stdout)
	require.Len(t, got.Images, len(want))

	wantUsers := map[digest.Digest][]digest.Digest{} // diff_id: configs of the images that have it
	var wantTotal int64
	blobs := map[string]bool{}
	for _, w := range want {
		i := slices.IndexFunc(got.Images, func(g imageJSON) bool { return g.ConfigDigest == w.configID })
		require.GreaterOrEqual(t, i, 0, "image %v (config %s) is listed", w.tags, w.configID)
		g := got.Images[i]
		for _, tag := range w.tags {
			require.True(t, slices.ContainsFunc(g.Tags, func(s string) bool { return s == tag || strings.HasSuffix(s, "/"+tag) }), "%v has %s", g.Tags, tag)
		}
		require.Equal(t, len(w.diffIDs), g.Layers)
		require.Equal(t, w.diffIDs, g.DiffIDs)
		var size int64
		for _, l := range w.layers {
			if m := tb.resolve(path.Clean(l)); m != "" {
				size += tb.hdrs[m].Size
				if !blobs[m] {
					blobs[m] = true
					wantTotal += tb.hdrs[m].Size
				}
			}
		}
		require.Equal(t, size, g.StoredSize, "image %v: its layer members' sizes", w.tags)
		require.Zero(t, g.AbsentLayers)
		for _, d := range w.diffIDs {
			if !slices.Contains(wantUsers[d], w.configID) {
				wantUsers[d] = append(wantUsers[d], w.configID)
			}
		}
	}
	require.Equal(t, wantTotal, got.StoredSize)
	require.Len(t, got.Layers, len(wantUsers), "each layer once")
	var shared []digest.Digest
	for _, l := range got.Layers {
		var users []digest.Digest
		for _, i := range l.UsedBy {
			users = append(users, got.Images[i].ConfigDigest)
		}
		require.ElementsMatch(t, wantUsers[l.DiffID], users, "layer %s: the images that have it", l.DiffID)
		require.False(t, l.Absent)
		if len(users) > 1 {
			shared = append(shared, l.DiffID)
		}
	}

	r = run(t, 2*time.Minute, "inspect", "--cache-dir", sharedCache, p)
	require.Equal(t, 0, r.code, "%s", r)
	for _, w := range want {
		require.Contains(t, r.stdout, w.configID.Encoded()[:12])
	}
	require.Contains(t, r.stdout, "Layers shared by several images:\n")
	for _, d := range shared {
		require.Regexp(t, `(?m)^  `+d.Encoded()[:12]+`  `, r.stdout)
	}
	if len(shared) == 0 {
		require.Contains(t, r.stdout, "Layers shared by several images:\n  none\n")
	}
	require.Contains(t, r.stdout, "--image REF")
	t.Logf("inspect %s:\n%s", p, r.stdout)
}
