package tarindex

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"unsafe"
)

// Saved index format (version 1), all integers little endian:
//
//	header   magic "imgmtidx", u32 version, u32 zero, i64 base, i64 size,
//	         [32]byte source fingerprint, i64 End,
//	         u64 entries, u64 xattrs, u64 fragments, u64 string bytes
//	entries  80-byte records, in index order: name ref, linkname ref,
//	         i64 Offset, Size, MtimeSec, u32 Mtime, Mode, UID, GID,
//	         Devmajor, Devminor, xattr count, fragment count, u8 Type,
//	         u8 flags (1: sparse, so an all-hole file keeps a non-nil map), pad
//	xattrs   16-byte records: name and value as string refs, entry by entry
//	frags    24-byte records: logical, physical, length, entry by entry
//	strings  one blob; a string ref is (u32 offset, u32 length) into it
//	trailer  u32 CRC-32C of everything before it
//
// Fixed-size records make loading a bounds-checked walk with one copy of the
// string blob, which every Name then points into. The CRC catches torn or
// corrupted files (we do not fsync the index: a bad one is just rebuilt).
// The fingerprint catches a source that changed under the same key.

const (
	indexMagic    = "imgmtidx"
	indexVersion  = 1
	headerSize    = 8 + 4 + 4 + 8 + 8 + 32 + 8 + 4*8
	entryRecSize  = 80
	xattrRecSize  = 16
	fragRecSize   = 24
	trailerSize   = 4
	flagSparse    = 1 << 0
	sampleEdge    = 64 << 10 // bytes hashed at each end of the source
	sampleMiddle  = 4 << 10  // bytes hashed at each interior sample point
	middleSamples = 14
)

var crcTable = crc32.MakeTable(crc32.Castagnoli) // hardware-accelerated on amd64 and arm64

var errBadIndex = errors.New("saved index is invalid")

