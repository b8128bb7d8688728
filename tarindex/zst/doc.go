// Package zst gives random access to zstd streams through their frames.
//
// A zstd frame (RFC 8878) is decoded from its own start with nothing from
// the frames before it: no window carries over, unlike gzip's DEFLATE
// blocks (see package gz, which has to store a 32 KiB window with every
// checkpoint). A stream of several frames can therefore be entered at any
// frame start, and an index of frame starts is all random access needs.
// Such streams are common: zstd:chunked layers (one frame per file, or
// per chunk of a big one, and a skippable frame for the manifest), the
// seekable format (frames plus a skippable seek table), pzstd (frames of
// a fixed input size, each after a skippable frame), and any
// concatenation of zstd files. A stream of one big frame (`zstd` itself,
// multithreaded or not, and Go encoders write one) has no place to seek
// to: every read would
// decode from the start. Index.MaxFrame tells the caller which case it
// has, and the caller then keeps a decompressed copy instead when the
// largest frame is past DefaultMaxFrame.
//
// One streaming pass (Build, or a Builder read to its end) decodes the
// whole stream, hands its output to the caller in order (to hash it and
// index the tar it holds on the same pass), and records where each frame
// starts, compressed and decompressed. Frame boundaries are found by
// walking the framing itself (frame header, 3-byte block headers, the
// optional checksum; skippable frames by their length), not by trusting
// the Frame_Content_Size field, which is optional and may lie: each frame
// is then decoded on its own from a section of the stream, and the size
// recorded is the size decoded (a declared size that disagrees is an
// error). Frames smaller than 64 KiB are grouped under one seek point, so
// that a stream of tiny frames does not make an index bigger than itself.
//
// A read (Index.ReadAt) walks the frames from the seek point at or before
// its offset, skips whole frames that declare their size without decoding
// them, and decodes the frames it covers, streaming: output before its
// offset is discarded, never held, so memory is one frame's window
// whatever the frame's size.
//
// Decoding is klauspost/compress/zstd's, one frame at a time, with
// concurrency 1 (no goroutines; a read needs its output in order) and a
// window limit of MaxWindow (128 MiB, the reference decoder's default):
// the decoder allocates a frame's declared window up front, so the limit
// is what bounds the memory a hostile frame header can claim. Frames that
// need a dictionary are refused (layers do not use them).
//
// Errors name the frame and its compressed offset. A truncated stream,
// a corrupt frame, a checksum mismatch, or anything after the last frame
// that is not another frame is an error, as with zstd itself. An Index
// encodes to a compact binary form (MarshalBinary) with a version and a
// CRC-32C, which UnmarshalBinary refuses when corrupt.
package zst
