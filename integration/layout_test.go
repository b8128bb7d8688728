package integration

// Writers for the image formats the tests build by hand: layer tars, OCI
// image layouts, Docker 25+ `docker save` tarballs made from an OCI layout,
// and legacy `docker save` tarballs. Everything here is deterministic (fixed
// times, sorted names, gzip without a timestamp), so rebuilding an unchanged
// image gives identical bytes and the cached oracle stays valid.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// t0 is the modification time of every hand-written entry unless set.
var t0 = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// ---- layer tars ------------------------------------------------------------

// tarEntry is one member of a hand-written layer.
type tarEntry struct {
	hdr  tar.Header
	body []byte
}

func dirE(name string, mode int64) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode}}
}

func fileE(name, body string, mode int64) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode}, body: []byte(body)}
}

func bytesE(name string, body []byte, mode int64) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode}, body: body}
}

func hardlinkE(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0644}}
}

func symlinkE(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0777}}
}

func devE(name string, typ byte, major, minor int64, mode int64) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: typ, Name: name, Devmajor: major, Devminor: minor, Mode: mode}}
}

// whiteoutE deletes dir/name from lower layers.
func whiteoutE(dir, name string) tarEntry {
	return fileE(path.Join(dir, ".wh."+name), "", 0)
}

// opaqueE hides every lower child of dir.
func opaqueE(dir string) tarEntry {
	return fileE(path.Join(dir, ".wh..wh..opq"), "", 0)
}

// with returns e after f has edited its header.
func (e tarEntry) with(f func(h *tar.Header)) tarEntry {
	f(&e.hdr)
	return e
}

func owner(uid, gid int) func(*tar.Header) {
	return func(h *tar.Header) { h.Uid, h.Gid = uid, gid }
}

func xattrs(kv ...string) func(*tar.Header) {
	return func(h *tar.Header) {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			h.PAXRecords["SCHILY.xattr."+kv[i]] = kv[i+1]
		}
		h.Format = tar.FormatPAX
	}
}

