package repack

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/overlay/union"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

var commitTime = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// simpleImage writes imagetest.Simple (gzip base, uncompressed top) in the layout
// named ("legacy", "oci", "docker25") and opens it.
func simpleImage(t *testing.T, layout string) (*archive.Image, *imagetest.Built, string) {
	t.Helper()
	b := imagetest.Build(t, imagetest.Simple([]string{"example/app:1.0"}, tarindex.CompressionGzip, tarindex.CompressionNone))
	var l *imagetest.Layout
	switch layout {
	case "legacy":
		b = imagetest.Build(t, imagetest.Simple([]string{"example/app:1.0"}, tarindex.CompressionNone, tarindex.CompressionNone))
		l = imagetest.Legacy(t, b)
	case "oci":
		l = imagetest.OCI(t, false, b)
	default:
		l = imagetest.OCI(t, true, b)
	}
	p := l.Write(t, t.TempDir(), "in.tar")
	img, err := imagetest.Open(t, p, archive.OpenOptions{})
	require.NoError(t, err)
	return img, b, p
}

// commitToFile commits img with opts into a file and returns its path.
func commitToFile(t *testing.T, img *archive.Image, opts CommitOptions) (string, *CommitResult) {
	t.Helper()
	if opts.Created.IsZero() {
		opts.Created = commitTime
	}
	opts.TempDir = t.TempDir()
	out := filepath.Join(t.TempDir(), "out.tar")
	f, err := os.Create(out)
	require.NoError(t, err)
	res, err := Commit(img, f, opts)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	left, _ := os.ReadDir(opts.TempDir)
	if res.NewLayer != nil && res.NewLayer.Path != "" {
		require.Len(t, left, 1, "only the new layer's blob is left for the caller")
	} else {
		require.Empty(t, left, "a layer written in place leaves no blob")
	}
	return out, res
}

// tarMembers reads an outer tarball's regular members.
func tarMembers(t *testing.T, path string) map[string][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	out := map[string][]byte{}
	for _, e := range imagetest.ReadTar(t, b) {
		if e.Hdr.Typeflag == 0 || e.Hdr.Typeflag == '0' {
			out[e.Hdr.Name] = []byte(e.Body)
		}
	}
	return out
}

// checkBlobDigests checks that every blob is named by its own digest.
func checkBlobDigests(t *testing.T, m map[string][]byte) {
	t.Helper()
	for name, body := range m {
		if d := blobDigest(name); d != "" {
			require.Equal(t, d, digest.FromBytes(body), "%s holds other content", name)
		}
	}
}

// treeFacts flattens a tree: path → type, mode, owner, content.
func treeFacts(t *testing.T, tr *union.Tree) map[string]string {
	t.Helper()
	out := map[string]string{}
	union.Walk(tr.Root, func(n *union.Node) {
		if n.Parent == nil {
			return
		}
		st := union.NodeStat(n)
		s := ""
		if n.Entry != nil && n.Entry.Type == tarindex.TypeReg {
			buf := make([]byte, n.Entry.Size)
			_, _ = tr.ReadAt(n, buf, 0)
			s = string(buf)
		}
		if n.Entry != nil && n.Entry.Type == tarindex.TypeSymlink {
			s = "-> " + n.Entry.Linkname
		}
		out[n.Path()] = fmtFact(st.Mode, st.Uid, st.Gid, st.Nlink, s)
	})
	return out
}

func fmtFact(mode, uid, gid uint32, nlink uint64, s string) string {
	b, _ := json.Marshal([]any{mode, uid, gid, nlink, s})
	return string(b)
}

// smallUpper edits imagetest.Simple's image: changes a file, adds one,
// deletes one, makes a hardlink.
func smallUpper(t *testing.T) *imagetest.Upper {
	u := imagetest.NewUpper(t)
	u.Mkdir("etc", 0o755)
	u.File("etc/os-release", "ID=edited\n", 0o644)
	u.Whiteout("bin", "sh")
	u.Mkdir("bin", 0o755)
	u.File("app/new", "new file\n", 0o644)
	u.Link("app/new", "app/new-link")
	return u
}

