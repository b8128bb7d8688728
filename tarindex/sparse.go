package tarindex

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Sparse members.
//
// archive/tar parses every GNU sparse format but keeps the map to itself,
// and reading a member through it zero-fills the holes: a crafted 2 KiB
// archive can declare an exabyte of holes, so the map cannot be recovered by
// reading. Instead we parse the map ourselves from the bytes tar has already
// validated, and cross-check every format's layout against the positions tar
// reached (where the header sequence began, where the data begins): a
// disagreement is an error, never a guess.

const blockSize = 512

type sparseKind uint8

const (
	sparseNone   sparseKind = iota
	sparseOldGNU            // typeflag 'S': map in the header and extension blocks
	sparsePAX01             // PAX 0.0/0.1: map in the GNU.sparse.map record
	sparsePAX10             // PAX 1.0: map in text at the start of the data
)

// sparseKindOf mirrors archive/tar's own decision (readGNUSparsePAXHeaders),
// so that we treat as sparse exactly the members tar does.
func sparseKindOf(hdr *tar.Header) sparseKind {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return sparseOldGNU
	}
	major, minor := hdr.PAXRecords["GNU.sparse.major"], hdr.PAXRecords["GNU.sparse.minor"]
	switch {
	case major == "0" && (minor == "0" || minor == "1"):
		return sparsePAX01
	case major == "1" && minor == "0":
		return sparsePAX10
	case major != "" || minor != "":
		return sparseNone // an unknown version: tar reads the member as plain data
	case hdr.PAXRecords["GNU.sparse.map"] != "":
		return sparsePAX01 // 0.0 and 0.1 had no version records (tar turns 0.0 into a map)
	}
	return sparseNone
}

// sparseLoc says where a sparse member lies: section offsets (relative to
// base) of its first header block (meta headers included) and of its data.
type sparseLoc struct {
	r      io.ReaderAt
	base   int64
	size   int64
	hdrAt  int64
	dataAt int64
}

func (l sparseLoc) block(at int64) ([]byte, error) {
	b := make([]byte, blockSize)
	if at < 0 || at+blockSize > l.size {
		return nil, io.ErrUnexpectedEOF
	}
	if err := readFullAt(l.r, b, l.base+at); err != nil {
		return nil, err
	}
	return b, nil
}