// tarBytes writes entries, in order, as one tar stream. Entries without a
// time get t0; regular files get the size of their body.
func tarBytes(entries []tarEntry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.ModTime.IsZero() {
			h.ModTime = t0
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("tar header %q: %w", h.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("tar body %q: %w", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ---- compression -------------------------------------------------------------

func compressBytes(data []byte, algo string) ([]byte, error) {
	switch algo {
	case "", "none":
		return data, nil
	case "gzip":
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.BestSpeed) // no name, no mtime: deterministic
		if _, err := zw.Write(data); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
		return b.Bytes(), nil
	case "zstd":
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer enc.Close()
		return enc.EncodeAll(data, nil), nil
	}
	return nil, fmt.Errorf("unknown compression %q", algo)
}

// decompressBytes undoes gzip or zstd, told apart by magic bytes; anything
// else is returned as it is.
func decompressBytes(data []byte) ([]byte, error) {
	switch {
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(zr)
	case bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer dec.Close()
		return dec.DecodeAll(data, nil)
	}
	return data, nil
}

func layerMediaType(algo string) string {
	switch algo {
	case "gzip":
		return ocispec.MediaTypeImageLayerGzip
	case "zstd":
		return ocispec.MediaTypeImageLayerZstd
	}
	return ocispec.MediaTypeImageLayer
}

func sha256Digest(data []byte) digest.Digest {
	sum := sha256.Sum256(data)
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(sum[:]))
}

// ---- OCI image layouts ---------------------------------------------------------

// layout writes an OCI image layout directory.
type layout struct {
	dir string
}

func newLayout(dir string) (*layout, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return nil, err
	}
	l := &layout{dir: dir}
	return l, os.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

func (l *layout) blobPath(d digest.Digest) string {
	return filepath.Join(l.dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// put stores data as a blob (unless absent is set: then only the descriptor
// is made, as for a platform whose blobs a tarball leaves out).
func (l *layout) put(mediaType string, data []byte, absent bool) (ocispec.Descriptor, error) {
	d := ocispec.Descriptor{MediaType: mediaType, Digest: sha256Digest(data), Size: int64(len(data))}
	if absent {
		return d, nil
	}
	return d, os.WriteFile(l.blobPath(d.Digest), data, 0o644)
}

func (l *layout) putJSON(mediaType string, v any, absent bool) (ocispec.Descriptor, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return l.put(mediaType, b, absent)
}

// layerIn is one layer of a hand-built image.
type layerIn struct {
	tar         []byte // uncompressed
	compression string // "", "gzip" or "zstd"
	createdBy   string
}

// imageIn is a hand-built image.
type imageIn struct {
	layers   []layerIn
	config   ocispec.ImageConfig
	platform *ocispec.Platform // nil: linux and the host's architecture
	// blobsAbsent leaves the config and layer blobs out of the layout;
	// manifestAbsent leaves the manifest out too.
	blobsAbsent, manifestAbsent bool
}

// addImage writes img's blobs and returns its manifest descriptor (with the
// platform set, and no annotations).
func (l *layout) addImage(img imageIn) (ocispec.Descriptor, error) {
	plat := ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH}
	if img.platform != nil {
		plat = *img.platform
	}
	created := t0
	cfg := ocispec.Image{
		Created:  &created,
		Author:   "imgmount integration tests",
		Platform: plat,
		Config:   img.config,
		RootFS:   ocispec.RootFS{Type: "layers"},
	}
	man := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
	}
	for _, li := range img.layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, sha256Digest(li.tar))
		cfg.History = append(cfg.History, ocispec.History{Created: &created, CreatedBy: li.createdBy})
		blob, err := compressBytes(li.tar, li.compression)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		d, err := l.put(layerMediaType(li.compression), blob, img.blobsAbsent || img.manifestAbsent)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		man.Layers = append(man.Layers, d)
	}
	var err error
	if man.Config, err = l.putJSON(ocispec.MediaTypeImageConfig, cfg, img.blobsAbsent || img.manifestAbsent); err != nil {
		return ocispec.Descriptor{}, err
	}
	d, err := l.putJSON(ocispec.MediaTypeImageManifest, man, img.manifestAbsent)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	d.Platform = &plat
	return d, nil
}

// putIndex stores an image index blob (for nested, multi-platform indexes).
func (l *layout) putIndex(manifests []ocispec.Descriptor) (ocispec.Descriptor, error) {
	return l.putJSON(ocispec.MediaTypeImageIndex, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: manifests,
	}, false)
}

// writeIndex writes index.json.
func (l *layout) writeIndex(manifests []ocispec.Descriptor) error {
	b, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: manifests,
	})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(l.dir, ocispec.ImageIndexFile), b, 0o644)
}

func refNamed(d ocispec.Descriptor, name string) ocispec.Descriptor {
	d.Annotations = map[string]string{ocispec.AnnotationRefName: name}
	return d
}

// ---- tarballs --------------------------------------------------------------------

// tarFile is a member of an outer (image) tarball.
type tarFile struct {
	name string
	data []byte
	link string // symlink target, if a symlink
}

// outerTar writes files as a tarball, with a directory entry before the
// first file in each directory, as `docker save` and skopeo do.
func outerTar(files []tarFile) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	seen := map[string]bool{}
	for _, f := range files {
		var parents []string
		for d := path.Dir(f.name); d != "."; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, p := range parents {
			if seen[p] {
				continue
			}
			seen[p] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: 0o755, ModTime: t0}); err != nil {
				return nil, err
			}
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: t0}
		if f.link != "" {
			h = &tar.Header{Typeflag: tar.TypeSymlink, Name: f.name, Linkname: f.link, Mode: 0o777, ModTime: t0}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if f.link == "" {
			if _, err := tw.Write(f.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// dirFiles lists the regular files under dir, sorted, as tarFiles (for
// packing an OCI layout into an oci-archive).
func dirFiles(dir string) ([]tarFile, error) {
	var files []tarFile
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, tarFile{name: filepath.ToSlash(rel), data: b})
		return nil
	})
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	return files, err
}

