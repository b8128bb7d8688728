package overlay

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

var rpCreated = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// rpImage writes archSimple (gzip base, uncompressed top) in the layout
// named ("legacy", "oci", "docker25") and opens it.
func rpImage(t *testing.T, layout string) (*Image, *archBuilt, string) {
	t.Helper()
	b := archBuild(t, archSimple([]string{"example/app:1.0"}, tarindex.CompressionGzip, tarindex.CompressionNone))
	var l *archLayout
	switch layout {
	case "legacy":
		b = archBuild(t, archSimple([]string{"example/app:1.0"}, tarindex.CompressionNone, tarindex.CompressionNone))
		l = archLegacy(t, b)
	case "oci":
		l = archOCI(t, false, b)
	default:
		l = archOCI(t, true, b)
	}
	p := l.write(t, t.TempDir(), "in.tar")
	img, err := archOpen(t, p, OpenOptions{})
	require.NoError(t, err)
	return img, b, p
}

// rpCommit commits img with opts into a file and returns its path.
func rpCommit(t *testing.T, img *Image, opts CommitOptions) (string, *CommitResult) {
	t.Helper()
	if opts.Created.IsZero() {
		opts.Created = rpCreated
	}
	opts.TempDir = t.TempDir()
	out := filepath.Join(t.TempDir(), "out.tar")
	f, err := os.Create(out)
	require.NoError(t, err)
	res, err := Commit(img, f, opts)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	left, _ := os.ReadDir(opts.TempDir)
	if res.NewLayer != nil {
		require.Len(t, left, 1, "only the new layer's blob is left for the caller")
	}
	return out, res
}

// rpMembers reads an outer tarball's regular members.
func rpMembers(t *testing.T, path string) map[string][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	out := map[string][]byte{}
	for _, e := range rpReadTar(t, b) {
		if e.hdr.Typeflag == 0 || e.hdr.Typeflag == '0' {
			out[e.hdr.Name] = []byte(e.body)
		}
	}
	return out
}

// rpCheckBlobs checks that every blob is named by its own digest.
func rpCheckBlobs(t *testing.T, m map[string][]byte) {
	t.Helper()
	for name, body := range m {
		if d := digestFromPath(name); d != "" {
			require.Equal(t, d, digest.FromBytes(body), "%s holds other content", name)
		}
	}
}

