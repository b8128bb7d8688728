package tarindex

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// errFallback says the fast header parser met something it leaves to
// archive/tar: Build then indexes the whole stream again the slow way.
var errFallback = errors.New("tar stream needs archive/tar")

// typeRegA is the pre-POSIX regular-file type (archive/tar's deprecated
// TypeRegA), which Next turns into TypeReg or, for a name ending in "/",
// TypeDir.
const typeRegA = '\x00'

// maxSpecialFileSize is archive/tar's limit on PAX and GNU long-name data.
const maxSpecialFileSize = 1 << 20

// buildFast indexes what Build indexes, for the streams container layers
// are made of: USTAR, PAX and GNU headers (PAX records, GNU long names and
// links, global headers) and the types Build accepts, without sparse
// members. It reads each header block with one ReadAt and allocates little
// more than each entry's name; archive/tar allocates a Header, maps and
// several strings per member and scans every block for non-ASCII bytes.
//
// It returns errFallback on anything else or anything irregular (a bad
// checksum, base-256 or malformed numbers, V7 or star headers, a sparse
// member, truncation, an unsupported type, a name that is unsafe), so
// that archive/tar decides, and reports, exactly as before.
func buildFast(r io.ReaderAt, base, size int64, maxEntries int) (*Index, error) {
	p := &fastParser{r: r, base: base, size: size}
	ix := &Index{}
	var entries entryChunks
	limit := budget{max: maxEntries}
	var blk [blockSize]byte
	var pos int64 // section offset of the next header block
	drop := newDropBehind(r, base)
	defer func() { drop.done(base + pos) }()
	for {
		drop.passed(base + pos)
		if pos+blockSize > size {
			if pos == size && !p.meta {
				break
			}
			return nil, errFallback
		}
		if _, err := r.ReadAt(blk[:], base+pos); err != nil {
			return nil, errFallback
		}
		if blk == [blockSize]byte{} {
			end, ok := p.endOfArchive(pos)
			if !ok {
				return nil, errFallback
			}
			pos = end
			break
		}
		h, ok := parseBlockIn(&blk, &p.names)
		if !ok {
			return nil, errFallback
		}
		dataAt := pos + blockSize
		switch h.Typeflag {
		case tar.TypeXHeader, tar.TypeXGlobalHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
			if pos, ok = p.readMeta(&h, dataAt); !ok {
				return nil, errFallback
			}
			continue
		case tar.TypeReg, typeRegA, tar.TypeLink, tar.TypeSymlink, tar.TypeChar,
			tar.TypeBlock, tar.TypeDir, tar.TypeFifo, tar.TypeCont:
		default:
			return nil, errFallback // GNU sparse, vendor types: archive/tar's business
		}
		if !p.applyMeta(&h) {
			return nil, errFallback
		}
		nb := h.Size
		switch h.Typeflag {
		case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo:
			nb = 0 // header-only types: archive/tar ignores their size field
		}
		if nb < 0 || dataAt+nb > size {
			return nil, errFallback
		}
		e, err := entryFromHeader(&h)
		if err != nil {
			return nil, errFallback
		}
		e.Offset = base + dataAt
		if err := limit.take(&e); err != nil {
			return nil, err
		}
		entries.add(e)
		pos = dataAt + roundBlock(nb)
	}
	ix.End = base + pos
	ix.Entries = entries.slice()
	return ix, nil
}

// entryChunks collects an index's entries in chunks and hands them over as
// one slice of exactly their number. Appending to one slice instead
// allocated five times the entries' size for a million of them (every
// growth copies, and the spare capacity then wanted trimming), all garbage
// by the time the mount's memory peaks.
type entryChunks struct {
	full [][]Entry // filled chunks
	cur  []Entry   // the chunk being filled
	n    int
}

// maxChunk is the largest chunk, in entries (about half a megabyte).
const maxChunk = 4096

func (c *entryChunks) add(e Entry) {
	if len(c.cur) == cap(c.cur) {
		if c.cur != nil {
			c.full = append(c.full, c.cur)
		}
		c.cur = make([]Entry, 0, min(max(2*cap(c.cur), 64), maxChunk))
	}
	c.cur = append(c.cur, e)
	c.n++
}

// slice returns the entries in one slice. An index of one chunk (most
// layers: the chunks double up to maxChunk) is that chunk.
func (c *entryChunks) slice() []Entry {
	if len(c.full) == 0 {
		return c.cur
	}
	out := make([]Entry, 0, c.n)
	for _, ch := range c.full {
		out = append(out, ch...)
	}
	return append(out, c.cur...)
}

// fastParser is buildFast's state between header blocks: the section it
// reads and the PAX and GNU long-name headers that apply to the next entry.
type fastParser struct {
	r          io.ReaderAt
	base, size int64
	pax        map[string]string
	longName   string
	longLink   string
	meta       bool // PAX or GNU long-name headers are pending
	buf        []byte
	names      stringArena
}