// readFullAt fills b from r at off. A ReaderAt may report io.EOF along with
// a complete read at the end of its data; only a short read is an error.
func readFullAt(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// sparseEntry is a data run as the map states it: logical offset and length.
type sparseEntry struct{ off, n int64 }

// sparseMap returns the member's fragments, with Physical absolute in the
// source. The result is non-nil even for an all-hole file: a nil Sparse
// means "not sparse" to Entry.ReadAt and to callers.
func sparseMap(l sparseLoc, kind sparseKind, hdr *tar.Header) ([]Fragment, error) {
	var spd []sparseEntry
	var err error
	switch kind {
	case sparseOldGNU:
		spd, err = oldGNUMap(l)
	case sparsePAX01:
		spd, err = pax01Map(l, hdr.PAXRecords)
	case sparsePAX10:
		spd, err = pax10Map(l)
	}
	if err != nil {
		return nil, err
	}
	return fragments(spd, hdr.Size, l)
}

// fragments validates the map as archive/tar does (ordered, not
// overlapping, inside the logical size) and lays the runs out back to back
// from the start of the data, which is how every format stores them.
func fragments(spd []sparseEntry, size int64, l sparseLoc) ([]Fragment, error) {
	frags := make([]Fragment, 0, len(spd))
	var prevEnd int64
	phys := l.dataAt
	for _, s := range spd {
		if s.off < 0 || s.n < 0 || s.off > math.MaxInt64-s.n || s.off+s.n > size || s.off < prevEnd {
			return nil, fmt.Errorf("invalid map entry (offset %d, length %d, file size %d)", s.off, s.n, size)
		}
		prevEnd = s.off + s.n
		if s.n == 0 {
			continue // GNU tar ends maps with an empty run at the file's end
		}
		if phys > l.size-s.n {
			return nil, fmt.Errorf("data: %w", io.ErrUnexpectedEOF)
		}
		frags = append(frags, Fragment{Logical: s.off, Physical: l.base + phys, Length: s.n})
		phys += s.n
	}
	return frags, nil
}

// mainHeader walks the member's header blocks from the first one tar read,
// skipping the meta headers tar consumes itself (PAX 'x', GNU long name and
// long link), and returns the member's own header block and its position.
func mainHeader(l sparseLoc) (int64, []byte, error) {
	at := l.hdrAt
	for at >= 0 && at < l.dataAt {
		blk, err := l.block(at)
		if err != nil {
			return 0, nil, err
		}
		switch blk[156] {
		case tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
			n, err := parseNumeric(blk[124:136])
			if err != nil || n < 0 || n > l.size {
				return 0, nil, errors.New("bad meta header size")
			}
			at += blockSize + roundBlock(n)
		default:
			return at, blk, nil
		}
	}
	return 0, nil, errors.New("cannot locate the member's header")
}

func roundBlock(n int64) int64 { return (n + blockSize - 1) &^ (blockSize - 1) }

// oldGNUMap parses the map of a typeflag 'S' member: four entries in the
// header, then extension blocks of 21 entries while the "isextended" byte is
// set. The data must start right after the last extension block.
func oldGNUMap(l sparseLoc) ([]sparseEntry, error) {
	at, blk, err := mainHeader(l)
	if err != nil {
		return nil, err
	}
	const (
		entrySize  = 24
		hdrMapOff  = 386 // four entries, then isextended at 482
		hdrEntries = 4
		extEntries = 21 // then isextended at 504
	)
	var spd []sparseEntry
	area, count := blk[hdrMapOff:], hdrEntries
	for {
		for i := 0; i < count; i++ {
			ent := area[i*entrySize : (i+1)*entrySize]
			if ent[0] == 0 {
				break // same termination rule as GNU, BSD and Go tar
			}
			off, err1 := parseNumeric(ent[:12])
			n, err2 := parseNumeric(ent[12:])
			if err1 != nil || err2 != nil {
				return nil, errors.New("bad old GNU map entry")
			}
			spd = append(spd, sparseEntry{off, n})
		}
		at += blockSize
		if area[count*entrySize] == 0 {
			break
		}
		if at >= l.dataAt {
			return nil, errors.New("old GNU extension blocks run into the data")
		}
		if area, err = l.block(at); err != nil {
			return nil, err
		}
		count = extEntries
	}
	if at != l.dataAt {
		return nil, fmt.Errorf("old GNU map ends at %d but data starts at %d", at, l.dataAt)
	}
	return spd, nil
}

// pax01Map parses GNU.sparse.map ("off,len,off,len,..."), where archive/tar
// also puts the map of format 0.0. The data starts right after the header.
func pax01Map(l sparseLoc, rec map[string]string) ([]sparseEntry, error) {
	if at, _, err := mainHeader(l); err != nil {
		return nil, err
	} else if at+blockSize != l.dataAt {
		return nil, fmt.Errorf("PAX 0.x data should start at %d, not %d", at+blockSize, l.dataAt)
	}
	fields := strings.Split(rec["GNU.sparse.map"], ",")
	if len(fields) == 1 && fields[0] == "" {
		fields = nil
	}
	if len(fields)%2 != 0 {
		return nil, errors.New("odd number of GNU.sparse.map fields")
	}
	return parsePairs(fields)
}

// pax10Map parses the map stored as decimal lines (count, then offset and
// length pairs) in whole blocks at the start of the data section; those
// blocks lie between the member's header and the position tar reached.
func pax10Map(l sparseLoc) ([]sparseEntry, error) {
	at, _, err := mainHeader(l)
	if err != nil {
		return nil, err
	}
	start := at + blockSize
	n := l.dataAt - start
	if n <= 0 || n%blockSize != 0 || n > 1<<20+blockSize {
		return nil, fmt.Errorf("PAX 1.0 map region of %d bytes", n)
	}
	text := make([]byte, n)
	if err := readFullAt(l.r, text, l.base+start); err != nil {
		return nil, err
	}
	// Go reads map blocks only until it has seen enough newlines, so the
	// last token must end in the last block.
	var tokens []string
	rest := text
	next := func() bool {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			return false
		}
		tokens, rest = append(tokens, string(rest[:i])), rest[i+1:]
		return true
	}
	if !next() {
		return nil, errors.New("PAX 1.0 map has no entry count")
	}
	count, err := strconv.ParseInt(tokens[0], 10, 32)
	if err != nil || count < 0 || 2*count > n {
		return nil, errors.New("bad PAX 1.0 map entry count")
	}
	for range 2 * count {
		if !next() {
			return nil, errors.New("PAX 1.0 map is cut short")
		}
	}
	if used := n - int64(len(rest)); used <= n-blockSize {
		return nil, errors.New("PAX 1.0 map does not end in its last block")
	}
	return parsePairs(tokens[1:])
}

func parsePairs(fields []string) ([]sparseEntry, error) {
	spd := make([]sparseEntry, 0, len(fields)/2)
	for i := 0; i+1 < len(fields); i += 2 {
		off, err1 := strconv.ParseInt(fields[i], 10, 64)
		n, err2 := strconv.ParseInt(fields[i+1], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("bad map entry %q,%q", fields[i], fields[i+1])
		}
		spd = append(spd, sparseEntry{off, n})
	}
	return spd, nil
}

// parseNumeric decodes a tar numeric field as archive/tar does: base-256 when
// the top bit of the first byte is set, else octal padded with spaces/NULs.
func parseNumeric(b []byte) (int64, error) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		var inv byte
		if b[0]&0x40 != 0 {
			inv = 0xff // negative: two's complement
		}
		var x uint64
		for i, c := range b {
			c ^= inv
			if i == 0 {
				c &= 0x7f
			}
			if x>>56 > 0 {
				return 0, errors.New("numeric field overflows")
			}
			x = x<<8 | uint64(c)
		}
		if x>>63 > 0 {
			return 0, errors.New("numeric field overflows")
		}
		if inv == 0xff {
			return ^int64(x), nil
		}
		return int64(x), nil
	}
	b = bytes.Trim(b, " \x00")
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if len(b) == 0 {
		return 0, nil
	}
	x, err := strconv.ParseUint(string(b), 8, 63)
	return int64(x), err
}