func TestCommitAppendsOneLayer(t *testing.T) {
	for _, layout := range []string{"legacy", "oci", "docker25"} {
		t.Run(layout, func(t *testing.T) {
			img, built, _ := simpleImage(t, layout)
			u := smallUpper(t)
			out, res := commitToFile(t, img, CommitOptions{Upper: u.Dir, Compression: tarindex.CompressionGzip, Message: "edited", CreatedBy: "imgmount commit"})
			require.Equal(t, 3, res.Layers)
			m := tarMembers(t, out)
			checkBlobDigests(t, m)
			for i, blob := range built.Blobs {
				d := digest.FromBytes(blob)
				require.Equal(t, blob, m[archive.BlobPath(d)], "layer %d is copied byte for byte", i)
			}
			require.Contains(t, m, "oci-layout")
			require.Contains(t, m, "index.json")
			require.Contains(t, m, "manifest.json")

			re, err := imagetest.Open(t, out, archive.OpenOptions{})
			require.NoError(t, err)
			require.Equal(t, archive.FormatDockerOCI, re.Format)
			require.Equal(t, res.ConfigDigest, re.Ref.ConfigDigest)
			require.Equal(t, []string{"example/app:1.0"}, re.Ref.Tags, "the original tag is kept")
			require.Len(t, re.Layers, 3)
			require.Equal(t, res.NewLayer.DiffID, re.Config.RootFS.DiffIDs[2])
			require.Equal(t, tarindex.CompressionGzip, re.Layers[2].Compression)
			require.Equal(t, built.DiffIDs, re.Config.RootFS.DiffIDs[:2])
			h := re.Config.History
			require.Len(t, h, 4)
			require.Equal(t, "edited", h[3].Comment)
			require.Equal(t, "imgmount commit", h[3].CreatedBy)
			require.False(t, h[3].EmptyLayer)
			require.True(t, re.Config.Created.Equal(commitTime))
			require.Equal(t, img.Config.Config.Env, re.Config.Config.Env)

			tr, err := union.BuildUnion(re)
			require.NoError(t, err)
			facts := treeFacts(t, tr)
			require.Contains(t, facts["etc/os-release"], "ID=edited")
			require.NotContains(t, facts, "bin/sh")
			require.Contains(t, facts["app/new"], "new file")
			require.Equal(t, tr.Find("app/new").Ino, tr.Find("app/new-link").Ino, "hardlink kept")
			require.Contains(t, facts["app/main"], "hello world")
		})
	}
}

func TestCommitDeterministic(t *testing.T) {
	for _, comp := range []tarindex.Compression{tarindex.CompressionNone, tarindex.CompressionGzip, tarindex.CompressionZstd} {
		img, _, _ := simpleImage(t, "oci")
		u := imagetest.SampleUpper(t)
		a, _ := commitToFile(t, img, CommitOptions{Upper: u.Dir, Compression: comp})
		b, _ := commitToFile(t, img, CommitOptions{Upper: u.Dir, Compression: comp})
		ab, err := os.ReadFile(a)
		require.NoError(t, err)
		bb, err := os.ReadFile(b)
		require.NoError(t, err)
		require.True(t, bytes.Equal(ab, bb), "%s: two commits of the same edits differ", comp)
	}
}

