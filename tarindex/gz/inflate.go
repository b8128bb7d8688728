package gz

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
)

const (
	winSize  = 32 << 10 // the DEFLATE window
	maxMatch = 258
	// chunkSize is how much output one step produces at most before the
	// history slides down: large enough that sliding (a 32 KiB copy) is
	// cheap next to it, small enough that the buffer stays in L2.
	chunkSize = 128 << 10
	// inBufSize is the compressed input read at a time.
	inBufSize = 64 << 10
	// inPad zero bytes follow the last byte of input, so that the bit
	// reader can always load 8 bytes; reading into them is an error
	// (io.ErrUnexpectedEOF), found at the end of the block at the latest.
	inPad = 16
	// inKeep bytes before the read position survive a refill of the input
	// buffer, so that the bit buffer's whole bytes can be given back for
	// a stored block.
	inKeep = 8
)

// CorruptError reports invalid compressed data; Offset is the byte of the
// compressed stream where it was found.
type CorruptError struct {
	Offset int64
	Msg    string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("corrupt gzip data at compressed byte %d: %s", e.Offset, e.Msg)
}

// ErrChecksum reports a gzip member whose trailer (CRC-32 or length) does
// not match its data.
var ErrChecksum = errors.New("gzip checksum mismatch")

// ErrHeader reports a gzip member header that is not one.
var ErrHeader = errors.New("invalid gzip header")

type state uint8

const (
	stHeader  state = iota // a gzip member header (gzip mode)
	stBlock                // a block header
	stStored               // inside a stored block
	stHuffman              // inside a Huffman block
	stTrailer              // after the last block of a member
	stDone                 // the end of the stream
)

type status uint8

const (
	// More output may follow: call step again.
	stepMore status = iota
	// At a block boundary where a checkpoint is due (out >= nextPoint):
	// the next block header starts at bitPos(), and window() holds the
	// history a resumed decoder needs.
	stepBoundary
	// The stream has ended (and, in gzip mode, its trailers matched).
	stepEnd
)

// inflater is a resumable DEFLATE decoder, optionally inside gzip framing.
// It pulls input from an io.ReaderAt and produces output into a history
// buffer, one step at a time; after each step the new output is
// hist[rp:wp], valid until the next step.
type inflater struct {
	// Input: in is buf[:n], in[0] is byte inOff of the stream; once the
	// stream's last byte is in, eof is set, inEnd is its index and inPad
	// zeros follow it in in.
	src    io.ReaderAt
	srcEnd int64
	buf    []byte
	in     []byte
	inOff  int64
	ip     int
	inEnd  int
	eof    bool
	bits   uint64 // bit buffer, next bit in bit 0
	nb     uint   // valid bits in bits

	// Output: hist[lo:wp] is this member's output still held (a distance
	// may reach back to lo at most); hist[0] is byte base of the output.
	hist []byte
	wp   int
	rp   int
	lo   int
	base int64
	wlim int // a Huffman step stops once wp reaches it

	state  state
	final  bool // the current block is the member's last
	stored int  // bytes left in the current stored block
	lit    *[litTableSize]uint32
	dist   *[distTableSize]uint32

	gzip      bool // gzip framing around the DEFLATE stream(s)
	verify    bool // check each member's CRC-32 and length
	crc       uint32
	crcFrom   int   // hist[crcFrom:wp] is not yet in crc
	memberAt  int64 // output offset where the current member started
	members   int64 // members begun
	nextPoint int64 // report a block boundary once output reaches it

	dynLit  [litTableSize]uint32
	dynDist [distTableSize]uint32
	cl      [clTableSize]uint32
	lens    [numLitLen + numDist]uint8
}

func newInflater() *inflater {
	return &inflater{
		buf:  make([]byte, inBufSize+inPad),
		hist: make([]byte, winSize+chunkSize+maxMatch+16),
		wlim: winSize + chunkSize,
	}
}

// reset prepares f to decode src[0:size) from its start. With gzip unset
// it is a raw DEFLATE stream.
func (f *inflater) reset(src io.ReaderAt, size int64, gzip, verify bool) error {
	f.src, f.srcEnd = src, size
	f.gzip, f.verify = gzip, verify
	f.wp, f.rp, f.lo, f.base = 0, 0, 0, 0
	f.final, f.stored = false, 0
	f.crc, f.crcFrom = 0, 0
	f.memberAt, f.members = 0, 0
	f.nextPoint = math.MaxInt64
	if gzip {
		f.state = stHeader
	} else {
		f.state = stBlock
		f.members = 1
	}
	return f.seek(0)
}

