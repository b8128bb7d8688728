package imagetest

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/tarindex"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

// Image tarballs as docker save (legacy and 25+) and OCI archives lay them
// out, built in memory from a Spec.

var Created = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// TarFile is one member of a tar built by Tar.
type TarFile struct {
	Name string
	Body []byte
	Link string // symlink target
	Hard string // hardlink target
	Dir  bool
}

func Tar(t testing.TB, files ...TarFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.Name, Mode: 0o644, ModTime: Created, Format: tar.FormatPAX}
		switch {
		case f.Dir:
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		case f.Link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.Link
		case f.Hard != "":
			h.Typeflag, h.Linkname = tar.TypeLink, f.Hard
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Body))
		}
		require.NoError(t, tw.WriteHeader(h))
		if h.Typeflag == tar.TypeReg {
			_, err := tw.Write(f.Body)
			require.NoError(t, err)
		}
	}
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

// FilesTar makes a layer tar holding files (path → content), sorted.
func FilesTar(t testing.TB, files map[string]string) []byte {
	t.Helper()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var fs []TarFile
	for _, n := range names {
		fs = append(fs, TarFile{Name: n, Body: []byte(files[n])})
	}
	return Tar(t, fs...)
}

func Compress(t testing.TB, comp tarindex.Compression, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch comp {
	case tarindex.CompressionNone:
		return b
	case tarindex.CompressionGzip:
		zw := gzip.NewWriter(&buf)
		_, err := zw.Write(b)
		require.NoError(t, err)
		require.NoError(t, zw.Close())
	case tarindex.CompressionZstd:
		zw, err := zstd.NewWriter(&buf)
		require.NoError(t, err)
		_, err = zw.Write(b)
		require.NoError(t, err)
		require.NoError(t, zw.Close())
	default:
		t.Fatalf("Compress: %v", comp)
	}
	return buf.Bytes()
}

func JSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

type LayerSpec struct {
	Files map[string]string
	// Tar, if set, is the layer's uncompressed tar as it is (LayerTar makes
	// one of any entries); Files is then ignored.
	Tar  []byte
	Comp tarindex.Compression
}

// Spec describes a test image.
type Spec struct {
	Tags     []string
	Platform ocispec.Platform // default linux/amd64
	Layers   []LayerSpec
	History  []ocispec.History
	Config   ocispec.ImageConfig
	// Mutate, if set, edits the config before it is serialised (to break it).
	Mutate func(*ocispec.Image)
}

// Built is an Spec turned into blobs.
type Built struct {
	Img          Spec
	Tars         [][]byte // uncompressed layer tars
	Blobs        [][]byte // as stored
	DiffIDs      []digest.Digest
	BlobDigests  []digest.Digest
	LayerDescs   []ocispec.Descriptor
	Config       []byte
	ConfigDigest digest.Digest
	Manifest     []byte
	ManifestDesc ocispec.Descriptor
}

func Build(t testing.TB, im Spec) *Built {
	t.Helper()
	if im.Platform.OS == "" {
		im.Platform = ocispec.Platform{OS: "linux", Architecture: "amd64"}
	}
	b := &Built{Img: im}
	for _, l := range im.Layers {
		raw := l.Tar
		if raw == nil {
			raw = FilesTar(t, l.Files)
		}
		blob := Compress(t, l.Comp, raw)
		b.Tars = append(b.Tars, raw)
		b.Blobs = append(b.Blobs, blob)
		b.DiffIDs = append(b.DiffIDs, digest.FromBytes(raw))
		b.BlobDigests = append(b.BlobDigests, digest.FromBytes(blob))
		mt := ocispec.MediaTypeImageLayer
		switch l.Comp {
		case tarindex.CompressionGzip:
			mt = ocispec.MediaTypeImageLayerGzip
		case tarindex.CompressionZstd:
			mt = ocispec.MediaTypeImageLayerZstd
		}
		b.LayerDescs = append(b.LayerDescs, ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(blob), Size: int64(len(blob))})
	}
	cfg := ocispec.Image{
		Created:  &Created,
		Platform: im.Platform,
		Config:   im.Config,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: append([]digest.Digest{}, b.DiffIDs...)},
		History:  im.History,
	}
	if im.Mutate != nil {
		im.Mutate(&cfg)
	}
	b.Config = JSON(t, cfg)
	b.ConfigDigest = digest.FromBytes(b.Config)
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: b.ConfigDigest, Size: int64(len(b.Config))},
		Layers:    b.LayerDescs,
	}
	m.SchemaVersion = 2
	b.Manifest = JSON(t, m)
	p := im.Platform
	b.ManifestDesc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(b.Manifest), Size: int64(len(b.Manifest)), Platform: &p}
	return b
}

