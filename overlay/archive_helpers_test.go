package overlay

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/imgmount/imgmount/tarindex"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

// Test helpers for archive_test.go and inspect_test.go. Every package-level
// name starts with "arch" so as not to clash with other tests here.

var archTime = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// archTarFile is one member of a tar built by archTar.
type archTarFile struct {
	Name string
	Body []byte
	Link string // symlink target
	Hard string // hardlink target
	Dir  bool
}

func archTar(t testing.TB, files ...archTarFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.Name, Mode: 0o644, ModTime: archTime, Format: tar.FormatPAX}
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

// archLayerTar makes a layer tar holding files (path → content), sorted.
func archLayerTar(t testing.TB, files map[string]string) []byte {
	t.Helper()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var fs []archTarFile
	for _, n := range names {
		fs = append(fs, archTarFile{Name: n, Body: []byte(files[n])})
	}
	return archTar(t, fs...)
}

func archCompress(t testing.TB, comp tarindex.Compression, b []byte) []byte {
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
		t.Fatalf("archCompress: %v", comp)
	}
	return buf.Bytes()
}

func archJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

type archLayerSpec struct {
	Files map[string]string
	Comp  tarindex.Compression
}

// archImage describes a test image.
type archImage struct {
	Tags     []string
	Platform ocispec.Platform // default linux/amd64
	Layers   []archLayerSpec
	History  []ocispec.History
	Config   ocispec.ImageConfig
	// Mutate, if set, edits the config before it is serialised (to break it).
	Mutate func(*ocispec.Image)
}

// archBuilt is an archImage turned into blobs.
type archBuilt struct {
	Img          archImage
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

func archBuild(t testing.TB, im archImage) *archBuilt {
	t.Helper()
	if im.Platform.OS == "" {
		im.Platform = ocispec.Platform{OS: "linux", Architecture: "amd64"}
	}
	b := &archBuilt{Img: im}
	for _, l := range im.Layers {
		raw := archLayerTar(t, l.Files)
		blob := archCompress(t, l.Comp, raw)
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
		Created:  &archTime,
		Platform: im.Platform,
		Config:   im.Config,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: append([]digest.Digest{}, b.DiffIDs...)},
		History:  im.History,
	}
	if im.Mutate != nil {
		im.Mutate(&cfg)
	}
	b.Config = archJSON(t, cfg)
	b.ConfigDigest = digest.FromBytes(b.Config)
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: b.ConfigDigest, Size: int64(len(b.Config))},
		Layers:    b.LayerDescs,
	}
	m.SchemaVersion = 2
	b.Manifest = archJSON(t, m)
	p := im.Platform
	b.ManifestDesc = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(b.Manifest), Size: int64(len(b.Manifest)), Platform: &p}
	return b
}

// archLayout is an archive under construction; members keep insertion order.
type archLayout struct {
	names []string
	files map[string]archTarFile
}

func archNewLayout() *archLayout { return &archLayout{files: map[string]archTarFile{}} }

func (l *archLayout) put(f archTarFile) {
	if _, ok := l.files[f.Name]; !ok {
		l.names = append(l.names, f.Name)
	}
	l.files[f.Name] = f
}

func (l *archLayout) add(name string, body []byte) { l.put(archTarFile{Name: name, Body: body}) }
func (l *archLayout) blob(b []byte) {
	l.add("blobs/sha256/"+digest.FromBytes(b).Encoded(), b)
}

func (l *archLayout) del(name string) {
	delete(l.files, name)
	for i, n := range l.names {
		if n == name {
			l.names = append(l.names[:i], l.names[i+1:]...)
			break
		}
	}
}

func (l *archLayout) delBlob(d digest.Digest) { l.del("blobs/sha256/" + d.Encoded()) }

func (l *archLayout) tar(t testing.TB) []byte {
	t.Helper()
	var fs []archTarFile
	for _, n := range l.names {
		fs = append(fs, l.files[n])
	}
	return archTar(t, fs...)
}

// write stores the layout as a tarball in dir and returns its path.
func (l *archLayout) write(t testing.TB, dir, name string) string {
	t.Helper()
	return archWriteFile(t, dir, name, l.tar(t))
}

