// Package gz gives random access to gzip streams through checkpoints: the
// zran technique of zlib's examples/zran.c, also used by AWS SOCI's zTOC
// and by indexed_gzip (ratarmount).
//
// One streaming pass (Build, or a Builder read to its end) inflates the
// whole stream, hands its output to the caller in order (to hash it and
// index the tar it holds on the same pass), checks every member's CRC-32
// and length, and records a checkpoint at the first DEFLATE block boundary
// after each stretch of output (DefaultEvery, 2 MiB): the uncompressed
// offset, the bit offset of the next block header in the compressed
// stream, and the up to 32 KiB of output before it that back-references
// may reach (deflated). A read (Index.ReadAt, Index.NewReader) inflates
// from the nearest checkpoint at or before its offset. Multi-member
// streams (concatenated gzip files, pigz -i) are handled: a checkpoint may
// fall in any member, and decoding from it carries on through the
// following members' trailers and headers. An Index encodes to a compact
// binary form (MarshalBinary) with a version and a CRC-32C, which
// UnmarshalBinary refuses when corrupt.
//
// Go's compress/flate (and klauspost/compress/flate) can neither report
// block boundaries nor start at one, so the package has a DEFLATE decoder
// (RFC 1951) of its own. It is pure Go, not zlib through cgo (as zran.c
// uses inflatePrime, inflateSetDictionary and Z_BLOCK), for three reasons:
//
//   - no C toolchain: imgmount keeps building with a plain `go build`,
//     cross-compiles, and links statically;
//   - it is fuzzed against compress/flate (FuzzInflate): on any input it
//     must produce what compress/flate produces, and fail where it fails;
//   - memory safety: compressed layers come from untrusted images, and a
//     decoding bug in Go is an error or a panic, not a memory corruption
//     in the mount's process.
//
// The decoder is table-driven (a 10-bit root table with sub-tables for the
// literal/length code, 8 bits for distances), reads its input 64 bits at
// a time, and copies matches 8 bytes at a time; it inflates about twice as
// fast as compress/flate (see BenchmarkInflate).
//
// Differences from compress/gzip, all in what is accepted: file names and
// comments in member headers may be longer than 511 bytes (zlib and GNU
// gzip take them too). Like compress/gzip, anything after the last member
// that is not another member is an error.
package gz