// fingerprint hashes the source region's position, size and a sample of its
// bytes (both ends plus evenly spaced interior blocks): cheap to compute on
// every load, and it changes when the tar's headers or data are rewritten.
func fingerprint(r io.ReaderAt, base, size int64) ([32]byte, error) {
	h := sha256.New()
	var hdr [16]byte
	binary.LittleEndian.PutUint64(hdr[0:], uint64(base))
	binary.LittleEndian.PutUint64(hdr[8:], uint64(size))
	h.Write(hdr[:])
	buf := make([]byte, sampleEdge)
	for _, s := range sampleRanges(size) {
		b := buf[:s[1]]
		if err := readFullAt(r, b, base+s[0]); err != nil {
			return [32]byte{}, fmt.Errorf("read source at %d: %w", base+s[0], err)
		}
		h.Write(b)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, nil
}

// sampleRanges returns (offset, length) pairs inside [0, size), in order and
// not overlapping: the whole region when it is small.
func sampleRanges(size int64) [][2]int64 {
	if size <= 2*sampleEdge+middleSamples*sampleMiddle {
		var out [][2]int64
		for off := int64(0); off < size; off += sampleEdge {
			out = append(out, [2]int64{off, min(sampleEdge, size-off)})
		}
		return out
	}
	out := [][2]int64{{0, sampleEdge}}
	inner := size - 2*sampleEdge
	for i := int64(1); i <= middleSamples; i++ {
		out = append(out, [2]int64{sampleEdge + inner*i/(middleSamples+1) - sampleMiddle/2, sampleMiddle})
	}
	return append(out, [2]int64{size - sampleEdge, sampleEdge})
}

// encodeIndex serialises ix in the saved format (for tests and fuzzing;
// saving streams it with writeIndex).
func encodeIndex(ix *Index, base, size int64, fp [32]byte) ([]byte, error) {
	var b bytes.Buffer
	if err := writeIndex(&b, ix, base, size, fp); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// writeIndex writes ix in the saved format to w as it goes, holding only
// the string blob: encoding a million entries into one buffer first would
// take 200 bytes per entry at the moment a cold mount's memory peaks.
func writeIndex(w io.Writer, ix *Index, base, size int64, fp [32]byte) error {
	// The header gives the string blob's length, so the blob is laid out
	// first: every entry's name and link target, then the xattrs', in the
	// order the records below refer to them.
	st := newStringTable()
	var nx, nf, names int
	for i := range ix.Entries {
		names += len(ix.Entries[i].Name)
	}
	st.buf = make([]byte, 0, names) // link targets are few: the blob is mostly names
	for i := range ix.Entries {
		e := &ix.Entries[i]
		st.add(e.Name, false)
		st.add(e.Linkname, true)
		nf += len(e.Sparse)
	}
	for i := range ix.Entries {
		for _, x := range ix.Entries[i].Xattrs {
			st.add(x.Name, true)
			st.add(x.Value, true)
			nx++
		}
	}
	if len(st.buf) > math.MaxUint32 {
		return fmt.Errorf("string table of %d bytes is too large to save", len(st.buf))
	}
	crc := crc32.New(crcTable)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 256<<10)
	le := binary.LittleEndian
	hdr := make([]byte, 0, headerSize)
	hdr = append(hdr, indexMagic...)
	hdr = le.AppendUint32(hdr, indexVersion)
	hdr = le.AppendUint32(hdr, 0)
	hdr = le.AppendUint64(hdr, uint64(base))
	hdr = le.AppendUint64(hdr, uint64(size))
	hdr = append(hdr, fp[:]...)
	hdr = le.AppendUint64(hdr, uint64(ix.End))
	for _, n := range []int{len(ix.Entries), nx, nf, len(st.buf)} {
		hdr = le.AppendUint64(hdr, uint64(n))
	}
	bw.Write(hdr)
	rec := make([]byte, entryRecSize) // one buffer: an array handed to Write would escape, one allocation per entry
	for i := range ix.Entries {
		e := &ix.Entries[i]
		clear(rec)
		st.ref(rec[0:8], e.Name, false)
		st.ref(rec[8:16], e.Linkname, true)
		le.PutUint64(rec[16:], uint64(e.Offset))
		le.PutUint64(rec[24:], uint64(e.Size))
		le.PutUint64(rec[32:], uint64(e.MtimeSec))
		for j, v := range [...]uint32{e.Mtime, e.Mode, e.UID, e.GID, e.Devmajor, e.Devminor, uint32(len(e.Xattrs)), uint32(len(e.Sparse))} {
			le.PutUint32(rec[40+4*j:], v)
		}
		rec[72] = byte(e.Type)
		if e.Sparse != nil {
			rec[73] = flagSparse
		}
		bw.Write(rec)
	}
	for i := range ix.Entries {
		for _, x := range ix.Entries[i].Xattrs {
			var xr [xattrRecSize]byte
			st.ref(xr[0:8], x.Name, true)
			st.ref(xr[8:16], x.Value, true)
			bw.Write(xr[:])
		}
	}
	for i := range ix.Entries {
		for _, f := range ix.Entries[i].Sparse {
			var fr [fragRecSize]byte
			le.PutUint64(fr[0:], uint64(f.Logical))
			le.PutUint64(fr[8:], uint64(f.Physical))
			le.PutUint64(fr[16:], uint64(f.Length))
			bw.Write(fr[:])
		}
	}
	bw.Write(st.buf)
	if err := bw.Flush(); err != nil { // a bufio.Writer keeps its first error
		return err
	}
	_, err := w.Write(le.AppendUint32(nil, crc.Sum32()))
	return err
}

// stringTable builds the string blob in two passes over the same strings
// in the same order: add lays the blob out, ref then writes each string's
// reference. Repeated link targets and xattr names and values are stored
// once; names are nearly always unique, so they skip the map.
type stringTable struct {
	buf  []byte
	seen map[string]uint32
	next uint32 // ref's position in buf: where the next unique string starts
}

func newStringTable() *stringTable { return &stringTable{seen: map[string]uint32{}} }

// add appends s to the blob unless intern is set and it is there already.
func (st *stringTable) add(s string, intern bool) {
	if intern {
		if _, ok := st.seen[s]; ok {
			return
		}
		st.seen[s] = uint32(len(st.buf)) // overflow is refused once the whole table is known
	}
	st.buf = append(st.buf, s...)
}

// ref writes s's (offset, length) into ref, following add's calls.
func (st *stringTable) ref(ref []byte, s string, intern bool) {
	off := st.next
	if intern {
		off = st.seen[s]
	}
	if off == st.next {
		st.next += uint32(len(s)) // s's first occurrence: the blob went on past it
	}
	binary.LittleEndian.PutUint32(ref[0:], off)
	binary.LittleEndian.PutUint32(ref[4:], uint32(len(s)))
}

// decodeIndex parses a saved index held in memory (see decodeFrom).
func decodeIndex(b []byte, base, size int64, fp [32]byte) (*Index, error) {
	return decodeFrom(bytes.NewReader(b), int64(len(b)), base, size, fp)
}

// decodeChunk is how many entry records decodeFrom reads at a time.
const decodeChunk = 4096

// decodeFrom parses the saved index in the n bytes of r, accepting it only
// if it is intact and was made from a source with the given base, size and
// fingerprint. Every count and reference is bounds-checked: a damaged file
// is an error, never a panic or an index pointing outside the source.
//
// The fixed-size entry records, most of the file, are read and decoded a
// chunk at a time rather than loaded whole, so that loading holds little
// more than the decoded entries and the one string blob they point into;
// the checksum is computed along the way and checked before anything is
// returned.
func decodeFrom(r io.ReaderAt, n int64, base, size int64, fp [32]byte) (*Index, error) {
	if n < headerSize+trailerSize {
		return nil, fmt.Errorf("%w: %d bytes is too short", errBadIndex, n)
	}
	le := binary.LittleEndian
	var hdr [headerSize]byte
	if err := readFullAt(r, hdr[:], 0); err != nil {
		return nil, fmt.Errorf("%w: header: %v", errBadIndex, err)
	}
	b := hdr[:]
	if string(b[:8]) != indexMagic || le.Uint32(b[8:]) != indexVersion {
		return nil, fmt.Errorf("%w: unknown magic or version", errBadIndex)
	}
	if int64(le.Uint64(b[16:])) != base || int64(le.Uint64(b[24:])) != size || [32]byte(b[32:64]) != fp {
		return nil, fmt.Errorf("%w: made from different source bytes", errBadIndex)
	}
	end := int64(le.Uint64(b[64:]))
	ne, nx, nf, ns := le.Uint64(b[72:]), le.Uint64(b[80:]), le.Uint64(b[88:]), le.Uint64(b[96:])
	bodyLen := n - trailerSize
	rest := uint64(bodyLen - headerSize)
	// Each product is checked against the real length before any use, and
	// none of the factors can be large enough to overflow once it passes.
	if ne > rest/entryRecSize || nx > rest/xattrRecSize || nf > rest/fragRecSize || ns > rest ||
		ne*entryRecSize+nx*xattrRecSize+nf*fragRecSize+ns != rest {
		return nil, fmt.Errorf("%w: section sizes do not add up", errBadIndex)
	}
	if end < base || end > base+size {
		return nil, fmt.Errorf("%w: end %d outside the source", errBadIndex, end)
	}
	entsAt := int64(headerSize)
	xsAt := entsAt + int64(ne*entryRecSize)
	frsAt := xsAt + int64(nx*xattrRecSize)
	strsAt := frsAt + int64(nf*fragRecSize)
	tail := make([]byte, int64(nx*xattrRecSize+nf*fragRecSize+ns)+trailerSize)
	if err := readFullAt(r, tail, xsAt); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadIndex, err)
	}
	strs := tail[strsAt-xsAt : int64(len(tail))-trailerSize]
	d := decoder{
		r:     r,
		crc:   crc32.Update(0, crcTable, hdr[:]),
		entAt: entsAt,
		xs:    tail[:nx*xattrRecSize],
		frs:   tail[nx*xattrRecSize : strsAt-xsAt],
		lo:    base,
		hi:    base + size,
		nx:    int(nx),
		nf:    int(nf),
		count: int(ne),
	}
	if len(strs) > 0 {
		// tail is never written again: every name can point into it. (It
		// also holds the xattr and fragment records, a few bytes.)
		d.strs = unsafe.String(unsafe.SliceData(strs), len(strs))
	}
	entries, err := d.entries()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadIndex, err)
	}
	if d.crc = crc32.Update(d.crc, crcTable, tail[:len(tail)-trailerSize]); d.crc != le.Uint32(tail[len(tail)-trailerSize:]) {
		return nil, fmt.Errorf("%w: checksum mismatch", errBadIndex)
	}
	return &Index{Entries: entries, End: end}, nil
}

