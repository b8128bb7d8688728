// Package seekfmt is what the seek-point indexes of tarindex/gz and
// tarindex/zst have in common: the envelope of their binary encoding (a
// magic, a version, uvarints, a CRC-32C trailer) and the lookup of the
// span an offset falls in among increasing entry points.
package seekfmt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"sort"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Begin appends the header of an encoding: magic, then version.
func Begin(b []byte, magic string, version byte) []byte {
	return append(append(b, magic...), version)
}

// Seal appends the CRC-32C of b[start:], the encoding begun at start.
func Seal(b []byte, start int) []byte {
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// Open checks an encoding's magic, version and checksum and returns a
// Decoder of what lies between the header and the checksum. Its errors
// say what is wrong; the caller wraps them in its own ErrBadIndex.
func Open(data []byte, magic string, version byte) (*Decoder, error) {
	if len(data) < len(magic)+1+4 || string(data[:len(magic)]) != magic {
		return nil, errors.New("not an index")
	}
	if data[len(magic)] != version {
		return nil, fmt.Errorf("version %d, not %d", data[len(magic)], version)
	}
	body := data[:len(data)-4]
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(data[len(body):]) {
		return nil, errors.New("checksum mismatch")
	}
	return &Decoder{B: body[len(magic)+1:]}, nil
}

// Decoder reads uvarints that must fit an int64, and bytes; the first
// failure sticks in Err and later reads return 0.
type Decoder struct {
	B   []byte
	Err error
}

// Int reads a uvarint.
func (d *Decoder) Int() int64 {
	if d.Err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.B)
	if n <= 0 || v > math.MaxInt64 {
		d.Err = errors.New("truncated or malformed number")
		return 0
	}
	d.B = d.B[n:]
	return int64(v)
}

// Byte reads one byte.
func (d *Decoder) Byte() byte {
	if d.Err != nil {
		return 0
	}
	if len(d.B) == 0 {
		d.Err = errors.New("truncated")
		return 0
	}
	c := d.B[0]
	d.B = d.B[1:]
	return c
}

// Find is the index of the last of n increasing offsets (at(i)) at or
// before off, or 0 when none is.
func Find(n int, at func(i int) int64, off int64) int {
	i := sort.Search(n, func(i int) bool { return at(i) > off })
	return max(i-1, 0)
}

// Span is the range [start, end) from the entry point at or before off to
// the next one (or size, the end of the stream); ok is false when off is
// outside the stream or there is no entry point.
func Span(n int, at func(i int) int64, size, off int64) (start, end int64, ok bool) {
	if off < 0 || off >= size || n == 0 {
		return 0, 0, false
	}
	i := Find(n, at, off)
	end = size
	if i+1 < n {
		end = at(i + 1)
	}
	return at(i), end, true
}