// resume prepares f to decode src[0:size) from a block header at bit
// offset bitPos, where the output offset is out and hist[0:wp] already
// holds the window (the member's output before it, up to 32 KiB). It
// does not check the members' trailers: their CRC covers output before
// the checkpoint.
func (f *inflater) resume(src io.ReaderAt, size int64, gzip bool, bitPos, out int64) error {
	f.src, f.srcEnd = src, size
	f.gzip, f.verify = gzip, false
	f.rp, f.lo, f.base = f.wp, 0, out-int64(f.wp)
	f.final, f.stored = false, 0
	f.state = stBlock
	f.nextPoint = math.MaxInt64
	if bitPos < 0 || bitPos > size*8 {
		return &CorruptError{bitPos / 8, "checkpoint past the end of the stream"}
	}
	if err := f.seek(bitPos / 8); err != nil {
		return err
	}
	if n := uint(bitPos % 8); n > 0 {
		if err := f.need(n); err != nil {
			return err
		}
		f.bits >>= n
		f.nb -= n
	}
	return nil
}

// seek empties the bit buffer and reads input from byte off.
func (f *inflater) seek(off int64) error {
	f.inOff, f.ip, f.in = off, 0, f.buf[:0]
	f.eof = false
	f.bits, f.nb = 0, 0
	return f.fetch()
}

// fetch reads more input, keeping the unread bytes and inKeep bytes before.
func (f *inflater) fetch() error {
	if f.eof {
		return nil
	}
	keep := min(f.ip, inKeep)
	rem := copy(f.buf, f.in[f.ip-keep:])
	f.inOff += int64(f.ip - keep)
	f.ip = keep
	at := f.inOff + int64(rem)
	want := int64(inBufSize - rem)
	if left := f.srcEnd - at; left < want {
		want = max(left, 0)
	}
	if want > 0 {
		n, err := f.src.ReadAt(f.buf[rem:rem+int(want)], at)
		if int64(n) < want {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("reading compressed byte %d: %w", at+int64(n), err)
		}
	}
	end := rem + int(want)
	if at+want >= f.srcEnd {
		f.eof = true
		clear(f.buf[end : end+inPad])
		f.in = f.buf[:end+inPad]
	} else {
		f.in = f.buf[:end]
	}
	f.inEnd = end
	return nil
}

// bitPos is the bit offset in the stream of the next unread bit.
func (f *inflater) bitPos() int64 {
	return (f.inOff+int64(f.ip))*8 - int64(f.nb)
}

// overrun tells whether decoding has read past the end of the input.
func (f *inflater) overrun() bool {
	return f.bitPos() > f.srcEnd*8
}

func (f *inflater) corrupt(msg string) error {
	if f.overrun() {
		return io.ErrUnexpectedEOF
	}
	return &CorruptError{f.bitPos() / 8, msg}
}

// need makes sure the bit buffer holds at least n (<= 56) bits.
func (f *inflater) need(n uint) error {
	if f.nb >= n {
		return nil
	}
	if f.ip+8 > len(f.in) {
		if err := f.fetch(); err != nil {
			return err
		}
		if f.ip+8 > len(f.in) {
			return io.ErrUnexpectedEOF // past the padding
		}
	}
	f.bits |= binary.LittleEndian.Uint64(f.in[f.ip:]) << f.nb
	f.ip += int((63 - f.nb) >> 3)
	f.nb |= 56
	return nil
}

// getBits reads n (<= 32) bits.
func (f *inflater) getBits(n uint) (uint32, error) {
	if err := f.need(n); err != nil {
		return 0, err
	}
	v := uint32(f.bits & (1<<n - 1))
	f.bits >>= n
	f.nb -= n
	return v, nil
}

// alignByte drops the bits up to the next byte boundary.
func (f *inflater) alignByte() {
	n := f.nb & 7
	f.bits >>= n
	f.nb -= n
}

// unreadBytes gives the bit buffer's whole bytes back to the input (after
// alignByte), for reading bytes directly.
func (f *inflater) unreadBytes() {
	f.ip -= int(f.nb >> 3)
	f.bits, f.nb = 0, 0
}

// window is the history a decoder resumed at this point needs.
func (f *inflater) window() []byte {
	return f.hist[max(f.lo, f.wp-winSize):f.wp]
}

