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
	if comp == tarindex.CompressionNone {
		// The blob is the tar: one hash, and the pipe writes it.
		pipe := newHashPipe(w)
		defer pipe.close()
		entries, err := fill(pipe)
		if err != nil {
			return nil, err
		}
		h, err := pipe.flush()
		if err != nil {
			return nil, err
		}
		return &LayerBlob{DiffID: h.digest(), Digest: h.digest(), Size: h.n, TarSize: h.n, Compression: comp, Entries: entries}, nil
	}
	pipe := newHashPipe(nil)
	defer pipe.close()
	blobHash := newCountingHash()
	enc, err := newCompressor(io.MultiWriter(w, blobHash), comp)
	if err != nil {
		return nil, err
	}
	entries, err := fill(io.MultiWriter(enc, pipe))
	if err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("%s-compressing the layer: %w", comp, err)
	}
	tarHash, err := pipe.flush()
	if err != nil {
		return nil, err
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

// hashChunk is how much hashPipe hands its goroutine at a time.
const hashChunk = 1 << 20

// hashPipe is a countingHash whose hashing runs on another goroutine, a
// chunk at a time, while the writer goes on: the diff_id's sha256 is most
// of a squash's CPU time, and on two cores it runs beside the tar's
// formatting and writing rather than after it. With w set, each chunk is
// also written to w (while it is being hashed), so that the bytes are
// copied once, into the chunk, rather than once more into w's buffer.
// close must be called.
type hashPipe struct {
	w    io.Writer // nil: hash only
	c    *countingHash
	cur  []byte
	work chan []byte // chunks to hash
	free chan []byte // chunks hashed, to fill again
	done chan struct{}
}

func newHashPipe(w io.Writer) *hashPipe {
	p := &hashPipe{w: w, c: newCountingHash(), work: make(chan []byte, 2), free: make(chan []byte, 3), done: make(chan struct{})}
	for range 3 {
		p.free <- make([]byte, 0, hashChunk)
	}
	p.cur = <-p.free
	go func() {
		defer close(p.done)
		for b := range p.work {
			p.c.Write(b)
			p.free <- b[:0]
		}
	}()
	return p
}

func (p *hashPipe) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		k := copy(p.cur[len(p.cur):cap(p.cur)], b)
		p.cur, b = p.cur[:len(p.cur)+k], b[k:]
		if len(p.cur) == cap(p.cur) {
			if err := p.emit(); err != nil {
				return n - len(b), err
			}
		}
	}
	return n, nil
}

// emit hands the chunk to the hashing goroutine and writes it to w
// meanwhile (both only read it), and takes a chunk the goroutine is done
// with.
func (p *hashPipe) emit() error {
	chunk := p.cur
	p.work <- chunk
	p.cur = <-p.free
	if p.w != nil {
		if _, err := p.w.Write(chunk); err != nil {
			return err
		}
	}
	return nil
}

// flush writes and hashes what is left; the hash is then complete.
func (p *hashPipe) flush() (*countingHash, error) {
	if len(p.cur) > 0 {
		if err := p.emit(); err != nil {
			return nil, err
		}
	}
	return p.close(), nil
}

// close stops the goroutine. Calling it again does nothing.
func (p *hashPipe) close() *countingHash {
	if p.work != nil {
		close(p.work)
		<-p.done
		p.work = nil
	}
	return p.c
}
