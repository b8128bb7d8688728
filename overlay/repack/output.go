package repack

import (
	"archive/tar"
	_ "crypto/sha512" // layers may be stored under sha384/sha512 digests
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// outLayer is one layer of the image a commit writes, and where its blob
// comes from.
type outLayer struct {
	diffID    digest.Digest
	digest    digest.Digest
	size      int64
	mediaType string
	where     string            // names the layer in errors
	stored    []byte            // the image's own blob, copied byte for byte (mapped)...
	storedAt  *io.SectionReader // ...or read in place from a compressed tarball...
	path      string            // ...or a blob file the commit wrote...
	// ...or written straight into the output (a squash): diffID, digest
	// and size (an estimate until then) are set once it is written.
	write func(io.Writer) (*LayerBlob, error)
	// file holds stored at fileOff (archive.Layer.StoredFile), for copying
	// file to file.
	file    *os.File
	fileOff int64
	omit    bool // left out (thin)
	// verified: the bytes are known to match digest (checked when the
	// image was indexed, or hashed as the commit wrote them), so copying
	// them needs no second hash.
	verified bool
}

// storedLayer is one of img's layers, as stored. Its blob digest is known
// from the manifest or the member's name, except for legacy tarballs that
// keep compressed layers as <id>/layer.tar: those are hashed here.
func storedLayer(img *archive.Image, l *archive.Layer) outLayer {
	d, verified := l.Digest, l.StoredVerified
	if d == "" {
		d, verified = storedDigest(l), true
	}
	mt := layerMediaType(l.Compression)
	if isNondistributable(l.MediaType) {
		mt = l.MediaType
	}
	return outLayer{diffID: l.DiffID, digest: d, size: l.StoredSize, mediaType: mt,
		where: describeLayer(img, l), stored: l.Stored, storedAt: l.StoredAt, file: l.StoredFile, fileOff: l.StoredOffset, verified: verified}
}

// storedDigest hashes a layer's blob as stored; "" if it cannot be read
// (copyLayer then reports the mismatch).
func storedDigest(l *archive.Layer) digest.Digest {
	if l.Stored != nil || l.StoredAt == nil {
		return digest.FromBytes(l.Stored)
	}
	d, err := digest.FromReader(io.NewSectionReader(l.StoredAt, 0, l.StoredSize))
	if err != nil {
		return ""
	}
	return d
}

// blobLayer is a layer the commit wrote.
func blobLayer(b *LayerBlob) outLayer {
	return outLayer{diffID: b.DiffID, digest: b.Digest, size: b.Size, mediaType: b.MediaType(),
		where: "the new layer (" + b.Path + ")", path: b.Path, verified: true}
}

func removeBlob(b *LayerBlob) error {
	if err := os.Remove(b.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// outputWriter writes the image tarball.
type outputWriter struct {
	format   OutputFormat
	mtime    time.Time // of every member: the same input gives the same bytes
	progress func(string, ...any)

	thin map[digest.Digest]bool // layers to leave out, for one written in place

	tw             *tarSink
	written        map[string]bool
	newLayer       *LayerBlob // the layer written in place, once it is
	configDigest   digest.Digest
	manifestDigest digest.Digest
	tags           []string
}

// write writes the whole tarball: oci-layout, the blobs (layers, config,
// manifest), index.json, manifest.json, as Docker 25+ orders them. config
// gives the config once the layers are written.
func (ow *outputWriter) write(w *tarSink, layers []outLayer, config func() ([]byte, error), plat ocispec.Platform, tags []string) error {
	ow.tw = w
	ow.written = map[string]bool{}
	ow.tags = tags
	oci, docker := ow.format != OutputDocker, ow.format != OutputOCI
	if oci {
		if err := ow.file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
			return err
		}
	}
	if err := ow.blobDirs(layers); err != nil {
		return err
	}
	if err := ow.layers(layers); err != nil {
		return err
	}
	cfg, err := config()
	if err != nil {
		return err
	}
	ow.configDigest = digest.FromBytes(cfg)
	man, err := ociManifest(layers, cfg)
	if err != nil {
		return err
	}
	if err := ow.file(archive.BlobPath(ow.configDigest), cfg); err != nil {
		return err
	}
	if oci {
		ow.manifestDigest = digest.FromBytes(man)
		if err := ow.file(archive.BlobPath(ow.manifestDigest), man); err != nil {
			return err
		}
		if err := ow.index(int64(len(man)), plat); err != nil {
			return err
		}
	}
	if docker {
		if err := ow.dockerManifest(layers); err != nil {
			return err
		}
	}
	if err := ow.tw.end(); err != nil {
		return fmt.Errorf("writing the image tarball: %w", err)
	}
	return nil
}

// ociManifest is the OCI manifest of the image.
func ociManifest(layers []outLayer, cfg []byte) ([]byte, error) {
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))},
		Layers:    []ocispec.Descriptor{},
	}
	for _, l := range layers {
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: l.mediaType, Digest: l.digest, Size: l.size})
	}
	return marshalJSON(m)
}