// Layout is an archive under construction; members keep insertion order.
type Layout struct {
	Names []string // member names in insertion order
	Files map[string]TarFile
}

func NewLayout() *Layout { return &Layout{Files: map[string]TarFile{}} }

func (l *Layout) Put(f TarFile) {
	if _, ok := l.Files[f.Name]; !ok {
		l.Names = append(l.Names, f.Name)
	}
	l.Files[f.Name] = f
}

func (l *Layout) Add(name string, body []byte) { l.Put(TarFile{Name: name, Body: body}) }
func (l *Layout) Blob(b []byte) {
	l.Add("blobs/sha256/"+digest.FromBytes(b).Encoded(), b)
}

func (l *Layout) Del(name string) {
	delete(l.Files, name)
	for i, n := range l.Names {
		if n == name {
			l.Names = append(l.Names[:i], l.Names[i+1:]...)
			break
		}
	}
}

func (l *Layout) DelBlob(d digest.Digest) { l.Del("blobs/sha256/" + d.Encoded()) }

func (l *Layout) Tar(t testing.TB) []byte {
	t.Helper()
	var fs []TarFile
	for _, n := range l.Names {
		fs = append(fs, l.Files[n])
	}
	return Tar(t, fs...)
}

// write stores the layout as a tarball in dir and returns its path.
func (l *Layout) Write(t testing.TB, dir, name string) string {
	t.Helper()
	return WriteFile(t, dir, name, l.Tar(t))
}

func WriteFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

// DockerEntry is one manifest.json element.
type DockerEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// Legacy lays out images as docker save (< 25) does: <id>/layer.tar,
// <config hex>.json, manifest.json, repositories. A layer already written
// for an earlier image becomes a symlink ../<id>/layer.tar.
func Legacy(t testing.TB, imgs ...*Built) *Layout {
	t.Helper()
	l := NewLayout()
	var manifest []DockerEntry
	seen := map[digest.Digest]string{}
	for n, b := range imgs {
		e := DockerEntry{Config: b.ConfigDigest.Encoded() + ".json", RepoTags: b.Img.Tags}
		for i, blob := range b.Blobs {
			id := digest.FromString(b.ConfigDigest.String() + string(rune('a'+n)) + string(rune('a'+i))).Encoded()
			l.Put(TarFile{Name: id + "/", Dir: true})
			l.Add(id+"/VERSION", []byte("1.0"))
			l.Add(id+"/json", []byte(`{"id":"`+id+`"}`))
			if first, ok := seen[b.DiffIDs[i]]; ok {
				l.Put(TarFile{Name: id + "/layer.tar", Link: "../" + first + "/layer.tar"})
			} else {
				l.Add(id+"/layer.tar", blob)
				seen[b.DiffIDs[i]] = id
			}
			e.Layers = append(e.Layers, id+"/layer.tar")
		}
		l.Add(e.Config, b.Config)
		manifest = append(manifest, e)
	}
	l.Add("manifest.json", JSON(t, manifest))
	l.Add("repositories", []byte("{}"))
	return l
}

// OCI lays out images as an OCI archive; with docker set, also writes
// manifest.json as Docker 25+ does, and names images the containerd way.
func OCI(t testing.TB, docker bool, imgs ...*Built) *Layout {
	t.Helper()
	l := NewLayout()
	l.Add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	idx.SchemaVersion = 2
	var manifest []DockerEntry
	for _, b := range imgs {
		for _, blob := range b.Blobs {
			l.Blob(blob)
		}
		l.Blob(b.Config)
		l.Blob(b.Manifest)
		if len(b.Img.Tags) == 0 {
			d := b.ManifestDesc
			d.Platform = nil
			idx.Manifests = append(idx.Manifests, d)
		}
		for _, tag := range b.Img.Tags {
			d := b.ManifestDesc
			d.Platform = nil
			if docker {
				d.Annotations = map[string]string{archive.AnnotationContainerdName: "docker.io/library/" + tag, ocispec.AnnotationRefName: TagOf(tag)}
			} else {
				d.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
			}
			idx.Manifests = append(idx.Manifests, d)
		}
		if docker {
			e := DockerEntry{Config: "blobs/sha256/" + b.ConfigDigest.Encoded(), RepoTags: b.Img.Tags}
			for _, d := range b.BlobDigests {
				e.Layers = append(e.Layers, "blobs/sha256/"+d.Encoded())
			}
			manifest = append(manifest, e)
		}
	}
	l.Add("index.json", JSON(t, idx))
	if docker {
		l.Add("manifest.json", JSON(t, manifest))
	}
	return l
}

