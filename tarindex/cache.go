package tarindex

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
)

// Cache keeps saved indexes and decompressed layers under Dir.
// It is safe for concurrent use by several goroutines and processes: every
// file is written under a temporary name and renamed into place.
type Cache struct {
	Dir string
}

// Index returns the index of the tar stream in [base, base+size) of r,
// loading it from the cache when a valid saved copy exists under key, else
// building it and saving it. key must identify the bytes (e.g. the file's
// device, inode, size and mtime plus base); a saved index is still checked
// against the source and rebuilt when stale or corrupt, never trusted.
func (c *Cache) Index(key string, r io.ReaderAt, base, size int64) (*Index, error) {
	// TODO(tarindex helper): persist and validate.
	return Build(r, base, size)
}

// Decompress returns the path of a cache file holding the decompressed
// stream src (compressed with comp), creating it if needed. If want is not
// empty the decompressed bytes must hash to it (else an error wrapping
// ErrDigestMismatch, and nothing is left in the cache); the file is then
// named by want, so later calls find it without decompressing. If want is
// empty the file is named by key.
func (c *Cache) Decompress(key string, want digest.Digest, comp Compression, src io.Reader) (string, error) {
	// An empty digest has no encoded part (go-digest panics on it): name by key.
	name := digest.FromString(key).Encoded()
	if want != "" {
		name = want.Encoded()
	}
	dst := filepath.Join(c.Dir, "blobs", name)
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	var rd io.Reader
	switch comp {
	case CompressionGzip:
		zr, err := gzip.NewReader(src)
		if err != nil {
			return "", err
		}
		defer zr.Close()
		rd = zr
	case CompressionZstd:
		zr, err := zstd.NewReader(src)
		if err != nil {
			return "", err
		}
		defer zr.Close()
		rd = zr
	case CompressionNone:
		rd = src
	default:
		return "", fmt.Errorf("%s compression is not supported", comp)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".tmp-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	dg := digest.SHA256.Digester()
	if _, err := io.Copy(io.MultiWriter(tmp, dg.Hash()), rd); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if want != "" && dg.Digest() != want {
		return "", fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, dg.Digest(), want)
	}
	return dst, os.Rename(tmp.Name(), dst)
}