func (ow *outputWriter) header(name string, size int64, dir bool) error {
	hdr := &tar.Header{Name: name, Size: size, Mode: 0o644, ModTime: ow.mtime, Typeflag: tar.TypeReg}
	if dir {
		hdr.Mode, hdr.Typeflag = 0o755, tar.TypeDir
	}
	if err := ow.tw.header(hdr); err != nil {
		return fmt.Errorf("writing the image tarball: %s: %w", name, err)
	}
	return nil
}

// blobHeader is the header of a blob member, as header writes it.
func (ow *outputWriter) blobHeader(name string, size int64) ([]byte, error) {
	return headerBlocks(&tar.Header{Name: name, Size: size, Mode: 0o644, ModTime: ow.mtime, Typeflag: tar.TypeReg})
}

// file writes one small member.
func (ow *outputWriter) file(name string, data []byte) error {
	if ow.written[name] {
		return nil
	}
	ow.written[name] = true
	if err := ow.header(name, int64(len(data)), false); err != nil {
		return err
	}
	if _, err := ow.tw.Write(data); err != nil {
		return fmt.Errorf("writing the image tarball: %s: %w", name, err)
	}
	return ow.tw.pad(int64(len(data)))
}

// blobDirs writes blobs/ and a directory per digest algorithm.
func (ow *outputWriter) blobDirs(layers []outLayer) error {
	algs := []string{digest.SHA256.String()}
	for _, l := range layers {
		if l.write != nil {
			continue // a layer written in place is sha256
		}
		if a := l.digest.Algorithm().String(); !slices.Contains(algs, a) {
			algs = append(algs, a)
		}
	}
	if err := ow.header("blobs/", 0, true); err != nil {
		return err
	}
	for _, a := range algs {
		if err := ow.header("blobs/"+a+"/", 0, true); err != nil {
			return err
		}
	}
	return nil
}

// layers writes the layer blobs, each once, but those left out.
func (ow *outputWriter) layers(layers []outLayer) error {
	n := 0
	for _, l := range layers {
		if !l.omit {
			n++
		}
	}
	i := 0
	for k := range layers {
		l := &layers[k]
		if l.write != nil {
			if err := ow.writeInPlace(l); err != nil {
				return err
			}
			continue
		}
		name := archive.BlobPath(l.digest)
		if l.omit || ow.written[name] {
			continue
		}
		i++
		ow.written[name] = true
		ow.progress("writing layer %d/%d (%s, %s)", i, n, archive.ShortDigest(l.diffID), archive.HumanSize(l.size))
		if err := ow.header(name, l.size, false); err != nil {
			return err
		}
		if err := ow.copyLayer(*l); err != nil {
			return err
		}
		if err := ow.tw.pad(l.size); err != nil {
			return fmt.Errorf("writing the image tarball: %w", err)
		}
	}
	return nil
}

// writeInPlace writes a layer straight into the output: a header block is
// reserved, the layer written after it, and the header filled in with the
// digest and size the writing gave. The result is the bytes writing the
// blob into a file first and copying it would give.
func (ow *outputWriter) writeInPlace(l *outLayer) error {
	// The header of any layer under 8 GiB is one block; fill moves the
	// layer along if its header needs more.
	est, err := ow.blobHeader(archive.BlobPath(digest.FromString("")), 0)
	if err != nil {
		return err
	}
	at, err := ow.tw.reserve(len(est))
	if err != nil {
		return fmt.Errorf("writing the image tarball: %w", err)
	}
	b, err := l.write(ow.tw)
	if err != nil {
		return err
	}
	l.diffID, l.digest, l.size, l.mediaType, l.write = b.DiffID, b.Digest, b.Size, b.MediaType(), nil
	ow.newLayer = b
	name := archive.BlobPath(b.Digest)
	if ow.thin[b.DiffID] {
		l.omit = true
		return ow.tw.truncate(at)
	}
	ow.written[name] = true
	hdr, err := ow.blobHeader(name, b.Size)
	if err == nil {
		err = ow.tw.fill(at, len(est), hdr)
	}
	if err == nil {
		err = ow.tw.pad(b.Size)
	}
	if err != nil {
		return fmt.Errorf("writing the image tarball: %s: %w", name, err)
	}
	return nil
}