type decoder struct {
	r             io.ReaderAt
	crc           uint32
	entAt         int64  // file offset of the next entry record to read
	ents          []byte // records in the current chunk
	next          int    // index of the first record not yet read
	xs, frs       []byte
	strs          string
	lo, hi        int64 // the source region entries must lie in
	nx, nf, count int
}

// record returns entry record i; records are read in order, a chunk at a
// time, each added to the checksum as it is read.
func (d *decoder) record(i int) ([]byte, error) {
	if i >= d.next {
		k := min(decodeChunk, d.count-d.next)
		if cap(d.ents) < k*entryRecSize {
			d.ents = make([]byte, k*entryRecSize)
		}
		d.ents = d.ents[:k*entryRecSize]
		if err := readFullAt(d.r, d.ents, d.entAt); err != nil {
			return nil, err
		}
		d.crc = crc32.Update(d.crc, crcTable, d.ents)
		d.entAt += int64(len(d.ents))
		d.next += k
	}
	j := i - (d.next - len(d.ents)/entryRecSize)
	return d.ents[j*entryRecSize : (j+1)*entryRecSize], nil
}

func (d *decoder) str(ref []byte) (string, error) {
	off, n := uint64(binary.LittleEndian.Uint32(ref)), uint64(binary.LittleEndian.Uint32(ref[4:]))
	if off+n > uint64(len(d.strs)) {
		return "", errors.New("string reference out of range")
	}
	return d.strs[off : off+n], nil
}