// rpTreeFacts flattens a tree: path → type, mode, owner, content.
func rpTreeFacts(t *testing.T, tr *Tree) map[string]string {
	t.Helper()
	out := map[string]string{}
	walk(tr.Root, func(n *Node) {
		if n.Parent == nil {
			return
		}
		st := NodeStat(n)
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

// rpSmallUpper edits archSimple's image: changes a file, adds one,
// deletes one, makes a hardlink.
func rpSmallUpper(t *testing.T) *rpUpper {
	u := rpNewUpper(t)
	u.mkdir("etc", 0o755)
	u.file("etc/os-release", "ID=edited\n", 0o644)
	u.whiteout("bin", "sh")
	u.mkdir("bin", 0o755)
	u.file("app/new", "new file\n", 0o644)
	u.link("app/new", "app/new-link")
	return u
}

func TestCommitAppendsOneLayer(t *testing.T) {
	for _, layout := range []string{"legacy", "oci", "docker25"} {
		t.Run(layout, func(t *testing.T) {
			img, built, _ := rpImage(t, layout)
			u := rpSmallUpper(t)
			out, res := rpCommit(t, img, CommitOptions{Upper: u.dir, Compression: tarindex.CompressionGzip, Message: "edited", CreatedBy: "imgmount commit"})
			require.Equal(t, 3, res.Layers)
			m := rpMembers(t, out)
			rpCheckBlobs(t, m)
			for i, blob := range built.Blobs {
				d := digest.FromBytes(blob)
				require.Equal(t, blob, m[blobPath(d)], "layer %d is copied byte for byte", i)
			}
			require.Contains(t, m, "oci-layout")
			require.Contains(t, m, "index.json")
			require.Contains(t, m, "manifest.json")

			re, err := archOpen(t, out, OpenOptions{})
			require.NoError(t, err)
			require.Equal(t, FormatDockerOCI, re.Format)
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
			require.True(t, re.Config.Created.Equal(rpCreated))
			require.Equal(t, img.Config.Config.Env, re.Config.Config.Env)

			tr, err := BuildUnion(re)
			require.NoError(t, err)
			facts := rpTreeFacts(t, tr)
			require.Contains(t, facts["etc/os-release"], "ID=edited")
			require.NotContains(t, facts, "bin/sh")
			require.Contains(t, facts["app/new"], "new file")
			require.Equal(t, unionLookup(tr, "app/new").Ino, unionLookup(tr, "app/new-link").Ino, "hardlink kept")
			require.Contains(t, facts["app/main"], "hello world")
		})
	}
}

func TestCommitDeterministic(t *testing.T) {
	for _, comp := range []tarindex.Compression{tarindex.CompressionNone, tarindex.CompressionGzip, tarindex.CompressionZstd} {
		img, _, _ := rpImage(t, "oci")
		u := rpSampleUpper(t)
		a, _ := rpCommit(t, img, CommitOptions{Upper: u.dir, Compression: comp})
		b, _ := rpCommit(t, img, CommitOptions{Upper: u.dir, Compression: comp})
		ab, err := os.ReadFile(a)
		require.NoError(t, err)
		bb, err := os.ReadFile(b)
		require.NoError(t, err)
		require.True(t, bytes.Equal(ab, bb), "%s: two commits of the same edits differ", comp)
	}
}

func TestCommitFormats(t *testing.T) {
	img, _, _ := rpImage(t, "docker25")
	u := rpSmallUpper(t)
	out, res := rpCommit(t, img, CommitOptions{Upper: u.dir, Format: OutputDocker, Tags: []string{"mine/app:2"}})
	m := rpMembers(t, out)
	require.NotContains(t, m, "index.json")
	require.NotContains(t, m, "oci-layout")
	require.Empty(t, res.ManifestDigest)
	var entries []dockerManifestEntry
	require.NoError(t, json.Unmarshal(m["manifest.json"], &entries))
	require.Len(t, entries, 1)
	require.Equal(t, []string{"mine/app:2"}, entries[0].RepoTags)
	require.Len(t, entries[0].Layers, 3)
	re, err := archOpen(t, out, OpenOptions{})
	require.NoError(t, err)
	require.Equal(t, FormatDockerLegacy, re.Format)

	out, res = rpCommit(t, img, CommitOptions{Upper: u.dir, Format: OutputOCI, Tags: []string{"mine/app:2", "plainname"}})
	m = rpMembers(t, out)
	require.NotContains(t, m, "manifest.json")
	var idx ocispec.Index
	require.NoError(t, json.Unmarshal(m["index.json"], &idx))
	require.Len(t, idx.Manifests, 2, "one entry per tag")
	require.Equal(t, res.ManifestDigest, idx.Manifests[0].Digest)
	require.Equal(t, "2", idx.Manifests[0].Annotations[ocispec.AnnotationRefName])
	require.Equal(t, "mine/app:2", idx.Manifests[0].Annotations[annotationContainerdName])
	require.Equal(t, "plainname", idx.Manifests[1].Annotations[ocispec.AnnotationRefName])
	require.Equal(t, "amd64", idx.Manifests[0].Platform.Architecture)
	var man ocispec.Manifest
	require.NoError(t, json.Unmarshal(m[blobPath(res.ManifestDigest)], &man))
	require.Equal(t, ocispec.MediaTypeImageLayerGzip, man.Layers[0].MediaType, "media types follow the stored bytes")
	require.Equal(t, ocispec.MediaTypeImageLayer, man.Layers[2].MediaType)
	re, err = archOpen(t, out, OpenOptions{Image: "mine/app:2"})
	require.NoError(t, err)
	require.Equal(t, FormatOCI, re.Format)

	_, err = Commit(img, &bytes.Buffer{}, CommitOptions{Format: "tarball"})
	require.ErrorContains(t, err, "tarball")
}

func TestCommitEmptyUpper(t *testing.T) {
	img, _, _ := rpImage(t, "oci")
	out, res := rpCommit(t, img, CommitOptions{Upper: rpNewUpper(t).dir, Config: ConfigEdits{Env: []string{"A=c"}}})
	require.Nil(t, res.NewLayer)
	require.Equal(t, 2, res.Layers)
	re, err := archOpen(t, out, OpenOptions{})
	require.NoError(t, err)
	require.Len(t, re.Layers, 2)
	h := re.Config.History
	require.True(t, h[len(h)-1].EmptyLayer, "a commit without changes adds no layer and says so in its history entry")
	require.Equal(t, []string{"PATH=/bin", "A=c"}, re.Config.Config.Env)
}

func TestCommitSquash(t *testing.T) {
	img, _, _ := rpImage(t, "docker25")
	u := rpSmallUpper(t)
	out, res := rpCommit(t, img, CommitOptions{Upper: u.dir, Squash: true, Compression: tarindex.CompressionZstd})
	require.Equal(t, 1, res.Layers)
	rpCheckBlobs(t, rpMembers(t, out))
	re, err := archOpen(t, out, OpenOptions{})
	require.NoError(t, err)
	require.Len(t, re.Layers, 1)
	require.Len(t, re.Config.History, 1)
	require.Equal(t, img.Config.Config.Env, re.Config.Config.Env)
	require.Equal(t, img.Config.Config.Entrypoint, re.Config.Config.Entrypoint)
	require.Equal(t, img.Config.Config.ExposedPorts, re.Config.Config.ExposedPorts)

	// The squashed union is the union of the image with the upper on top.
	want, release, err := unionWithUpper(img, u.dir, t.TempDir(), nil)
	require.NoError(t, err)
	defer release()
	got, err := BuildUnion(re)
	require.NoError(t, err)
	wf, gf := rpTreeFacts(t, want), rpTreeFacts(t, got)
	require.Equal(t, wf, gf)
	require.Contains(t, gf["etc/os-release"], "ID=edited")
}

func TestCommitThin(t *testing.T) {
	img, built, in := rpImage(t, "docker25")
	u := rpSmallUpper(t)
	base, err := StoredDiffIDs(in, t.TempDir())
	require.NoError(t, err)
	require.Len(t, base, 2)
	out, res := rpCommit(t, img, CommitOptions{Upper: u.dir, ThinFrom: base})
	require.ElementsMatch(t, built.DiffIDs, res.Omitted)
	m := rpMembers(t, out)
	for _, blob := range built.Blobs {
		require.NotContains(t, m, blobPath(digest.FromBytes(blob)), "a base layer's blob is left out")
	}
	_, err = archOpen(t, out, OpenOptions{})
	require.ErrorIs(t, err, ErrLayerMissing)
	re, err := archOpen(t, out, OpenOptions{Bases: []string{in}})
	require.NoError(t, err)
	require.Len(t, re.Layers, 3)

	thinIDs, err := StoredDiffIDs(out, "")
	require.NoError(t, err)
	require.Equal(t, map[digest.Digest]bool{res.NewLayer.DiffID: true}, thinIDs, "a thin tarball supplies only what it holds")
}

func TestExportUnion(t *testing.T) {
	img, _, _ := rpImage(t, "oci")
	u := rpSmallUpper(t)
	var buf bytes.Buffer
	n, err := Export(img, &buf, ExportOptions{Upper: u.dir, TempDir: t.TempDir()})
	require.NoError(t, err)
	es := rpReadTar(t, buf.Bytes())
	require.Len(t, es, n)
	names := rpNames(es)
	require.True(t, sort.StringsAreSorted(names), "%q", names)
	require.Equal(t, []string{"app/", "app/main", "app/new", "app/new-link", "bin/", "etc/", "etc/os-release"}, names)
	require.Equal(t, "ID=edited\n", rpFind(t, es, "etc/os-release").body)
	require.Equal(t, "app/new", rpFind(t, es, "app/new-link").hdr.Linkname)
	for _, e := range es {
		require.NotContains(t, e.hdr.Name, WhiteoutPrefix)
	}
}

// A stored blob nobody checked on open (no cache directory) is hashed as it
// is copied: one corrupted after it was written makes commit fail rather
// than write an image whose blob does not match its name.
func TestCommitRefusesCorruptBlob(t *testing.T) {
	b := archBuild(t, archSimple([]string{"example/app:1.0"}, tarindex.CompressionNone, tarindex.CompressionNone))
	p := archLegacy(t, b).write(t, t.TempDir(), "in.tar")
	raw, err := os.ReadFile(p)
	require.NoError(t, err)
	i := bytes.Index(raw, []byte("hello world"))
	require.Positive(t, i)
	raw[i] = 'J' // file content only: the tar headers still parse
	require.NoError(t, os.WriteFile(p, raw, 0o644))

	img, err := Open(p, OpenOptions{})
	require.NoError(t, err)
	defer img.Close()
	require.False(t, img.Layers[1].StoredVerified)
	_, err = Commit(img, io.Discard, CommitOptions{Upper: rpSmallUpper(t).dir, Created: rpCreated, TempDir: t.TempDir()})
	require.ErrorContains(t, err, "does not match its digest")
	require.ErrorContains(t, err, "the input is corrupt")
}