// ociArchive packs an OCI layout directory into an oci-archive tarball.
func ociArchive(layoutDir string, extra ...tarFile) ([]byte, error) {
	files, err := dirFiles(layoutDir)
	if err != nil {
		return nil, err
	}
	files = append(files, extra...)
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	return outerTar(files)
}

// readLayoutJSON decodes a blob of an OCI layout.
func readLayoutJSON(layoutDir string, d digest.Digest, v any) error {
	b, err := os.ReadFile(filepath.Join(layoutDir, "blobs", d.Algorithm().String(), d.Encoded()))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// layoutManifest finds the manifest tagged ref (org.opencontainers.image.ref.name)
// in an OCI layout's index.json.
func layoutManifest(layoutDir, ref string) (ocispec.Manifest, ocispec.Image, error) {
	var idx ocispec.Index
	var man ocispec.Manifest
	var cfg ocispec.Image
	b, err := os.ReadFile(filepath.Join(layoutDir, ocispec.ImageIndexFile))
	if err != nil {
		return man, cfg, err
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return man, cfg, err
	}
	for _, d := range idx.Manifests {
		if d.Annotations[ocispec.AnnotationRefName] != ref {
			continue
		}
		if err := readLayoutJSON(layoutDir, d.Digest, &man); err != nil {
			return man, cfg, err
		}
		return man, cfg, readLayoutJSON(layoutDir, man.Config.Digest, &cfg)
	}
	return man, cfg, fmt.Errorf("%s: no manifest tagged %q", layoutDir, ref)
}

// docker25FromLayout converts the image tagged ref in an OCI layout into
// the tarball `docker save` writes since Docker 25: an OCI layout plus a
// manifest.json whose Layers are blobs/sha256/<hex> paths, and a
// repositories file.
//
// With keepCompressed false it does what the classic image store does:
// every layer is stored uncompressed as blobs/sha256/<diff_id hex> with the
// plain tar media type, under a rewritten manifest. With keepCompressed true
// it does what the containerd image store does: the original (compressed)
// blobs and manifest, unchanged.
func docker25FromLayout(layoutDir, ref, repoTag string, keepCompressed bool) ([]byte, error) {
	man, _, err := layoutManifest(layoutDir, ref)
	if err != nil {
		return nil, err
	}
	blob := func(d digest.Digest) ([]byte, error) {
		return os.ReadFile(filepath.Join(layoutDir, "blobs", d.Algorithm().String(), d.Encoded()))
	}
	blobs := map[digest.Digest][]byte{}
	cfgBytes, err := blob(man.Config.Digest)
	if err != nil {
		return nil, err
	}
	blobs[man.Config.Digest] = cfgBytes
	newMan := man
	newMan.Layers = nil
	newMan.Annotations = nil
	var layerPaths []string
	for _, ld := range man.Layers {
		data, err := blob(ld.Digest)
		if err != nil {
			return nil, err
		}
		d := ld
		if !keepCompressed {
			if data, err = decompressBytes(data); err != nil {
				return nil, fmt.Errorf("layer %s: %w", ld.Digest, err)
			}
			d = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: sha256Digest(data), Size: int64(len(data))}
		}
		blobs[d.Digest] = data
		newMan.Layers = append(newMan.Layers, d)
		layerPaths = append(layerPaths, "blobs/sha256/"+d.Digest.Encoded())
	}
	var manBytes []byte
	if keepCompressed {
		if manBytes, err = blob(mustFindManifestDigest(layoutDir, ref)); err != nil {
			return nil, err
		}
	} else if manBytes, err = json.Marshal(newMan); err != nil {
		return nil, err
	}
	manDigest := sha256Digest(manBytes)
	blobs[manDigest] = manBytes

	name, tag, _ := strings.Cut(repoTag, ":")
	idx, _ := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{{
			MediaType: ocispec.MediaTypeImageManifest,
			Digest:    manDigest,
			Size:      int64(len(manBytes)),
			Annotations: map[string]string{
				"io.containerd.image.name": repoTag,
				ocispec.AnnotationRefName:  tag,
			},
		}},
	})
	dm, _ := json.Marshal([]map[string]any{{
		"Config":   "blobs/sha256/" + man.Config.Digest.Encoded(),
		"RepoTags": []string{repoTag},
		"Layers":   layerPaths,
	}})
	top := newMan.Layers[len(newMan.Layers)-1].Digest.Encoded()
	repos, _ := json.Marshal(map[string]map[string]string{name: {tag: top}})

	var files []tarFile
	for d, b := range blobs {
		files = append(files, tarFile{name: "blobs/sha256/" + d.Encoded(), data: b})
	}
	files = append(files,
		tarFile{name: "index.json", data: idx},
		tarFile{name: "manifest.json", data: dm},
		tarFile{name: "oci-layout", data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		tarFile{name: "repositories", data: repos},
	)
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	return outerTar(files)
}