func TestCommitFormats(t *testing.T) {
	img, _, _ := simpleImage(t, "docker25")
	u := smallUpper(t)
	out, res := commitToFile(t, img, CommitOptions{Upper: u.Dir, Format: OutputDocker, Tags: []string{"mine/app:2"}})
	m := tarMembers(t, out)
	require.NotContains(t, m, "index.json")
	require.NotContains(t, m, "oci-layout")
	require.Empty(t, res.ManifestDigest)
	var entries []archive.DockerManifestEntry
	require.NoError(t, json.Unmarshal(m["manifest.json"], &entries))
	require.Len(t, entries, 1)
	require.Equal(t, []string{"mine/app:2"}, entries[0].RepoTags)
	require.Len(t, entries[0].Layers, 3)
	re, err := imagetest.Open(t, out, archive.OpenOptions{})
	require.NoError(t, err)
	require.Equal(t, archive.FormatDockerLegacy, re.Format)

	out, res = commitToFile(t, img, CommitOptions{Upper: u.Dir, Format: OutputOCI, Tags: []string{"mine/app:2", "plainname"}})
	m = tarMembers(t, out)
	require.NotContains(t, m, "manifest.json")
	var idx ocispec.Index
	require.NoError(t, json.Unmarshal(m["index.json"], &idx))
	require.Len(t, idx.Manifests, 2, "one entry per tag")
	require.Equal(t, res.ManifestDigest, idx.Manifests[0].Digest)
	require.Equal(t, "2", idx.Manifests[0].Annotations[ocispec.AnnotationRefName])
	require.Equal(t, "mine/app:2", idx.Manifests[0].Annotations[archive.AnnotationContainerdName])
	require.Equal(t, "plainname", idx.Manifests[1].Annotations[ocispec.AnnotationRefName])
	require.Equal(t, "amd64", idx.Manifests[0].Platform.Architecture)
	var man ocispec.Manifest
	require.NoError(t, json.Unmarshal(m[archive.BlobPath(res.ManifestDigest)], &man))
	require.Equal(t, ocispec.MediaTypeImageLayerGzip, man.Layers[0].MediaType, "media types follow the stored bytes")
	require.Equal(t, ocispec.MediaTypeImageLayer, man.Layers[2].MediaType)
	re, err = imagetest.Open(t, out, archive.OpenOptions{Image: "mine/app:2"})
	require.NoError(t, err)
	require.Equal(t, archive.FormatOCI, re.Format)

	_, err = Commit(img, &bytes.Buffer{}, CommitOptions{Format: "tarball"})
	require.ErrorContains(t, err, "tarball")
}

func TestCommitEmptyUpper(t *testing.T) {
	img, _, _ := simpleImage(t, "oci")
	out, res := commitToFile(t, img, CommitOptions{Upper: imagetest.NewUpper(t).Dir, Config: ConfigEdits{Env: []string{"A=c"}}})
	require.Nil(t, res.NewLayer)
	require.Equal(t, 2, res.Layers)
	re, err := imagetest.Open(t, out, archive.OpenOptions{})
	require.NoError(t, err)
	require.Len(t, re.Layers, 2)
	h := re.Config.History
	require.True(t, h[len(h)-1].EmptyLayer, "a commit without changes adds no layer and says so in its history entry")
	require.Equal(t, []string{"PATH=/bin", "A=c"}, re.Config.Config.Env)
}

func TestCommitSquash(t *testing.T) {
	img, _, _ := simpleImage(t, "docker25")
	u := smallUpper(t)
	out, res := commitToFile(t, img, CommitOptions{Upper: u.Dir, Squash: true, Compression: tarindex.CompressionZstd})
	require.Equal(t, 1, res.Layers)
	checkBlobDigests(t, tarMembers(t, out))
	re, err := imagetest.Open(t, out, archive.OpenOptions{})
	require.NoError(t, err)
	require.Len(t, re.Layers, 1)
	require.Len(t, re.Config.History, 1)
	require.Equal(t, img.Config.Config.Env, re.Config.Config.Env)
	require.Equal(t, img.Config.Config.Entrypoint, re.Config.Config.Entrypoint)
	require.Equal(t, img.Config.Config.ExposedPorts, re.Config.Config.ExposedPorts)

	// The squashed union is the union of the image with the upper on top.
	want, release, err := unionWithUpper(context.Background(), img, u.Dir, t.TempDir(), nil)
	require.NoError(t, err)
	defer release()
	got, err := union.BuildUnion(re)
	require.NoError(t, err)
	wf, gf := treeFacts(t, want), treeFacts(t, got)
	require.Equal(t, wf, gf)
	require.Contains(t, gf["etc/os-release"], "ID=edited")
}