// copyLayer copies a layer's blob, checking it against its digest on the
// way unless that was done before: a stored blob that does not match is a
// corrupt input, and writing it would make a corrupt image.
func (ow *outputWriter) copyLayer(l outLayer) error {
	if l.verified {
		// Copied file to file where the kernel can: the bytes are known,
		// so they need not pass through here.
		err := ow.copyRange(l)
		if err != errNoCopyRange {
			if err != nil {
				return fmt.Errorf("%s: copying its blob into the image tarball: %w", l.where, err)
			}
			return nil
		}
	}
	v := l.digest.Verifier()
	dst := io.MultiWriter(ow.tw, v)
	if l.verified {
		dst = ow.tw
	}
	var n int64
	var err error
	switch {
	case l.path != "":
		n, err = copyFile(dst, l.path)
	case l.stored == nil && l.storedAt != nil:
		n, err = io.Copy(dst, io.NewSectionReader(l.storedAt, 0, l.size))
	default:
		for off := 0; off < len(l.stored) && err == nil; off += 8 << 20 {
			var k int
			chunk := l.stored[off:min(off+8<<20, len(l.stored))]
			tarindex.Populate(chunk)
			k, err = dst.Write(chunk)
			n += int64(k)
			ow.tw.unmapLater(chunk)
		}
	}
	if err != nil {
		return fmt.Errorf("%s: copying its blob into the image tarball: %w", l.where, err)
	}
	if n != l.size || !l.verified && !v.Verified() {
		return fmt.Errorf("%s: its blob (%d bytes) does not match its digest %s: the input is corrupt", l.where, n, l.digest)
	}
	return nil
}

// copyRange copies a verified blob file to file: from the tarball that
// holds it, or from the blob file the commit wrote. errNoCopyRange: not
// here, copy it through memory. A mapped blob is copied file to file only
// where it lies at the same offset within a page as it goes in the
// output: copy_file_range on ext4 splices page by page, and pages that
// straddle two source pages made it 1.3× slower than writing from the
// mapping (49 ms against 39 for the Debian image's layers, whose offsets
// in a docker save and in the output differ by 2 KiB); where they agree it
// is as fast, and filesystems that share extents can skip the copy.
func (ow *outputWriter) copyRange(l outLayer) error {
	switch {
	case l.file != nil && (l.stored == nil || ow.tw.pageAligned(l.fileOff)):
		return ow.tw.copyRange(l.file, l.fileOff, l.size)
	case l.path != "" && ow.tw.file != nil:
		f, err := os.Open(l.path)
		if err != nil {
			return err
		}
		defer f.Close()
		if fi, err := f.Stat(); err != nil || fi.Size() != l.size {
			return errNoCopyRange // let the copy report what is wrong
		}
		return ow.tw.copyRange(f, 0, l.size)
	}
	return errNoCopyRange
}

func copyFile(w io.Writer, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return io.Copy(w, f)
}

// isNameTag tells whether t is a "name:tag" reference, which docker load
// needs in RepoTags; OCI reference names ("bookworm") are not.
func isNameTag(t string) bool {
	if strings.Contains(t, "@") {
		return false
	}
	return strings.Contains(t[strings.LastIndex(t, "/")+1:], ":")
}

// index writes index.json: one entry per tag (as Docker writes it: the
// full name in io.containerd.image.name, the tag in ref.name; an OCI
// reference name in ref.name alone), or one untagged entry.
func (ow *outputWriter) index(manSize int64, plat ocispec.Platform) error {
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: ow.manifestDigest, Size: manSize}
	if plat.OS != "" && plat.Architecture != "" {
		desc.Platform = &ocispec.Platform{OS: plat.OS, Architecture: plat.Architecture, Variant: plat.Variant}
	}
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	for _, t := range ow.tags {
		d := desc
		if isNameTag(t) {
			d.Annotations = map[string]string{archive.AnnotationContainerdName: t, ocispec.AnnotationRefName: t[strings.LastIndex(t, ":")+1:]}
		} else {
			d.Annotations = map[string]string{ocispec.AnnotationRefName: t}
		}
		idx.Manifests = append(idx.Manifests, d)
	}
	if len(idx.Manifests) == 0 {
		idx.Manifests = []ocispec.Descriptor{desc}
	}
	b, err := marshalJSON(idx)
	if err != nil {
		return err
	}
	return ow.file("index.json", b)
}

// dockerManifest writes manifest.json, what docker load reads.
func (ow *outputWriter) dockerManifest(layers []outLayer) error {
	e := archive.DockerManifestEntry{Config: archive.BlobPath(ow.configDigest), Layers: []string{}}
	for _, t := range ow.tags {
		if isNameTag(t) {
			e.RepoTags = append(e.RepoTags, t)
		}
	}
	for _, l := range layers {
		e.Layers = append(e.Layers, archive.BlobPath(l.digest))
	}
	b, err := marshalJSON([]archive.DockerManifestEntry{e})
	if err != nil {
		return err
	}
	return ow.file("manifest.json", b)
}