// stringArena hands out strings copied into shared chunks: one allocation
// per chunk of names (1 KiB doubling to 64 KiB) rather than one per name (an index of a million
// entries keeps a million names for as long as it lives, and each
// allocation of its own would round it up and cost the GC an object).
// Bytes once handed out are never written again. A nil arena allocates
// each string on its own.
type stringArena struct {
	chunk []byte
}

const arenaChunk = 64 << 10

func (a *stringArena) str(parts ...[]byte) string {
	n := 0
	for _, b := range parts {
		n += len(b)
	}
	if n == 0 {
		return ""
	}
	if a == nil || n > arenaChunk/4 {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return unsafe.String(unsafe.SliceData(b), n)
	}
	if cap(a.chunk)-len(a.chunk) < n {
		// Chunks double from 1 KiB: a layer of a few entries must not
		// keep 64 KiB for them.
		a.chunk = make([]byte, 0, min(max(2*cap(a.chunk), 1<<10), arenaChunk))
	}
	start := len(a.chunk)
	for _, b := range parts {
		a.chunk = append(a.chunk, b...)
	}
	return unsafe.String(&a.chunk[start], n)
}

// endOfArchive checks the end-of-archive marker whose first zero block is
// at pos: two zero blocks, or one at the very end of the section. It
// returns the offset after the marker.
func (p *fastParser) endOfArchive(pos int64) (int64, bool) {
	if p.meta {
		return 0, false
	}
	if pos+blockSize == p.size {
		return pos + blockSize, true
	}
	if pos+2*blockSize > p.size {
		return 0, false
	}
	var blk [blockSize]byte
	if _, err := p.r.ReadAt(blk[:], p.base+pos+blockSize); err != nil || blk != [blockSize]byte{} {
		return 0, false
	}
	return pos + 2*blockSize, true
}

// readMeta reads a PAX or GNU long-name header's data (at dataAt) and keeps
// it for the next entry; it returns the offset of the next header.
func (p *fastParser) readMeta(h *tar.Header, dataAt int64) (int64, bool) {
	if h.Size < 0 || h.Size > maxSpecialFileSize || dataAt+h.Size > p.size {
		return 0, false
	}
	if cap(p.buf) < int(h.Size) {
		p.buf = make([]byte, h.Size)
	}
	data := p.buf[:h.Size]
	if _, err := p.r.ReadAt(data, p.base+dataAt); err != nil {
		return 0, false
	}
	var ok bool
	switch h.Typeflag {
	case tar.TypeXHeader:
		if p.pax, ok = parsePAXRecords(data); !ok {
			return 0, false
		}
		p.meta = true
	case tar.TypeXGlobalHeader:
		// Build skips global headers; archive/tar drops any pending meta
		// headers at one, which we leave to it.
		if p.meta {
			return 0, false
		}
		if _, ok := parsePAXRecords(data); !ok {
			return 0, false
		}
	case tar.TypeGNULongName:
		p.longName, p.meta = cString(data), true
	case tar.TypeGNULongLink:
		p.longLink, p.meta = cString(data), true
	}
	return dataAt + roundBlock(h.Size), true
}

// applyMeta applies the pending meta headers to the entry h, normalises
// its type as archive/tar does, and clears them.
func (p *fastParser) applyMeta(h *tar.Header) bool {
	if p.pax != nil && !mergePAXRecords(h, p.pax) {
		return false
	}
	if p.longName != "" {
		h.Name = p.longName
	}
	if p.longLink != "" {
		h.Linkname = p.longLink
	}
	p.pax, p.longName, p.longLink, p.meta = nil, "", "", false
	if h.Typeflag == typeRegA {
		if strings.HasSuffix(h.Name, "/") {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
		}
	}
	return true
}

// parseBlock decodes a USTAR, PAX or GNU header block as archive/tar does.
// ok is false for anything else (V7, star, a bad checksum, base-256 or
// malformed numbers, GNU access or change times).
func parseBlock(b *[blockSize]byte) (h tar.Header, ok bool) {
	return parseBlockIn(b, nil)
}

