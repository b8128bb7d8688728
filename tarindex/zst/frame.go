package zst

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Frame layout (RFC 8878, section 3.1).
const (
	frameMagic        = 0xFD2FB528
	skippableMagic    = 0x184D2A50 // the low 4 bits are free
	skippableMask     = 0xFFFFFFF0
	maxBlockSize      = 128 << 10 // Block_Maximum_Size's ceiling
	blockHeaderSize   = 3
	checksumSize      = 4
	minDataFrameSize  = 4 + 1 + 1 + blockHeaderSize // magic, descriptor, window or 1-byte size, an empty last block
	minSkippableFrame = 8                           // magic, length
	unknownSize       = -1
)

// frameInfo is where one frame lies in the compressed stream, found by
// walking its header and block headers without decoding anything.
type frameInfo struct {
	start, end int64 // compressed [start, end)
	skippable  bool
	size       int64 // declared Frame_Content_Size, or unknownSize
}

// cursor reads the small headers of a compressed stream through a buffer,
// so that walking frames of tiny blocks costs few ReadAt calls.
type cursor struct {
	r    io.ReaderAt
	size int64
	buf  []byte
	boff int64 // stream offset of buf[0]
	blen int   // valid bytes in buf
}

const cursorBuffer = 4 << 10

func newCursor(r io.ReaderAt, size int64) *cursor {
	return &cursor{r: r, size: size, buf: make([]byte, cursorBuffer)}
}

// bytes returns the n (at most cursorBuffer) bytes at off, valid until
// the next call, or io.ErrUnexpectedEOF when the stream ends before them.
func (c *cursor) bytes(off int64, n int) ([]byte, error) {
	if off < 0 || off > c.size || int64(n) > c.size-off {
		return nil, io.ErrUnexpectedEOF
	}
	if off >= c.boff && off+int64(n) <= c.boff+int64(c.blen) {
		i := int(off - c.boff)
		return c.buf[i : i+n], nil
	}
	want := int(min(int64(len(c.buf)), c.size-off))
	got, err := c.r.ReadAt(c.buf[:want], off)
	c.boff, c.blen = off, got
	if got < n {
		c.blen = 0
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return c.buf[:n], nil
}

// walkError describes a stream that cannot be walked, at offset off.
func walkError(off int64, format string, args ...any) error {
	return fmt.Errorf("zstd stream at compressed offset %d: %s", off, fmt.Sprintf(format, args...))
}

// frame walks the frame at off: its header, each block header, and the
// checksum, up to where the next frame begins. It checks the framing
// only (magic numbers, reserved bits, block types and sizes, that the
// frame fits in the stream); the decoder checks the rest.
func (c *cursor) frame(off int64) (frameInfo, error) {
	fi := frameInfo{start: off, size: unknownSize}
	b, err := c.bytes(off, 4)
	if err != nil {
		return fi, walkError(off, "truncated frame magic (%v)", err)
	}
	magic := binary.LittleEndian.Uint32(b)
	if magic&skippableMask == skippableMagic {
		b, err := c.bytes(off+4, 4)
		if err != nil {
			return fi, walkError(off, "truncated skippable frame header (%v)", err)
		}
		n := int64(binary.LittleEndian.Uint32(b))
		if n > c.size-off-8 {
			return fi, walkError(off, "skippable frame of %d bytes past the end of the stream", n)
		}
		fi.skippable = true
		fi.end = off + 8 + n
		return fi, nil
	}
	if magic != frameMagic {
		return fi, walkError(off, "not a zstd frame (magic %#08x)", magic)
	}
	b, err = c.bytes(off+4, 1)
	if err != nil {
		return fi, walkError(off, "truncated frame header (%v)", err)
	}
	fhd := b[0]
	if fhd&0x08 != 0 {
		return fi, walkError(off+4, "reserved bit set in the frame header descriptor")
	}
	single := fhd&0x20 != 0
	hasChecksum := fhd&0x04 != 0
	didLen := [4]int{0, 1, 2, 4}[fhd&3]
	fcsLen := 0
	switch flag := fhd >> 6; {
	case flag != 0:
		fcsLen = 1 << flag
	case single:
		fcsLen = 1
	}
	hlen := 1 + didLen + fcsLen
	if !single {
		hlen++ // Window_Descriptor
	}
	h, err := c.bytes(off+4, hlen)
	if err != nil {
		return fi, walkError(off, "truncated frame header (%v)", err)
	}
	f := h[hlen-fcsLen:]
	switch fcsLen {
	case 1:
		fi.size = int64(f[0])
	case 2:
		fi.size = int64(binary.LittleEndian.Uint16(f)) + 256
	case 4:
		fi.size = int64(binary.LittleEndian.Uint32(f))
	case 8:
		v := binary.LittleEndian.Uint64(f)
		if v > 1<<62 {
			return fi, walkError(off, "frame content size %d", v)
		}
		fi.size = int64(v)
	}
	pos := off + 4 + int64(hlen)
	for {
		b, err := c.bytes(pos, blockHeaderSize)
		if err != nil {
			return fi, walkError(pos, "truncated block header in the frame at %d (%v)", off, err)
		}
		bh := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16
		last := bh&1 != 0
		typ := (bh >> 1) & 3
		n := int64(bh >> 3)
		switch {
		case typ == 3:
			return fi, walkError(pos, "reserved block type in the frame at %d", off)
		case n > maxBlockSize:
			return fi, walkError(pos, "block of %d bytes in the frame at %d", n, off)
		case typ == 1: // RLE: one byte stored, repeated n times
			n = 1
		}
		pos += blockHeaderSize
		if n > c.size-pos {
			return fi, walkError(pos, "truncated block in the frame at %d", off)
		}
		pos += n
		if last {
			break
		}
	}
	if hasChecksum {
		if checksumSize > c.size-pos {
			return fi, walkError(pos, "truncated checksum of the frame at %d", off)
		}
		pos += checksumSize
	}
	fi.end = pos
	return fi, nil
}

// CountFrames counts the data frames of the zstd stream r[0:size) by
// walking frame and block headers, decoding nothing: a caller tells a
// stream that can be entered mid-way (several frames) from one that
// cannot (one frame: most zstd encoders' output) before paying for a pass.
func CountFrames(r io.ReaderAt, size int64) (int, error) {
	c := newCursor(r, size)
	n := 0
	for off := int64(0); off < size; {
		fr, err := c.frame(off)
		if err != nil {
			return n, err
		}
		if !fr.skippable {
			n++
		}
		off = fr.end
	}
	return n, nil
}