func archWriteFile(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

// archDockerEntry is one manifest.json element.
type archDockerEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// archLegacy lays out images as docker save (< 25) does: <id>/layer.tar,
// <config hex>.json, manifest.json, repositories. A layer already written
// for an earlier image becomes a symlink ../<id>/layer.tar.
func archLegacy(t testing.TB, imgs ...*archBuilt) *archLayout {
	t.Helper()
	l := archNewLayout()
	var manifest []archDockerEntry
	seen := map[digest.Digest]string{}
	for n, b := range imgs {
		e := archDockerEntry{Config: b.ConfigDigest.Encoded() + ".json", RepoTags: b.Img.Tags}
		for i, blob := range b.Blobs {
			id := digest.FromString(b.ConfigDigest.String() + string(rune('a'+n)) + string(rune('a'+i))).Encoded()
			l.put(archTarFile{Name: id + "/", Dir: true})
			l.add(id+"/VERSION", []byte("1.0"))
			l.add(id+"/json", []byte(`{"id":"`+id+`"}`))
			if first, ok := seen[b.DiffIDs[i]]; ok {
				l.put(archTarFile{Name: id + "/layer.tar", Link: "../" + first + "/layer.tar"})
			} else {
				l.add(id+"/layer.tar", blob)
				seen[b.DiffIDs[i]] = id
			}
			e.Layers = append(e.Layers, id+"/layer.tar")
		}
		l.add(e.Config, b.Config)
		manifest = append(manifest, e)
	}
	l.add("manifest.json", archJSON(t, manifest))
	l.add("repositories", []byte("{}"))
	return l
}

// archOCI lays out images as an OCI archive; with docker set, also writes
// manifest.json as Docker 25+ does, and names images the containerd way.
func archOCI(t testing.TB, docker bool, imgs ...*archBuilt) *archLayout {
	t.Helper()
	l := archNewLayout()
	l.add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	idx.SchemaVersion = 2
	var manifest []archDockerEntry
	for _, b := range imgs {
		for _, blob := range b.Blobs {
			l.blob(blob)
		}
		l.blob(b.Config)
		l.blob(b.Manifest)
		if len(b.Img.Tags) == 0 {
			d := b.ManifestDesc
			d.Platform = nil
			idx.Manifests = append(idx.Manifests, d)
		}
		for _, tag := range b.Img.Tags {
			d := b.ManifestDesc
			d.Platform = nil
			if docker {
				d.Annotations = map[string]string{annotationContainerdName: "docker.io/library/" + tag, ocispec.AnnotationRefName: archTagOf(tag)}
			} else {
				d.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
			}
			idx.Manifests = append(idx.Manifests, d)
		}
		if docker {
			e := archDockerEntry{Config: "blobs/sha256/" + b.ConfigDigest.Encoded(), RepoTags: b.Img.Tags}
			for _, d := range b.BlobDigests {
				e.Layers = append(e.Layers, "blobs/sha256/"+d.Encoded())
			}
			manifest = append(manifest, e)
		}
	}
	l.add("index.json", archJSON(t, idx))
	if docker {
		l.add("manifest.json", archJSON(t, manifest))
	}
	return l
}

// archTagOf returns the tag part of "name:tag".
func archTagOf(ref string) string {
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

// archMultiPlatform lays out one multi-platform image: index.json → an
// image index (tagged tag) → one manifest per built image, plus a buildx
// attestation manifest that must be ignored.
func archMultiPlatform(t testing.TB, tag string, imgs ...*archBuilt) (*archLayout, digest.Digest) {
	t.Helper()
	l := archNewLayout()
	l.add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	inner := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex}
	inner.SchemaVersion = 2
	for _, b := range imgs {
		for _, blob := range b.Blobs {
			l.blob(blob)
		}
		l.blob(b.Config)
		l.blob(b.Manifest)
		inner.Manifests = append(inner.Manifests, b.ManifestDesc)
	}
	att := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + digest.FromString("x").Encoded() + `","size":1},"layers":[]}`)
	inner.Manifests = append(inner.Manifests, ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(att), Size: int64(len(att)),
		Platform:    &ocispec.Platform{OS: "unknown", Architecture: "unknown"},
		Annotations: map[string]string{annotationDockerRefType: "attestation-manifest"},
	})
	innerJSON := archJSON(t, inner)
	l.blob(innerJSON)
	top := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{{
		MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(innerJSON), Size: int64(len(innerJSON)),
		Annotations: map[string]string{annotationContainerdName: tag, ocispec.AnnotationRefName: archTagOf(tag)},
	}}}
	top.SchemaVersion = 2
	l.add("index.json", archJSON(t, top))
	return l, digest.FromBytes(innerJSON)
}

// archFiles reads every regular file of a layer through its index and the
// layer's Data, the way the filesystem will.
func archFiles(t testing.TB, l *Layer) map[string]string {
	t.Helper()
	require.NotNil(t, l.TarIndex)
	out := map[string]string{}
	for i := range l.TarIndex.Entries {
		e := &l.TarIndex.Entries[i]
		if e.Type != tarindex.TypeReg {
			continue
		}
		buf := make([]byte, e.Size)
		n, err := e.ReadAt(l.Data, buf, 0)
		if e.Size > 0 {
			require.NoError(t, err, e.Name)
		}
		out[e.Name] = string(buf[:n])
	}
	return out
}

// archOpen opens with a fresh cache directory.
func archOpen(t testing.TB, path string, opts OpenOptions) (*Image, error) {
	t.Helper()
	if opts.CacheDir == "" {
		opts.CacheDir = t.TempDir()
	}
	img, err := Open(path, opts)
	if err == nil {
		require.NotNil(t, img)
		t.Cleanup(func() { require.NoError(t, img.Close()) })
	} else {
		require.Nil(t, img)
	}
	return img, err
}

// archSimple is a two-layer image used by several tests.
func archSimple(tags []string, c0, c1 tarindex.Compression) archImage {
	return archImage{
		Tags: tags,
		Layers: []archLayerSpec{
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
