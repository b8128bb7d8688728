package tarindex

import "bytes"

// Compression is a stream compression format, detected by magic bytes.
type Compression uint8

const (
	CompressionNone Compression = iota
	CompressionGzip
	CompressionZstd
	CompressionBzip2
	CompressionXz
)

func (c Compression) String() string {
	switch c {
	case CompressionNone:
		return "none"
	case CompressionGzip:
		return "gzip"
	case CompressionZstd:
		return "zstd"
	case CompressionBzip2:
		return "bzip2"
	case CompressionXz:
		return "xz"
	}
	return "unknown"
}

// DetectCompression tells the compression of a stream from its first bytes.
// Media types in manifests are not trusted: real tarballs mislabel layers.
func DetectCompression(head []byte) Compression {
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return CompressionGzip
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return CompressionZstd
	case bytes.HasPrefix(head, []byte("BZh")):
		return CompressionBzip2
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}):
		return CompressionXz
	}
	return CompressionNone
}