// parseBlockIn is parseBlock taking the names' strings from names (nil:
// allocated on their own).
func parseBlockIn(b *[blockSize]byte, names *stringArena) (h tar.Header, ok bool) {
	chk, ok := octal(b[148:156])
	if !ok {
		return h, false
	}
	// The sums archive/tar accepts, with the checksum field counted as
	// spaces: unsigned bytes, and signed ones (each byte >= 0x80 counts
	// 256 less).
	var unsigned, high int64
	for _, c := range b {
		unsigned += int64(c)
		high += int64(c >> 7)
	}
	for _, c := range b[148:156] {
		unsigned -= int64(c)
		high -= int64(c >> 7)
	}
	unsigned += 8 * ' '
	signed := unsigned - 256*high
	if chk != unsigned && chk != signed {
		return h, false
	}
	magic, version := string(b[257:263]), string(b[263:265])
	gnu := false
	switch {
	case magic == "ustar\x00" && version == "00":
		if string(b[508:512]) == "tar\x00" {
			return h, false // star
		}
	case magic == "ustar " && version == " \x00":
		gnu = true
		if b[345] != 0 || b[357] != 0 {
			return h, false // access or change time: archive/tar parses (and may reject) them
		}
	default:
		return h, false // V7
	}
	var mode, uid, gid, mtime, dmaj, dmin int64
	var okm, oku, okg, oks, okt, okj, okn bool
	mode, okm = octal(b[100:108])
	uid, oku = octal(b[108:116])
	gid, okg = octal(b[116:124])
	h.Size, oks = octal(b[124:136])
	mtime, okt = octal(b[136:148])
	dmaj, okj = octal(b[329:337])
	dmin, okn = octal(b[337:345])
	if !(okm && oku && okg && oks && okt && okj && okn) {
		return h, false
	}
	h.Typeflag = b[156]
	h.Mode, h.Uid, h.Gid = mode, int(uid), int(gid)
	h.ModTime = time.Unix(mtime, 0)
	h.Devmajor, h.Devminor = dmaj, dmin
	name := cBytes(b[0:100])
	if prefix := b[345:500]; !gnu && prefix[0] != 0 {
		h.Name = names.str(cBytes(prefix), []byte{'/'}, name)
	} else {
		h.Name = names.str(name)
	}
	h.Linkname = names.str(cBytes(b[157:257]))
	return h, true
}

func cBytes(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

func cString(b []byte) string { return string(cBytes(b)) }

// octal parses a numeric field as archive/tar's parseOctal does (spaces
// and NULs trimmed at both ends; empty is zero). Base-256 fields and
// anything malformed give ok false.
func octal(b []byte) (int64, bool) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		return 0, false
	}
	lo, hi := 0, len(b)
	for lo < hi && (b[lo] == ' ' || b[lo] == 0) {
		lo++
	}
	for hi > lo && (b[hi-1] == ' ' || b[hi-1] == 0) {
		hi--
	}
	var n int64
	for _, c := range b[lo:hi] {
		if c < '0' || c > '7' || n > (1<<60) {
			return 0, false
		}
		n = n<<3 | int64(c-'0')
	}
	return n, true
}

// parsePAXRecords parses "%d %s=%s\n" records as archive/tar's parsePAX
// does. ok is false on any malformed record and on GNU sparse records
// (archive/tar's business).
func parsePAXRecords(data []byte) (map[string]string, bool) {
	s := string(data)
	recs := map[string]string{}
	for len(s) > 0 {
		nStr, rest, ok := strings.Cut(s, " ")
		if !ok {
			return nil, false
		}
		n, err := strconv.ParseInt(nStr, 10, 0)
		if err != nil || n < 5 || n > int64(len(s)) {
			return nil, false
		}
		n -= int64(len(nStr) + 1)
		if n <= 0 {
			return nil, false
		}
		rec, nl, rem := rest[:n-1], rest[n-1:n], rest[n:]
		if nl != "\n" {
			return nil, false
		}
		k, v, ok := strings.Cut(rec, "=")
		if !ok || k == "" || strings.Contains(k, "=") {
			return nil, false
		}
		switch k {
		case "path", "linkpath", "uname", "gname":
			if strings.IndexByte(v, 0) >= 0 {
				return nil, false
			}
		default:
			if strings.IndexByte(k, 0) >= 0 {
				return nil, false
			}
		}
		if strings.HasPrefix(k, "GNU.sparse.") {
			return nil, false
		}
		recs[k] = v
		s = rem
	}
	return recs, true
}

// mergePAXRecords applies PAX records to h as archive/tar's mergePAX does.
func mergePAXRecords(h *tar.Header, recs map[string]string) bool {
	for k, v := range recs {
		if v == "" {
			continue // keeps the header's value
		}
		switch k {
		case "path":
			h.Name = v
		case "linkpath":
			h.Linkname = v
		case "uid", "gid":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return false
			}
			if k == "uid" {
				h.Uid = int(n)
			} else {
				h.Gid = int(n)
			}
		case "mtime", "atime", "ctime":
			t, ok := parsePAXTime(v)
			if !ok {
				return false
			}
			if k == "mtime" {
				h.ModTime = t
			}
		case "size":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return false
			}
			h.Size = n
		}
	}
	h.PAXRecords = recs
	return true
}

// parsePAXTime is archive/tar's: "sec[.frac]", the fraction cut or padded
// to nanoseconds.
func parsePAXTime(s string) (time.Time, bool) {
	ss, sn, _ := strings.Cut(s, ".")
	secs, err := strconv.ParseInt(ss, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	if len(sn) == 0 {
		return time.Unix(secs, 0), true
	}
	if strings.Trim(sn, "0123456789") != "" {
		return time.Time{}, false
	}
	if len(sn) < 9 {
		sn += strings.Repeat("0", 9-len(sn))
	} else {
		sn = sn[:9]
	}
	nsecs, _ := strconv.ParseInt(sn, 10, 64)
	if len(ss) > 0 && ss[0] == '-' {
		return time.Unix(secs, -nsecs), true
	}
	return time.Unix(secs, nsecs), true
}
