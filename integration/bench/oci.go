package bench

// OCI archives with compressed layers, for the compressed-image rows of the
// driver (issue 11): a synthetic image written from LayerFuncs, and an
// existing OCI archive with its layers recompressed (zstd in many frames).

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compression of the layer blobs of an OCI archive.
type Compression string

const (
	// Gzip is one gzip member per layer (what skopeo and umoci write).
	Gzip Compression = "gzip"
	// ZstdFrames is zstd in independent frames of FrameSize bytes of
	// input each, concatenated: a reader can enter the stream at any
	// frame (what zstd:chunked and the seekable format rely on).
	ZstdFrames Compression = "zstd-frames"
)

// FrameSize is the uncompressed size of one frame of a ZstdFrames blob.
const FrameSize = 1 << 20

func (c Compression) mediaType() string {
	switch c {
	case Gzip:
		return "application/vnd.oci.image.layer.v1.tar+gzip"
	case ZstdFrames:
		return "application/vnd.oci.image.layer.v1.tar+zstd"
	}
	return "application/vnd.oci.image.layer.v1.tar"
}

// compressor returns a writer that compresses into w as c says.
func (c Compression) compressor(w io.Writer) (io.WriteCloser, error) {
	switch c {
	case Gzip:
		return gzip.NewWriterLevel(w, gzip.DefaultCompression)
	case ZstdFrames:
		return newFrameWriter(w)
	case "":
		return nopCloser{w}, nil
	}
	return nil, fmt.Errorf("unknown compression %q", c)
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// frameWriter writes zstd, one complete frame (with its content size) per
// FrameSize bytes of input.
type frameWriter struct {
	w   io.Writer
	enc *zstd.Encoder
	buf []byte
	out []byte
}

func newFrameWriter(w io.Writer) (*frameWriter, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	return &frameWriter{w: w, enc: enc, buf: make([]byte, 0, FrameSize)}, nil
}

func (f *frameWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), FrameSize-len(f.buf))
		f.buf = append(f.buf, p[:k]...)
		p = p[k:]
		if len(f.buf) == FrameSize {
			if err := f.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (f *frameWriter) flush() error {
	if len(f.buf) == 0 {
		return nil
	}
	f.out = f.enc.EncodeAll(f.buf, f.out[:0])
	f.buf = f.buf[:0]
	_, err := f.w.Write(f.out)
	return err
}

func (f *frameWriter) Close() error {
	err := f.flush()
	if cerr := f.enc.Close(); err == nil {
		err = cerr
	}
	return err
}

// rawLayer writes one layer's uncompressed tar stream.
type rawLayer func(w io.Writer) error

func tarLayer(lf LayerFunc) rawLayer {
	return func(w io.Writer) error {
		tw := tar.NewWriter(w)
		if err := lf(tw); err != nil {
			return err
		}
		return tw.Close()
	}
}

// blobFile is a layer blob written to a temporary file.
type blobFile struct {
	file   string
	digest string // sha256 hex of the blob
	diffID string // sha256 hex of the uncompressed tar
	size   int64
}

// writeBlob compresses one layer into a temporary file in dir, hashing the
// tar stream (diff_id) and the blob (digest) as it goes.
func writeBlob(dir string, comp Compression, layer rawLayer) (blobFile, error) {
	f, err := os.CreateTemp(dir, ".blob-*")
	if err != nil {
		return blobFile{}, err
	}
	b := blobFile{file: f.Name()}
	bh, dh := sha256.New(), sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, bh)}
	zw, err := comp.compressor(cw)
	if err == nil {
		err = layer(io.MultiWriter(zw, dh))
		if cerr := zw.Close(); err == nil {
			err = cerr
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	b.digest, b.diffID, b.size = hex.EncodeToString(bh.Sum(nil)), hex.EncodeToString(dh.Sum(nil)), cw.n
	return b, err
}

// WriteOCIArchive writes an oci-archive (an OCI image layout in a tar, as
// skopeo copy oci-archive: writes it) at path: the given layers (base
// first) compressed as comp, one image tagged tag (index.json's
// org.opencontainers.image.ref.name). It appears under its name only when
// complete.
func WriteOCIArchive(path, tag string, comp Compression, layers []LayerFunc) error {
	raw := make([]rawLayer, len(layers))
	for i, lf := range layers {
		raw[i] = tarLayer(lf)
	}
	diffIDs := func(bs []blobFile) []string {
		out := make([]string, len(bs))
		for i, b := range bs {
			out[i] = "sha256:" + b.diffID
		}
		return out
	}
	return writeOCI(path, tag, comp, raw, func(bs []blobFile) ([]byte, error) {
		history := make([]map[string]string, len(bs))
		for i := range bs {
			history[i] = map[string]string{"created": Epoch.Format(time.RFC3339), "created_by": fmt.Sprintf("bench layer %d", i)}
		}
		return json.Marshal(map[string]any{
			"architecture": "amd64",
			"os":           "linux",
			"created":      Epoch.Format(time.RFC3339),
			"config":       map[string]any{"Env": []string{"PATH=/usr/bin:/bin"}, "Cmd": []string{"/bin/sh"}},
			"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs(bs)},
			"history":      history,
		})
	})
}

// writeOCI writes the layers as blobs, asks config for the config JSON
// (which must list the blobs' diff_ids), and writes the archive.
func writeOCI(path, tag string, comp Compression, layers []rawLayer, config func([]blobFile) ([]byte, error)) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var blobs []blobFile
	defer func() {
		for _, b := range blobs {
			os.Remove(b.file)
		}
	}()
	for i, l := range layers {
		b, err := writeBlob(dir, comp, l)
		blobs = append(blobs, b)
		if err != nil {
			return fmt.Errorf("%s: layer %d: %w", path, i, err)
		}
	}
	cfg, err := config(blobs)
	if err != nil {
		return err
	}
	type desc struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int64             `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	man := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{SchemaVersion: 2, MediaType: "application/vnd.oci.image.manifest.v1+json",
		Config: desc{MediaType: "application/vnd.oci.image.config.v1+json", Digest: "sha256:" + sum(cfg), Size: int64(len(cfg))}}
	for _, b := range blobs {
		man.Layers = append(man.Layers, desc{MediaType: comp.mediaType(), Digest: "sha256:" + b.digest, Size: b.size})
	}
	manJSON, err := json.Marshal(man)
	if err != nil {
		return err
	}
	index, err := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []desc{{
		MediaType: man.MediaType, Digest: "sha256:" + sum(manJSON), Size: int64(len(manJSON)),
		Annotations: map[string]string{"org.opencontainers.image.ref.name": tag},
	}}})
	if err != nil {
		return err
	}

	out, err := os.CreateTemp(dir, ".archive-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name()) // no-op once renamed
	tw := tar.NewWriter(out)
	put := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: Epoch, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Mode: 0o755, ModTime: Epoch, Typeflag: tar.TypeDir}); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for i, b := range blobs {
		if seen[b.digest] {
			continue
		}
		seen[b.digest] = true
		if err := tw.WriteHeader(&tar.Header{Name: "blobs/sha256/" + b.digest, Mode: 0o644, Size: b.size, ModTime: Epoch, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		f, err := os.Open(b.file)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: copying layer %d: %w", path, i, err)
		}
	}
	if err := errsOf(
		put("blobs/sha256/"+sum(cfg), cfg),
		put("blobs/sha256/"+sum(manJSON), manJSON),
		put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)),
		put("index.json", index),
		tw.Close(),
	); err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(out.Name(), path)
}

func errsOf(es ...error) error {
	for _, e := range es {
		if e != nil {
			return e
		}
	}
	return nil
}

// RecompressOCIArchive writes at dst a copy of the single-image OCI archive
// src whose layers are recompressed as comp (gzip and zstd layers are read;
// uncompressed ones too). The config is kept byte for byte (the diff_ids do
// not change); the manifest and index name the new blobs, and the tag is
// kept.
func RecompressOCIArchive(src, dst string, comp Compression) error {
	members, err := readTarMembers(src)
	if err != nil {
		return err
	}
	var idx struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal(members["index.json"], &idx); err != nil || len(idx.Manifests) != 1 {
		return fmt.Errorf("%s: index.json: want one manifest (%v)", src, err)
	}
	blob := func(dg string) ([]byte, error) {
		alg, hx, _ := cutString(dg, ":")
		b, ok := members[path.Join("blobs", alg, hx)]
		if !ok {
			return nil, fmt.Errorf("%s: no blob %s", src, dg)
		}
		return b, nil
	}
	manJSON, err := blob(idx.Manifests[0].Digest)
	if err != nil {
		return err
	}
	var man struct {
		Config struct{ Digest string }
		Layers []struct{ Digest string }
	}
	if err := json.Unmarshal(manJSON, &man); err != nil {
		return fmt.Errorf("%s: manifest: %w", src, err)
	}
	cfg, err := blob(man.Config.Digest)
	if err != nil {
		return err
	}
	var raw []rawLayer
	for _, l := range man.Layers {
		b, err := blob(l.Digest)
		if err != nil {
			return err
		}
		raw = append(raw, func(w io.Writer) error {
			r, err := decompress(b)
			if err != nil {
				return err
			}
			defer r.Close()
			_, err = io.Copy(w, r)
			return err
		})
	}
	tag := idx.Manifests[0].Annotations["org.opencontainers.image.ref.name"]
	return writeOCI(dst, tag, comp, raw, func(bs []blobFile) ([]byte, error) {
		var c struct {
			RootFS struct {
				DiffIDs []string `json:"diff_ids"`
			} `json:"rootfs"`
		}
		if err := json.Unmarshal(cfg, &c); err != nil {
			return nil, fmt.Errorf("%s: config: %w", src, err)
		}
		for i, b := range bs {
			if i >= len(c.RootFS.DiffIDs) || c.RootFS.DiffIDs[i] != "sha256:"+b.diffID {
				return nil, fmt.Errorf("%s: layer %d does not hash to the config's diff_id", src, i)
			}
		}
		return cfg, nil
	})
}

func decompress(b []byte) (io.ReadCloser, error) {
	switch {
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b}):
		return gzip.NewReader(bytes.NewReader(b))
	case bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		d, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// readTarMembers reads every regular member of a (small) tarball into
// memory, by cleaned name.
func readTarMembers(p string) (map[string][]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", p, h.Name, err)
		}
		out[path.Clean(h.Name)] = b
	}
}

func cutString(s, sep string) (string, string, bool) {
	for i := 0; i+len(sep) <= len(s); i++ {
		if s[i:i+len(sep)] == sep {
			return s[:i], s[i+len(sep):], true
		}
	}
	return s, "", false
}

// TextFileLayer is one layer holding data/big.txt: size bytes of
// pseudo-random lowercase hex digits and newlines (64 digits a line).
// Unlike random bytes, which deflate stores as they are, it compresses to
// about half, so every deflate block is Huffman-coded and a read of it
// really inflates.
func TextFileLayer(size int64) LayerFunc {
	return func(tw *tar.Writer) error {
		if err := Dir(tw, "data"); err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: "data/big.txt", Mode: 0o644, Size: size, ModTime: Epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := io.CopyN(tw, &hexText{r: rng(4)}, size)
		return err
	}
}

// hexText reads as lines of 64 random hex digits.
type hexText struct {
	r   io.Reader
	raw [32 << 10]byte
	col int
}

func (h *hexText) Read(p []byte) (int, error) {
	const digits = "0123456789abcdef"
	n := min(len(p), len(h.raw))
	if _, err := io.ReadFull(h.r, h.raw[:n]); err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		if h.col == 64 {
			p[i], h.col = '\n', 0
			continue
		}
		p[i] = digits[h.raw[i]&15]
		h.col++
	}
	return n, nil
}

// EnsureOCIArchive writes the archive at path with write unless a file
// stamped with the same recipe is already there.
func EnsureOCIArchive(path, recipe string, write func() error) (built bool, err error) {
	stamp := path + ".stamp"
	if b, err := os.ReadFile(stamp); err == nil && string(b) == recipe {
		if _, err := os.Stat(path); err == nil {
			return false, nil
		}
	}
	os.Remove(stamp)
	if err := write(); err != nil {
		return false, err
	}
	return true, os.WriteFile(stamp, []byte(recipe), 0o644)
}
