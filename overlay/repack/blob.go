package repack

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"os"

	"github.com/imgmount/imgmount/tarindex"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// LayerBlob is a layer repack wrote into a file.
type LayerBlob struct {
	Path        string        // the file holding the blob as it goes into the image
	DiffID      digest.Digest // sha256 of the uncompressed tar
	Digest      digest.Digest // sha256 of the blob (the DiffID when uncompressed)
	Size        int64         // bytes of the blob
	TarSize     int64         // bytes of the uncompressed tar
	Compression tarindex.Compression
	Entries     int // tar members, whiteouts included
}

// MediaType is the OCI media type of the blob.
func (b *LayerBlob) MediaType() string { return layerMediaType(b.Compression) }

// layerMediaType is the OCI media type of a layer compressed with c.
func layerMediaType(c tarindex.Compression) string {
	switch c {
	case tarindex.CompressionGzip:
		return ocispec.MediaTypeImageLayerGzip
	case tarindex.CompressionZstd:
		return ocispec.MediaTypeImageLayerZstd
	}
	return ocispec.MediaTypeImageLayer
}

// countingHash hashes and counts what is written through it.
type countingHash struct {
	h hash.Hash
	n int64
}

func newCountingHash() *countingHash { return &countingHash{h: sha256.New()} }

func (c *countingHash) Write(p []byte) (int, error) {
	c.h.Write(p)
	c.n += int64(len(p))
	return len(p), nil
}

func (c *countingHash) digest() digest.Digest {
	return digest.NewDigestFromBytes(digest.SHA256, c.h.Sum(nil))
}

// writeLayerBlob creates path and fills it with the tar that fill writes,
// compressed with comp (see writeLayer). On error the file is removed.
func writeLayerBlob(path string, comp tarindex.Compression, fill func(io.Writer) (int, error)) (_ *LayerBlob, err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("%s: %w", path, cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	buf := bufio.NewWriterSize(f, 1<<20)
	b, err := writeLayer(buf, comp, fill)
	if err != nil {
		return nil, err
	}
	if err := buf.Flush(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	b.Path = path
	return b, nil
}

// writeLayer writes to w the tar that fill writes, compressed with comp,
// computing the diff_id and the blob digest in the same pass (one hash
// when uncompressed: the blob is the tar). The LayerBlob has no Path.
func writeLayer(w io.Writer, comp tarindex.Compression, fill func(io.Writer) (int, error)) (*LayerBlob, error) {
	tarHash := newCountingHash()
	blobHash := tarHash
	enc := io.WriteCloser(nopCloser{w})
	if comp != tarindex.CompressionNone {
		blobHash = newCountingHash()
		var err error
		if enc, err = newCompressor(io.MultiWriter(w, blobHash), comp); err != nil {
			return nil, err
		}
	}
	entries, err := fill(io.MultiWriter(enc, tarHash))
	if err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("%s-compressing the layer: %w", comp, err)
	}
	return &LayerBlob{
		DiffID:      tarHash.digest(),
		Digest:      blobHash.digest(),
		Size:        blobHash.n,
		TarSize:     tarHash.n,
		Compression: comp,
		Entries:     entries,
	}, nil
}

// nopCloser is a compressor that stores.
type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// newCompressor wraps w in comp's encoder. Both encoders give the same
// bytes for the same input: gzip writes no name or time in its header, and
// zstd compresses block after block, whatever the concurrency.
func newCompressor(w io.Writer, comp tarindex.Compression) (io.WriteCloser, error) {
	switch comp {
	case tarindex.CompressionNone:
		return nopCloser{w}, nil
	case tarindex.CompressionGzip:
		return gzip.NewWriterLevel(w, gzip.DefaultCompression)
	case tarindex.CompressionZstd:
		return zstd.NewWriter(w)
	}
	return nil, fmt.Errorf("cannot compress layers with %s (none, gzip and zstd can)", comp)
}