// TagOf returns the tag part of "name:tag".
func TagOf(ref string) string {
	for i := len(ref) - 1; i >= 0; i-- {
		switch ref[i] {
		case ':':
			return ref[i+1:]
		case '/':
			return "latest"
		}
	}
	return "latest"
}

// MultiPlatform lays out one multi-platform image: index.json → an
// image index (tagged tag) → one manifest per built image, plus a buildx
// attestation manifest that must be ignored.
func MultiPlatform(t testing.TB, tag string, imgs ...*Built) (*Layout, digest.Digest) {
	t.Helper()
	l := NewLayout()
	l.Add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	inner := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	inner.SchemaVersion = 2
	for _, b := range imgs {
		for _, blob := range b.Blobs {
			l.Blob(blob)
		}
		l.Blob(b.Config)
		l.Blob(b.Manifest)
		inner.Manifests = append(inner.Manifests, b.ManifestDesc)
	}
	att := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + digest.FromString("x").Encoded() + `","size":1},"layers":[]}`)
	inner.Manifests = append(inner.Manifests, ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(att), Size: int64(len(att)),
		Platform:    &ocispec.Platform{OS: "unknown", Architecture: "unknown"},
		Annotations: map[string]string{archive.AnnotationDockerRefType: "attestation-manifest"},
	})
	innerJSON := JSON(t, inner)
	l.Blob(innerJSON)
	top := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{{
		MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(innerJSON), Size: int64(len(innerJSON)),
		Annotations: map[string]string{archive.AnnotationContainerdName: tag, ocispec.AnnotationRefName: TagOf(tag)},
	}}}
	top.SchemaVersion = 2
	l.Add("index.json", JSON(t, top))
	return l, digest.FromBytes(innerJSON)
}

// Files reads every regular file of a layer through its index and the
// layer's Data, the way the filesystem will.
func Files(t testing.TB, l *archive.Layer) map[string]string {
	t.Helper()
	require.NotNil(t, l.TarIndex)
	out := map[string]string{}
	for i := range l.TarIndex.Entries {
		e := &l.TarIndex.Entries[i]
		if e.Type != tarindex.TypeReg {
			continue
		}
		buf := make([]byte, e.Size)
		n, err := e.ReadFrom(l.Content, buf, 0)
		if e.Size > 0 {
			require.NoError(t, err, e.Name)
		}
		out[e.Name] = string(buf[:n])
	}
	return out
}

// Open opens with a fresh cache directory.
func Open(t testing.TB, path string, opts archive.OpenOptions) (*archive.Image, error) {
	t.Helper()
	if opts.CacheDir == "" {
		opts.CacheDir = t.TempDir()
	}
	img, err := archive.Open(path, opts)
	if err == nil {
		require.NotNil(t, img)
		t.Cleanup(func() { require.NoError(t, img.Close()) })
	} else {
		require.Nil(t, img)
	}
	return img, err
}

// Simple is a two-layer image used by several tests.
func Simple(tags []string, c0, c1 tarindex.Compression) Spec {
	return Spec{
		Tags: tags,
		Layers: []LayerSpec{
			{Files: map[string]string{"etc/os-release": "ID=test\n", "bin/sh": "#!shell"}, Comp: c0},
			{Files: map[string]string{"app/main": "hello world", "etc/os-release": "ID=app\n"}, Comp: c1},
		},
		History: []ocispec.History{
			{CreatedBy: "ADD rootfs.tar /"},
			{CreatedBy: "ENV A=b", EmptyLayer: true},
			{CreatedBy: "COPY main /app/main"},
		},
		Config: ocispec.ImageConfig{
			Env:          []string{"PATH=/bin", "A=b"},
			Entrypoint:   []string{"/app/main"},
			Cmd:          []string{"--serve"},
			WorkingDir:   "/app",
			User:         "1000:1000",
			ExposedPorts: map[string]struct{}{"8080/tcp": {}, "53/udp": {}},
			Labels:       map[string]string{"org.example": "yes"},
		},
	}
}