func (d *decoder) entries() ([]Entry, error) {
	if d.count == 0 {
		return nil, nil // as Build leaves an empty archive
	}
	out := make([]Entry, d.count)
	xattrs := make([]Xattr, d.nx)
	frags := make([]Fragment, d.nf)
	var xi, fi int
	for i := range out {
		rec, err := d.record(i)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		e, nx, nf, err := d.entry(rec)
		if err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		if nx > d.nx-xi || nf > d.nf-fi {
			return nil, fmt.Errorf("entry %d: more xattrs or fragments than stored", i)
		}
		if nx > 0 {
			// Three-index slices: an append by a caller must not spill
			// into the next entry's share of the backing array.
			e.Xattrs = xattrs[xi : xi+nx : xi+nx]
			if err := d.fillXattrs(e.Xattrs, xi); err != nil {
				return nil, fmt.Errorf("entry %d: %w", i, err)
			}
			xi += nx
		}
		if rec[73]&flagSparse != 0 {
			e.Sparse = []Fragment{} // non-nil even with no data: nil means "not sparse"
			if nf > 0 {
				e.Sparse = frags[fi : fi+nf : fi+nf]
				if err := d.fillFrags(e, fi); err != nil {
					return nil, fmt.Errorf("entry %d: %w", i, err)
				}
				fi += nf
			}
		} else if nf != 0 {
			return nil, fmt.Errorf("entry %d: fragments on a non-sparse entry", i)
		}
		out[i] = e
	}
	if xi != d.nx || fi != d.nf {
		return nil, errors.New("unreferenced xattrs or fragments")
	}
	return out, nil
}

func (d *decoder) entry(rec []byte) (e Entry, nx, nf int, err error) {
	le := binary.LittleEndian
	if e.Name, err = d.str(rec[0:]); err != nil {
		return
	}
	if e.Linkname, err = d.str(rec[8:]); err != nil {
		return
	}
	e.Offset = int64(le.Uint64(rec[16:]))
	e.Size = int64(le.Uint64(rec[24:]))
	e.MtimeSec = int64(le.Uint64(rec[32:]))
	e.Mtime, e.Mode = le.Uint32(rec[40:]), le.Uint32(rec[44:])
	e.UID, e.GID = le.Uint32(rec[48:]), le.Uint32(rec[52:])
	e.Devmajor, e.Devminor = le.Uint32(rec[56:]), le.Uint32(rec[60:])
	nx, nf = int(le.Uint32(rec[64:])), int(le.Uint32(rec[68:]))
	e.Type = Type(rec[72])
	switch {
	case e.Name == "":
		err = errors.New("empty name")
	case e.Type > TypeFifo:
		err = fmt.Errorf("unknown type %d", e.Type)
	case e.Size < 0 || e.Offset < d.lo || e.Offset > d.hi:
		err = errors.New("offset or size out of range")
	case rec[73]&flagSparse == 0 && e.Size > d.hi-e.Offset:
		err = errors.New("data runs past the source")
	}
	return
}

func (d *decoder) fillXattrs(xs []Xattr, first int) error {
	for j := range xs {
		rec := d.xs[(first+j)*xattrRecSize:]
		var err error
		if xs[j].Name, err = d.str(rec[0:]); err != nil {
			return err
		}
		if xs[j].Value, err = d.str(rec[8:]); err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) fillFrags(e Entry, first int) error {
	le := binary.LittleEndian
	for j := range e.Sparse {
		rec := d.frs[(first+j)*fragRecSize:]
		f := Fragment{Logical: int64(le.Uint64(rec)), Physical: int64(le.Uint64(rec[8:])), Length: int64(le.Uint64(rec[16:]))}
		if f.Length <= 0 || f.Logical < 0 || f.Logical > e.Size-f.Length || f.Physical < d.lo || f.Physical > d.hi-f.Length {
			return fmt.Errorf("fragment %d out of range", j)
		}
		e.Sparse[j] = f
	}
	return nil
}