func mustFindManifestDigest(layoutDir, ref string) digest.Digest {
	var idx ocispec.Index
	b, _ := os.ReadFile(filepath.Join(layoutDir, ocispec.ImageIndexFile))
	_ = json.Unmarshal(b, &idx)
	for _, d := range idx.Manifests {
		if d.Annotations[ocispec.AnnotationRefName] == ref {
			return d.Digest
		}
	}
	return ""
}

// legacyImage is an image for a legacy (Docker < 25) `docker save` tarball.
type legacyImage struct {
	layers  [][]byte // uncompressed layer tars
	diffIDs []digest.Digest
	repoTag string
	omit    map[int]bool // layers listed in manifest.json but left out (a thin tarball)
}

// dockerLegacyTar writes img as `docker save` did before Docker 25:
// <v1id>/{VERSION,json,layer.tar}, <config hex>.json, manifest.json,
// repositories. diffIDs, when set, override the true ones (to make a
// mismatch).
func dockerLegacyTar(img legacyImage) ([]byte, error) {
	created := t0
	cfg := ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Config:   ocispec.ImageConfig{Env: []string{"PATH=/bin"}, Cmd: []string{"/bin/sh"}},
		RootFS:   ocispec.RootFS{Type: "layers"},
	}
	var files []tarFile
	var layerPaths []string
	parent := ""
	for i, l := range img.layers {
		d := sha256Digest(l)
		if i < len(img.diffIDs) && img.diffIDs[i] != "" {
			d = img.diffIDs[i]
		}
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, d)
		cfg.History = append(cfg.History, ocispec.History{Created: &created, CreatedBy: fmt.Sprintf("layer %d", i)})
		v1 := sha256Digest([]byte(parent + d.String())).Encoded()
		v1json, _ := json.Marshal(map[string]any{"id": v1, "parent": parent, "created": t0})
		if parent == "" {
			v1json, _ = json.Marshal(map[string]any{"id": v1, "created": t0})
		}
		files = append(files, tarFile{name: v1 + "/VERSION", data: []byte("1.0")}, tarFile{name: v1 + "/json", data: v1json})
		if !img.omit[i] {
			files = append(files, tarFile{name: v1 + "/layer.tar", data: l})
		}
		layerPaths = append(layerPaths, v1+"/layer.tar")
		parent = v1
	}
	cb, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cfgName := sha256Digest(cb).Encoded() + ".json"
	name, tag, _ := strings.Cut(img.repoTag, ":")
	dm, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{img.repoTag}, "Layers": layerPaths}})
	repos, _ := json.Marshal(map[string]map[string]string{name: {tag: parent}})
	files = append(files,
		tarFile{name: cfgName, data: cb},
		tarFile{name: "manifest.json", data: dm},
		tarFile{name: "repositories", data: repos},
	)
	sort.SliceStable(files, func(i, j int) bool { return files[i].name < files[j].name })
	return outerTar(files)
}

// writeIfChanged writes data to p unless p already holds exactly data, so
// that an unchanged rebuild keeps the file's identity (and the oracle keyed
// on it stays valid).
func writeIfChanged(p string, data []byte) error {
	if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, data) {
		return nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