// out is the output offset of the next byte produced.
func (f *inflater) out() int64 {
	return f.base + int64(f.wp)
}

// slide moves the last window of history to the front of the buffer.
func (f *inflater) slide() {
	f.updateCRC()
	shift := f.wp - winSize
	copy(f.hist, f.hist[shift:f.wp])
	f.wp -= shift
	f.rp = f.wp
	f.crcFrom = f.wp
	f.lo = max(f.lo-shift, 0)
	f.base += int64(shift)
}

func (f *inflater) updateCRC() {
	if f.verify {
		f.crc = crc32.Update(f.crc, crc32.IEEETable, f.hist[f.crcFrom:f.wp])
	}
	f.crcFrom = f.wp
}

// step decodes until the output buffer is full, a checkpoint is due, or
// the stream ends. Its output is hist[rp:wp].
func (f *inflater) step() (status, error) {
	if f.wp >= f.wlim {
		f.slide()
	}
	f.rp = f.wp
	for {
		switch f.state {
		case stHeader:
			if err := f.readHeader(); err != nil {
				return stepMore, err
			}
			f.updateCRC()
			f.crc = 0
			f.lo = f.wp
			f.memberAt = f.out()
			f.members++
			f.state = stBlock

		case stBlock:
			if f.out() >= f.nextPoint {
				return stepBoundary, nil
			}
			h, err := f.getBits(3)
			if err != nil {
				return stepMore, err
			}
			f.final = h&1 != 0
			switch h >> 1 {
			case 0:
				f.alignByte()
				v, err := f.getBits(32)
				if err != nil {
					return stepMore, err
				}
				if uint16(v) != ^uint16(v>>16) {
					return stepMore, f.corrupt("stored block length does not match its complement")
				}
				f.unreadBytes()
				if f.ip > f.inEnd {
					return stepMore, io.ErrUnexpectedEOF
				}
				f.stored = int(v & 0xffff)
				f.state = stStored
			case 1:
				f.lit, f.dist = &fixedLit, &fixedDist
				f.state = stHuffman
			case 2:
				if err := f.readDynamic(); err != nil {
					return stepMore, err
				}
				f.lit, f.dist = &f.dynLit, &f.dynDist
				f.state = stHuffman
			default:
				return stepMore, f.corrupt("invalid block type")
			}

		case stStored:
			for f.stored > 0 {
				if f.wp >= f.wlim {
					return stepMore, nil
				}
				if f.ip >= f.inEnd {
					if f.eof {
						return stepMore, io.ErrUnexpectedEOF
					}
					if err := f.fetch(); err != nil {
						return stepMore, err
					}
					continue
				}
				n := copy(f.hist[f.wp:f.wlim], f.in[f.ip:f.inEnd][:min(f.stored, f.inEnd-f.ip)])
				f.wp += n
				f.ip += n
				f.stored -= n
			}
			f.endBlock()

		case stHuffman:
			done, err := f.huffman()
			if err != nil {
				return stepMore, err
			}
			if !done {
				return stepMore, nil
			}
			if f.overrun() {
				return stepMore, io.ErrUnexpectedEOF
			}
			f.endBlock()

		case stTrailer:
			if err := f.readTrailer(); err != nil {
				return stepMore, err
			}
			f.updateCRC()
			if f.bitPos() == f.srcEnd*8 {
				f.state = stDone
			} else {
				f.state = stHeader
			}

		case stDone:
			f.updateCRC()
			return stepEnd, nil
		}
	}
}

func (f *inflater) endBlock() {
	switch {
	case !f.final:
		f.state = stBlock
	case f.gzip:
		f.state = stTrailer
	default:
		f.state = stDone
	}
}

