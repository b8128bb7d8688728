package gz

import "math/bits"

// Decoding tables. A table is a root of 1<<rootBits entries indexed by the
// next rootBits bits of input (least significant first, as DEFLATE packs
// Huffman codes bit-reversed), followed by sub-tables for the codes longer
// than rootBits. An entry is a uint32:
//
//	bits 0-3    bits of input the entry consumes (the code's length, or
//	            rootBits for a pointer to a sub-table, or the length past
//	            rootBits inside a sub-table)
//	bits 4-7    kind: entLiteral, entCopy, entSub, entEOB; none: invalid
//	bits 8-11   extra bits that follow the code (length or distance), or
//	            the index bits of a sub-table
//	bits 16-31  value: the literal byte, the base length or distance, or
//	            the index of the sub-table
//
// An entry of no kind (zero, or a template of zero) is a code the stream
// may not use: the unused half of a one-code table, symbols 286-287 and
// distances 30-31 of the fixed code.
const (
	entLiteral = 0x10 // literal byte (lit/len table), or symbol (code-length table)
	entCopy    = 0x20 // length (lit/len table) or distance (distance table)
	entSub     = 0x40 // pointer to a sub-table
	entEOB     = 0x80 // end of block

	litRootBits  = 10
	distRootBits = 8
	clRootBits   = 7

	// Room for the root plus every sub-table a complete code can need
	// (zlib's "enough" gives 1334 for 286 symbols with a 10-bit root and
	// 402 for 30 symbols with an 8-bit root). buildTable checks anyway.
	litTableSize  = 1 << 11
	distTableSize = 1 << 10
	clTableSize   = 1 << clRootBits

	maxCodeLen = 15
	numLitLen  = 288 // symbols of the fixed lit/len code; dynamic codes use at most 286
	numDist    = 32  // symbols of the fixed distance code; dynamic codes use at most 30
)

var (
	lengthBase  = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra   = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}

	// The order in which a dynamic block lists the code-length code's lengths.
	clOrder = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

	// Entry templates by symbol (kind, extra bits, value; the length is
	// added when a table is built).
	litTemplate  [numLitLen]uint32
	distTemplate [numDist]uint32
	clTemplate   [19]uint32

	// The fixed code of block type 1 (RFC 1951 3.2.6).
	fixedLit  [litTableSize]uint32
	fixedDist [distTableSize]uint32
)

func init() {
	for s := range 256 {
		litTemplate[s] = entLiteral | uint32(s)<<16
	}
	litTemplate[256] = entEOB
	for i := range lengthBase {
		litTemplate[257+i] = entCopy | uint32(lengthExtra[i])<<8 | uint32(lengthBase[i])<<16
	}
	// 286 and 287 stay invalid.
	for i := range distBase {
		distTemplate[i] = entCopy | uint32(distExtra[i])<<8 | uint32(distBase[i])<<16
	}
	for s := range clTemplate {
		clTemplate[s] = entLiteral | uint32(s)<<16
	}

	var lens [numLitLen]uint8
	for s := range lens {
		switch {
		case s < 144:
			lens[s] = 8
		case s < 256:
			lens[s] = 9
		case s < 280:
			lens[s] = 7
		default:
			lens[s] = 8
		}
	}
	if !buildTable(fixedLit[:], litRootBits, lens[:], litTemplate[:]) {
		panic("gz: fixed lit/len code")
	}
	var dl [numDist]uint8
	for s := range dl {
		dl[s] = 5
	}
	if !buildTable(fixedDist[:], distRootBits, dl[:], distTemplate[:]) {
		panic("gz: fixed distance code")
	}
}

// buildTable fills t with the decoding table of the canonical Huffman code
// of lens (one code length per symbol, 0: unused). It accepts what
// compress/flate accepts: a complete code, an empty one (any use of it is
// an error, reported when decoding), or a single code of length 1. Any
// other incomplete or over-subscribed code is refused (false).
func buildTable(t []uint32, rootBits uint, lens []uint8, tmpl []uint32) bool {
	var count [maxCodeLen + 1]int
	for _, l := range lens {
		count[l]++
	}
	count[0] = 0
	maxLen := maxCodeLen
	for maxLen > 0 && count[maxLen] == 0 {
		maxLen--
	}
	rootSize := 1 << rootBits
	if maxLen == 0 {
		clear(t[:rootSize])
		return true
	}
	left := 1
	for l := 1; l <= maxCodeLen; l++ {
		left = left<<1 - count[l]
		if left < 0 {
			return false // over-subscribed
		}
	}
	if left > 0 {
		if maxLen != 1 || count[1] != 1 {
			return false // incomplete
		}
		clear(t[:rootSize]) // the other one-bit code stays invalid
	}

	// Symbols in canonical order: by length, then by symbol.
	var offs [maxCodeLen + 2]int
	for l := 1; l <= maxCodeLen; l++ {
		offs[l+1] = offs[l] + count[l]
	}
	var sorted [numLitLen]uint16
	for s, l := range lens {
		if l != 0 {
			sorted[offs[l]] = uint16(s)
			offs[l]++
		}
	}

	remain := count // codes of each length not yet placed
	code := 0       // the next canonical code (most significant bit first)
	idx := 0
	next := rootSize // where the next sub-table goes
	prefix := -1     // root index of the current sub-table
	subStart, subBits := 0, 0
	mask := rootSize - 1
	for l := 1; l <= maxLen; l++ {
		for range count[l] {
			s := sorted[idx]
			idx++
			rev := int(bits.Reverse16(uint16(code)) >> (16 - l))
			code++
			if l <= int(rootBits) {
				e := tmpl[s] | uint32(l)
				for i := rev; i < rootSize; i += 1 << l {
					t[i] = e
				}
				remain[l]--
				continue
			}
			if p := rev & mask; p != prefix {
				// A new sub-table: as large as the rest of the codes
				// sharing this root prefix need (zlib's method).
				prefix = p
				cur := l - int(rootBits)
				avail := 1 << cur
				for cur+int(rootBits) < maxLen {
					avail -= remain[cur+int(rootBits)]
					if avail <= 0 {
						break
					}
					cur++
					avail <<= 1
				}
				subBits = cur
				subStart = next
				next += 1 << subBits
				if next > len(t) || subStart >= 1<<16 {
					return false
				}
				t[p] = entSub | uint32(rootBits) | uint32(subBits)<<8 | uint32(subStart)<<16
			}
			sl := l - int(rootBits)
			e := tmpl[s] | uint32(sl)
			for i := rev >> rootBits; i < 1<<subBits; i += 1 << sl {
				t[subStart+i] = e
			}
			remain[l]--
		}
		code <<= 1
	}
	return true
}