func TestCommitThin(t *testing.T) {
	img, built, in := simpleImage(t, "docker25")
	u := smallUpper(t)
	base, err := archive.StoredDiffIDs(in, t.TempDir())
	require.NoError(t, err)
	require.Len(t, base, 2)
	out, res := commitToFile(t, img, CommitOptions{Upper: u.Dir, ThinFrom: base})
	require.ElementsMatch(t, built.DiffIDs, res.Omitted)
	m := tarMembers(t, out)
	for _, blob := range built.Blobs {
		require.NotContains(t, m, archive.BlobPath(digest.FromBytes(blob)), "a base layer's blob is left out")
	}
	_, err = imagetest.Open(t, out, archive.OpenOptions{})
	require.ErrorIs(t, err, archive.ErrLayerMissing)
	re, err := imagetest.Open(t, out, archive.OpenOptions{Bases: []string{in}})
	require.NoError(t, err)
	require.Len(t, re.Layers, 3)

	thinIDs, err := archive.StoredDiffIDs(out, "")
	require.NoError(t, err)
	require.Equal(t, map[digest.Digest]bool{res.NewLayer.DiffID: true}, thinIDs, "a thin tarball supplies only what it holds")
}

func TestExportUnion(t *testing.T) {
	img, _, _ := simpleImage(t, "oci")
	u := smallUpper(t)
	var buf bytes.Buffer
	n, err := Export(img, &buf, ExportOptions{Upper: u.Dir, TempDir: t.TempDir()})
	require.NoError(t, err)
	es := imagetest.ReadTar(t, buf.Bytes())
	require.Len(t, es, n)
	names := imagetest.Names(es)
	require.True(t, sort.StringsAreSorted(names), "%q", names)
	require.Equal(t, []string{"app/", "app/main", "app/new", "app/new-link", "bin/", "etc/", "etc/os-release"}, names)
	require.Equal(t, "ID=edited\n", imagetest.Find(t, es, "etc/os-release").Body)
	require.Equal(t, "app/new", imagetest.Find(t, es, "app/new-link").Hdr.Linkname)
	for _, e := range es {
		require.NotContains(t, e.Hdr.Name, union.WhiteoutPrefix)
	}
}

// A stored blob nobody checked on open (no cache directory) is hashed as it
// is copied: one corrupted after it was written makes commit fail rather
// than write an image whose blob does not match its name.
func TestCommitRefusesCorruptBlob(t *testing.T) {
	b := imagetest.Build(t, imagetest.Simple([]string{"example/app:1.0"}, tarindex.CompressionNone, tarindex.CompressionNone))
	p := imagetest.Legacy(t, b).Write(t, t.TempDir(), "in.tar")
	raw, err := os.ReadFile(p)
	require.NoError(t, err)
	i := bytes.Index(raw, []byte("hello world"))
	require.Positive(t, i)
	raw[i] = 'J' // file content only: the tar headers still parse
	require.NoError(t, os.WriteFile(p, raw, 0o644))

	img, err := archive.Open(p, archive.OpenOptions{})
	require.NoError(t, err)
	defer img.Close()
	require.False(t, img.Layers[1].StoredVerified)
	_, err = Commit(img, io.Discard, CommitOptions{Upper: smallUpper(t).Dir, Created: commitTime, TempDir: t.TempDir()})
	require.ErrorContains(t, err, "does not match its digest")
	require.ErrorContains(t, err, "the input is corrupt")
}

// blobDigest is the digest an OCI layout's blob path names, or "".
func blobDigest(name string) digest.Digest {
	hex, ok := strings.CutPrefix(name, "blobs/sha256/")
	if !ok {
		return ""
	}
	return digest.NewDigestFromEncoded(digest.SHA256, hex)
}