// readDynamic reads the code of a dynamic Huffman block (RFC 1951 3.2.7)
// into dynLit and dynDist, with compress/flate's checks.
func (f *inflater) readDynamic() error {
	v, err := f.getBits(14)
	if err != nil {
		return err
	}
	nlit := int(v&0x1f) + 257
	ndist := int(v>>5&0x1f) + 1
	nclen := int(v>>10) + 4
	if nlit > 286 {
		return f.corrupt("too many length codes")
	}
	if ndist > 30 {
		return f.corrupt("too many distance codes")
	}
	var cll [19]uint8
	for i := range nclen {
		v, err := f.getBits(3)
		if err != nil {
			return err
		}
		cll[clOrder[i]] = uint8(v)
	}
	if !buildTable(f.cl[:], clRootBits, cll[:], clTemplate[:]) {
		return f.corrupt("invalid code-length code")
	}
	n := nlit + ndist
	lens := f.lens[:n]
	for i := 0; i < n; {
		if err := f.need(7 + 7); err != nil {
			return err
		}
		e := f.cl[f.bits&(clTableSize-1)]
		if e&entLiteral == 0 {
			return f.corrupt("invalid code-length symbol")
		}
		l := uint(e & 15)
		f.bits >>= l
		f.nb -= l
		sym := uint8(e >> 16)
		if sym < 16 {
			lens[i] = sym
			i++
			continue
		}
		var rep int
		var val uint8
		switch sym {
		case 16:
			if i == 0 {
				return f.corrupt("repeated code length with no previous one")
			}
			val = lens[i-1]
			rep = 3 + int(f.bits&3)
			f.bits >>= 2
			f.nb -= 2
		case 17:
			rep = 3 + int(f.bits&7)
			f.bits >>= 3
			f.nb -= 3
		default:
			rep = 11 + int(f.bits&0x7f)
			f.bits >>= 7
			f.nb -= 7
		}
		if i+rep > n {
			return f.corrupt("code lengths repeat past their end")
		}
		for range rep {
			lens[i] = val
			i++
		}
	}
	if !buildTable(f.dynLit[:], litRootBits, lens[:nlit], litTemplate[:]) {
		return f.corrupt("invalid literal/length code")
	}
	if !buildTable(f.dynDist[:], distRootBits, lens[nlit:], distTemplate[:]) {
		return f.corrupt("invalid distance code")
	}
	return nil
}

// huffman decodes the current Huffman block until it ends (true) or the
// output buffer fills (false).
func (f *inflater) huffman() (bool, error) {
	bits, nb := f.bits, f.nb
	in, ip := f.in, f.ip
	hist, wp := f.hist, f.wp
	lit, dist := f.lit, f.dist
	wlim, lo := f.wlim, f.lo
	inFast := len(in) - 8
	var err error
	done := false
	for wp < wlim {
		// 48 bits cover a length code and its extra bits (15+5) and a
		// distance code and its extra bits (15+13).
		if nb < 48 {
			if ip > inFast {
				f.bits, f.nb, f.ip = bits, nb, ip
				if err = f.need(48); err != nil {
					break
				}
				bits, nb, in, ip = f.bits, f.nb, f.in, f.ip
				inFast = len(in) - 8
			} else {
				bits |= binary.LittleEndian.Uint64(in[ip:]) << nb
				ip += int((63 - nb) >> 3)
				nb |= 56
			}
		}
		e := lit[bits&(1<<litRootBits-1)]
		if e&entSub != 0 {
			bits >>= litRootBits
			nb -= litRootBits
			e = lit[(e>>16+uint32(bits)&(1<<(e>>8&15)-1))&(litTableSize-1)]
		}
		n := uint(e & 15)
		bits >>= n
		nb -= n
		if e&entLiteral != 0 {
			hist[wp] = byte(e >> 16)
			wp++
			// Literals come in runs (most of text's output), and the
			// 48 bits the refill keeps leave 33 after this code: two
			// more literals found in the root table (10 bits at most
			// each) are taken without going round the loop and its
			// refill. wp may pass wlim by 2, into the room kept past
			// it for a match.
			e = lit[bits&(1<<litRootBits-1)]
			if e&entLiteral == 0 {
				continue
			}
			n = uint(e & 15)
			bits >>= n
			nb -= n
			hist[wp] = byte(e >> 16)
			wp++
			e = lit[bits&(1<<litRootBits-1)]
			if e&entLiteral == 0 {
				continue
			}
			n = uint(e & 15)
			bits >>= n
			nb -= n
			hist[wp] = byte(e >> 16)
			wp++
			continue
		}
		if e&entCopy == 0 {
			if e&entEOB != 0 {
				done = true
				break
			}
			f.bits, f.nb, f.ip = bits, nb, ip
			err = f.corrupt("invalid literal/length code")
			break
		}
		x := uint(e >> 8 & 15)
		length := int(e>>16) + int(bits&(1<<x-1))
		bits >>= x
		nb -= x

		d := dist[bits&(1<<distRootBits-1)]
		if d&entSub != 0 {
			bits >>= distRootBits
			nb -= distRootBits
			d = dist[(d>>16+uint32(bits)&(1<<(d>>8&15)-1))&(distTableSize-1)]
		}
		if d&entCopy == 0 {
			f.bits, f.nb, f.ip = bits, nb, ip
			err = f.corrupt("invalid distance code")
			break
		}
		n = uint(d & 15)
		bits >>= n
		nb -= n
		x = uint(d >> 8 & 15)
		dd := int(d>>16) + int(bits&(1<<x-1))
		bits >>= x
		nb -= x
		if dd > wp-lo {
			f.bits, f.nb, f.ip = bits, nb, ip
			err = f.corrupt("distance too far back")
			break
		}

		src := wp - dd
		switch {
		case dd >= 8:
			// 8 bytes at a time: a source 8 or more bytes back is
			// written before it is read. May write up to 7 bytes past
			// the match, into room kept for it.
			for i := 0; i < length; i += 8 {
				binary.LittleEndian.PutUint64(hist[wp+i:], binary.LittleEndian.Uint64(hist[src+i:]))
			}
		case dd == 1:
			v := uint64(hist[src]) * 0x0101010101010101
			for i := 0; i < length; i += 8 {
				binary.LittleEndian.PutUint64(hist[wp+i:], v)
			}
		default:
			for i := range length {
				hist[wp+i] = hist[src+i]
			}
		}
		wp += length
	}
	if err == nil {
		f.bits, f.nb, f.ip = bits, nb, ip
	}
	f.wp = wp
	return done, err
}

