package zst

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/imgmount/imgmount/tarindex/internal/seekfmt"
)

// Encoded index (version 1):
//
//	magic    "zsix"
//	version  u8 (1)
//	header   uvarint decompressed size, compressed size, data frames,
//	         largest frame, seek points
//	points   per seek point: uvarint decompressed offset minus the
//	         previous one's, uvarint compressed offset minus the
//	         previous one's
//	trailer  u32 CRC-32C (little endian) of everything before it
//
// A seek point costs 2 to 6 bytes: an index is a few bytes per 64 KiB of
// output at most.
const (
	encMagic   = "zsix"
	encVersion = 1
)

// ErrBadIndex reports an encoded index that is corrupt, truncated, or of
// another version: rebuild it.
var ErrBadIndex = errors.New("invalid zstd frame index")

// AppendBinary appends the encoding of ix to b (encoding.BinaryAppender).
func (ix *Index) AppendBinary(b []byte) ([]byte, error) {
	start := len(b)
	b = seekfmt.Begin(b, encMagic, encVersion)
	b = binary.AppendUvarint(b, uint64(ix.size))
	b = binary.AppendUvarint(b, uint64(ix.csize))
	b = binary.AppendUvarint(b, uint64(ix.frames))
	b = binary.AppendUvarint(b, uint64(ix.maxFrame))
	b = binary.AppendUvarint(b, uint64(len(ix.spans)))
	var out, in int64
	for _, s := range ix.spans {
		b = binary.AppendUvarint(b, uint64(s.out-out))
		b = binary.AppendUvarint(b, uint64(s.in-in))
		out, in = s.out, s.in
	}
	return seekfmt.Seal(b, start), nil
}

// MarshalBinary encodes ix (encoding.BinaryMarshaler).
func (ix *Index) MarshalBinary() ([]byte, error) {
	return ix.AppendBinary(make([]byte, 0, 64+len(ix.spans)*8))
}

// UnmarshalBinary decodes an index MarshalBinary encoded, refusing (with
// an error wrapping ErrBadIndex) any that is corrupt, truncated or
// inconsistent: what it accepts, ReadAt can use without going past the
// stream it describes. It does not keep data, and allocates at most 8
// times len(data).
func (ix *Index) UnmarshalBinary(data []byte) error {
	bad := func(what string) error { return fmt.Errorf("%w: %s", ErrBadIndex, what) }
	d, err := seekfmt.Open(data, encMagic, encVersion)
	if err != nil {
		return bad(err.Error())
	}
	size, csize, frames, maxFrame := d.Int(), d.Int(), d.Int(), d.Int()
	n := d.Int()
	if d.Err != nil {
		return bad(d.Err.Error())
	}
	switch {
	case frames > csize/minDataFrameSize:
		return bad("more frames than the stream holds")
	case maxFrame > size, size > 0 && (frames == 0 || maxFrame < (size-1)/frames+1):
		return bad("impossible largest frame")
	case (n == 0) != (size == 0), n > frames:
		return bad("impossible seek point count")
	case n > int64(len(d.B))/2: // each takes at least 2 bytes
		return bad("truncated")
	}
	spans := make([]span, n)
	var out, in int64
	for i := range spans {
		do, di := d.Int(), d.Int()
		if d.Err != nil {
			return bad(d.Err.Error())
		}
		if i == 0 && do != 0 {
			return bad("no seek point at the start")
		}
		if i > 0 && (do == 0 || di < minDataFrameSize) {
			return bad(fmt.Sprintf("seek point %d does not follow the one before", i))
		}
		if do >= size-out || di > csize-minDataFrameSize-in {
			return bad(fmt.Sprintf("seek point %d past the end of the stream", i))
		}
		out += do
		in += di
		spans[i] = span{out: out, in: in}
	}
	if len(d.B) != 0 {
		return bad("trailing bytes")
	}
	*ix = Index{size: size, csize: csize, frames: frames, maxFrame: maxFrame, spans: spans}
	return nil
}
