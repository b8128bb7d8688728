package gz

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
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

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrBadIndex reports an encoded index that is corrupt, truncated, or of
// another version: rebuild it.
var ErrBadIndex = errors.New("invalid gzip checkpoint index")

// AppendBinary appends the encoding of ix to b (encoding.BinaryAppender).
func (ix *Index) AppendBinary(b []byte) ([]byte, error) {
	start := len(b)
	b = append(b, encMagic...)
	b = append(b, encVersion)
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
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli)), nil
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
	size, csize, members := d.int(), d.int(), d.int()
	n := d.int()
	if d.err != nil {
		return bad(d.err.Error())
	}
	// Every checkpoint takes at least 5 bytes.
	if n < 1 || n > int64(len(d.b))/5 {
		return bad("impossible checkpoint count")
	}
	if members < 1 || members > csize/18 || csize > math.MaxInt64/8 {
		return bad("impossible sizes")
	}
	points := make([]point, n)
	blob := make([]byte, 0, len(d.b)) // the windows, in one allocation
	var out, bit int64
	for i := range points {
		do, db, wlen := d.int(), d.int(), d.int()
		flags := d.byte()
		sl := d.int()
		if d.err != nil {
			return bad(d.err.Error())
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
		case sl > int64(len(d.b)):
			return bad("truncated")
		}
		if i == 0 && out != 0 {
			return bad("no checkpoint at the start")
		}
		w := d.b[:sl]
		d.b = d.b[sl:]
		blob = append(blob, w...)
		points[i] = point{out: out, bit: bit, wlen: int(wlen), raw: raw, win: blob[len(blob)-len(w) : len(blob) : len(blob)]}
	}
	if len(d.b) != 0 {
		return bad("trailing bytes")
	}
	*ix = Index{size: size, csize: csize, members: members, points: points}
	return nil
}

// decoder reads uvarints that must fit an int64, and bytes.
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

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = errors.New("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}