// readByte reads one byte at a byte boundary.
func (f *inflater) readByte() (byte, error) {
	v, err := f.getBits(8)
	return byte(v), err
}

// readHeader reads a gzip member header (RFC 1952 2.3). Unlike
// compress/gzip it takes names and comments of any length.
func (f *inflater) readHeader() error {
	const (
		fhcrc    = 1 << 1
		fextra   = 1 << 2
		fname    = 1 << 3
		fcomment = 1 << 4
	)
	var h [10]byte
	for i := range h {
		b, err := f.readByte()
		if err != nil {
			return err
		}
		h[i] = b
	}
	if f.overrun() {
		return io.ErrUnexpectedEOF
	}
	if h[0] != 0x1f || h[1] != 0x8b || h[2] != 8 {
		return fmt.Errorf("%w at compressed byte %d", ErrHeader, f.bitPos()/8-10)
	}
	flg := h[3]
	hcrc := crc32.ChecksumIEEE(h[:])
	if flg&fextra != 0 {
		var x [2]byte
		for i := range x {
			b, err := f.readByte()
			if err != nil {
				return err
			}
			x[i] = b
		}
		hcrc = crc32.Update(hcrc, crc32.IEEETable, x[:])
		for range binary.LittleEndian.Uint16(x[:]) {
			b, err := f.readByte()
			if err != nil {
				return err
			}
			hcrc = crc32.Update(hcrc, crc32.IEEETable, []byte{b})
		}
	}
	for _, fl := range []byte{fname, fcomment} {
		if flg&fl == 0 {
			continue
		}
		for {
			b, err := f.readByte()
			if err != nil {
				return err
			}
			hcrc = crc32.Update(hcrc, crc32.IEEETable, []byte{b})
			if b == 0 {
				break
			}
			if f.overrun() {
				return io.ErrUnexpectedEOF
			}
		}
	}
	if flg&fhcrc != 0 {
		v, err := f.getBits(16)
		if err != nil {
			return err
		}
		if uint16(v) != uint16(hcrc) {
			return fmt.Errorf("%w: header CRC mismatch at compressed byte %d", ErrHeader, f.bitPos()/8-2)
		}
	}
	if f.overrun() {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// readTrailer reads a member's CRC-32 and length and, when verifying,
// checks them.
func (f *inflater) readTrailer() error {
	f.alignByte()
	v1, err := f.getBits(32)
	if err != nil {
		return err
	}
	v2, err := f.getBits(32)
	if err != nil {
		return err
	}
	if f.overrun() {
		return io.ErrUnexpectedEOF
	}
	if f.verify {
		f.updateCRC()
		if v1 != f.crc || v2 != uint32(f.out()-f.memberAt) {
			return fmt.Errorf("%w: member %d, ending at compressed byte %d", ErrChecksum, f.members, f.bitPos()/8)
		}
	}
	return nil
}
