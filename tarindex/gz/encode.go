package gz

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/imgmount/imgmount/tarindex/internal/seekfmt"
)

// Encoded index (version 1):
//
//	magic    "gzix"
//	version  u8 (1)
//	header   uvarint uncompressed size, compressed size, members,
//	         checkpoints
//	points   per checkpoint: uvarint uncompressed offset minus the
//	         previous one's, uvarint bit offset minus the previous one's,
//	         uvarint window length, u8 flags (1: window stored raw, else
//	         deflated), uvarint stored window length, the stored window
//	trailer  u32 CRC-32C (little endian) of everything before it
//
// Windows are kept deflated in memory too: an Index costs what its
// encoding does.
const (
	encMagic   = "gzix"
	encVersion = 1
	flagRaw    = 1
)

// ErrBadIndex reports an encoded index that is corrupt, truncated, or of
// another version: rebuild it.
var ErrBadIndex = errors.New("invalid gzip checkpoint index")

// AppendBinary appends the encoding of ix to b (encoding.BinaryAppender).
func (ix *Index) AppendBinary(b []byte) ([]byte, error) {
	start := len(b)
	b = seekfmt.Begin(b, encMagic, encVersion)
	b = binary.AppendUvarint(b, uint64(ix.size))
	b = binary.AppendUvarint(b, uint64(ix.csize))
	b = binary.AppendUvarint(b, uint64(ix.members))
	b = binary.AppendUvarint(b, uint64(len(ix.points)))
	var out, bit int64
	for _, p := range ix.points {
		b = binary.AppendUvarint(b, uint64(p.out-out))
		b = binary.AppendUvarint(b, uint64(p.bit-bit))
		out, bit = p.out, p.bit
		b = binary.AppendUvarint(b, uint64(p.wlen))
		var flags byte
		if p.raw {
			flags |= flagRaw
		}
		b = append(b, flags)
		b = binary.AppendUvarint(b, uint64(len(p.win)))
		b = append(b, p.win...)
	}
	return seekfmt.Seal(b, start), nil
}

// MarshalBinary encodes ix (encoding.BinaryMarshaler).
func (ix *Index) MarshalBinary() ([]byte, error) {
	return ix.AppendBinary(make([]byte, 0, 64+ix.WindowBytes()+int64(len(ix.points))*16))
}

// UnmarshalBinary decodes an index MarshalBinary encoded, refusing (with
// an error wrapping ErrBadIndex) any that is corrupt, truncated or
// inconsistent. It does not keep data.
func (ix *Index) UnmarshalBinary(data []byte) error {
	bad := func(what string) error { return fmt.Errorf("%w: %s", ErrBadIndex, what) }
	d, err := seekfmt.Open(data, encMagic, encVersion)
	if err != nil {
		return bad(err.Error())
	}
	size, csize, members := d.Int(), d.Int(), d.Int()
	n := d.Int()
	if d.Err != nil {
		return bad(d.Err.Error())
	}
	// Every checkpoint takes at least 5 bytes.
	if n < 1 || n > int64(len(d.B))/5 {
		return bad("impossible checkpoint count")
	}
	if members < 1 || members > csize/18 || csize > math.MaxInt64/8 {
		return bad("impossible sizes")
	}
	points := make([]point, n)
	blob := make([]byte, 0, len(d.B)) // the windows, in one allocation
	var out, bit int64
	for i := range points {
		do, db, wlen := d.Int(), d.Int(), d.Int()
		flags := d.Byte()
		sl := d.Int()
		if d.Err != nil {
			return bad(d.Err.Error())
		}
		if i > 0 && (do == 0 || db == 0) {
			return bad(fmt.Sprintf("checkpoint %d does not follow the one before", i))
		}
		if do > size-out || db > csize*8-bit {
			return bad(fmt.Sprintf("checkpoint %d past the end of the stream", i))
		}
		out += do
		bit += db
		raw := flags&flagRaw != 0
		switch {
		case flags&^flagRaw != 0:
			return bad(fmt.Sprintf("checkpoint %d: unknown flags", i))
		case wlen > winSize || wlen > out:
			return bad(fmt.Sprintf("checkpoint %d: window of %d bytes", i, wlen))
		case raw && sl != wlen, !raw && (sl == 0 || sl >= wlen):
			return bad(fmt.Sprintf("checkpoint %d: window stored in %d bytes", i, sl))
		case sl > int64(len(d.B)):
			return bad("truncated")
		}
		if i == 0 && out != 0 {
			return bad("no checkpoint at the start")
		}
		w := d.B[:sl]
		d.B = d.B[sl:]
		blob = append(blob, w...)
		points[i] = point{out: out, bit: bit, wlen: int(wlen), raw: raw, win: blob[len(blob)-len(w) : len(blob) : len(blob)]}
	}
	if len(d.B) != 0 {
		return bad("trailing bytes")
	}
	*ix = Index{size: size, csize: csize, members: members, points: points}
	return nil
}
