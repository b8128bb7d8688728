package repack

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/tarindex"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
)

// verifyBlob checks a layer blob: against the digest that names it (when
// one does) and, decompressed if it is compressed, against its diff_id.
func verifyBlob(b []byte, dgst, diffID digest.Digest) error {
	comp := compressionOf(b)
	var sum digest.Digest
	if dgst != "" || comp == tarindex.CompressionNone {
		sum = digest.FromBytes(b)
	}
	if dgst != "" && sum != dgst {
		return archive.Errorf(archive.ErrDigestMismatch, "the blob's digest is %s, not %s as the manifest says", sum, dgst)
	}
	switch comp {
	case tarindex.CompressionNone:
		if sum != diffID {
			return archive.Errorf(archive.ErrDiffIDMismatch, "the layer's digest is %s, not its diff_id %s", sum, diffID)
		}
		return nil
	case tarindex.CompressionGzip, tarindex.CompressionZstd:
		got, _, err := decompressDigest(bytes.NewReader(b), comp, io.Discard)
		if err != nil {
			return archive.Errorf(archive.ErrCorruptLayer, "corrupt %s data: %w", comp, err)
		}
		if got != diffID {
			return decompressesTo(got, diffID)
		}
		return nil
	}
	return unsupported(comp)
}

// compressionOf tells how the blob b is compressed.
func compressionOf(b []byte) tarindex.Compression {
	return tarindex.DetectCompression(b[:min(len(b), 8)])
}

// decompressesTo is the error for a layer that decompresses to got, not
// to diffID.
func decompressesTo(got, diffID digest.Digest) error {
	return archive.Errorf(archive.ErrDiffIDMismatch, "the layer decompresses to %s, not its diff_id %s", got, diffID)
}

func unsupported(comp tarindex.Compression) error {
	return fmt.Errorf("%s-compressed layers are not supported", comp)
}

// decompressDigest decompresses r into w and gives the digest and size of
// what came out.
func decompressDigest(r io.Reader, comp tarindex.Compression, w io.Writer) (digest.Digest, int64, error) {
	var dec io.Reader
	switch comp {
	case tarindex.CompressionGzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return "", 0, err
		}
		defer zr.Close()
		dec = zr
	case tarindex.CompressionZstd:
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return "", 0, err
		}
		defer zr.Close()
		dec = zr
	default:
		return "", 0, unsupported(comp)
	}
	h := newCountingHash()
	if _, err := io.Copy(io.MultiWriter(w, h), dec); err != nil {
		return "", 0, err
	}
	return h.digest(), h.n, nil
}

// decompressVerified decompresses a layer into a file in dir, checking
// that it matches diffID.
func decompressVerified(ctx context.Context, b []byte, comp tarindex.Compression, diffID digest.Digest, dir string) (string, int64, error) {
	f, err := os.CreateTemp(dir, "layer-")
	if err != nil {
		return "", 0, err
	}
	bw := bufio.NewWriterSize(cancellable(ctx, f), 1<<20)
	got, n, err := decompressDigest(bytes.NewReader(b), comp, bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && got != diffID {
		err = decompressesTo(got, diffID)
	}
	if err != nil {
		os.Remove(f.Name())
		return "", 0, err
	}
	return f.Name(), n, nil
}
