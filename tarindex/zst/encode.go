package zst

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
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

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrBadIndex reports an encoded index that is corrupt, truncated, or of
// another version: rebuild it.
var ErrBadIndex = errors.New("invalid zstd frame index")

// AppendBinary appends the encoding of ix to b (encoding.BinaryAppender).
func (ix *Index) AppendBinary(b []byte) ([]byte, error) {
	start := len(b)
	b = append(b, encMagic...)
	b = append(b, encVersion)
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
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli)), nil
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
	if len(data) < len(encMagic)+1+4 || string(data[:len(encMagic)]) != encMagic {
		return bad("not an index")
	}
	if data[len(encMagic)] != encVersion {
		return bad(fmt.Sprintf("version %d, not %d", data[len(encMagic)], encVersion))
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[len(body):]) {
		return bad("checksum mismatch")
	}
	d := decoder{b: body[len(encMagic)+1:]}
	size, csize, frames, maxFrame := d.int(), d.int(), d.int(), d.int()
	n := d.int()
	if d.err != nil {
		return bad(d.err.Error())
	}
	switch {
	case frames > csize/minDataFrameSize:
		return bad("more frames than the stream holds")
	case maxFrame > size, size > 0 && (frames == 0 || maxFrame < (size-1)/frames+1):
		return bad("impossible largest frame")
	case (n == 0) != (size == 0), n > frames:
		return bad("impossible seek point count")
	case n > int64(len(d.b))/2: // each takes at least 2 bytes
		return bad("truncated")
	}
	spans := make([]span, n)
	var out, in int64
	for i := range spans {
		do, di := d.int(), d.int()
		if d.err != nil {
			return bad(d.err.Error())
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
	if len(d.b) != 0 {
		return bad("trailing bytes")
	}
	*ix = Index{size: size, csize: csize, frames: frames, maxFrame: maxFrame, spans: spans}
	return nil
}

// decoder reads uvarints that must fit an int64.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) int() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || v > math.MaxInt64 {
		d.err = errors.New("truncated or malformed number")
		return 0
	}
	d.b = d.b[n:]
	return int64(v)
}
