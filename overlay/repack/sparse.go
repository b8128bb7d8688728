package repack

import (
	"archive/tar"
	"cmp"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/imgmount/imgmount/tarindex"
)

// Go's tar.Writer cannot write sparse files (it drops GNU.sparse.* PAX
// records), so sparse members are encoded here, in the PAX 1.0 sparse format
// of GNU tar, which Go's archive/tar (and so Docker), GNU tar and bsdtar
// read: a PAX header naming the file and its real size, then a member whose
// data is the map of data fragments followed by only their bytes. A 1 TiB
// file of holes becomes a few blocks.

const blockSize = 512

// sparseMember is what writeSparse needs of a sparse regular file.
type sparseMember struct {
	hdr   *tar.Header         // as for a plain file: Name, Mode, Uid, Gid, ModTime, PAXRecords (xattrs)
	size  int64               // the file's logical size
	frags []tarindex.Fragment // data fragments, by logical offset
	read  func(p []byte, off int64) (int, error)
}

// writeSparse writes m to out, which must be at a member boundary (after
// tar.Writer.Flush), reading its fragments through buf.
func writeSparse(out io.Writer, m sparseMember, buf []byte) error {
	frags := blockFragments(m.frags, m.size)
	var smap strings.Builder
	var data int64
	entries := 1 // the map ends with (size, 0), as GNU tar writes it (and needs it)
	for _, f := range frags {
		entries++
		data += f.Length
	}
	fmt.Fprintf(&smap, "%d\n", entries)
	for _, f := range frags {
		fmt.Fprintf(&smap, "%d\n%d\n", f.Logical, f.Length)
	}
	fmt.Fprintf(&smap, "%d\n0\n", m.size)
	mapBytes := pad([]byte(smap.String()))
	stored := int64(len(mapBytes)) + data

	h := m.hdr
	recs := map[string]string{
		"GNU.sparse.major":    "1",
		"GNU.sparse.minor":    "0",
		"GNU.sparse.name":     h.Name,
		"GNU.sparse.realsize": strconv.FormatInt(m.size, 10),
		"mtime":               fmt.Sprintf("%d.%09d", h.ModTime.Unix(), h.ModTime.Nanosecond()),
		"uid":                 strconv.Itoa(h.Uid),
		"gid":                 strconv.Itoa(h.Gid),
		"size":                strconv.FormatInt(stored, 10),
	}
	for k, v := range h.PAXRecords {
		recs[k] = v
	}
	base := path.Base(h.Name)
	pax := paxRecords(recs)
	blocks := ustarHeader("./PaxHeaders.0/"+base, tar.TypeXHeader, 0o644, int64(len(pax)), h.ModTime.Unix())
	blocks = append(blocks, pad(pax)...)
	blocks = append(blocks, ustarHeader("./GNUSparseFile.0/"+base, tar.TypeReg, h.Mode, stored, h.ModTime.Unix())...)
	blocks = append(blocks, mapBytes...)
	if _, err := out.Write(blocks); err != nil {
		return err
	}
	for _, f := range frags {
		for off := f.Logical; off < f.Logical+f.Length; {
			k, err := m.read(buf[:min(int64(len(buf)), f.Logical+f.Length-off)], off)
			if k == 0 {
				return fmt.Errorf("reading at %d: %w", off, orEOF(err))
			}
			if _, err := out.Write(buf[:k]); err != nil {
				return err
			}
			off += int64(k)
		}
	}
	_, err := out.Write(make([]byte, (blockSize-data%blockSize)%blockSize))
	return err
}

// blockFragments widens the data fragments to whole 512-byte blocks (within
// the file's size), merged where they meet, in order. GNU tar reads each
// fragment's data from blocks of its own, Go's archive/tar reads them back
// to back: with whole blocks the two agree (the widened parts read back as
// the zeros of the holes they cover).
func blockFragments(in []tarindex.Fragment, size int64) []tarindex.Fragment {
	frags := slices.Clone(in)
	slices.SortFunc(frags, func(a, b tarindex.Fragment) int { return cmp.Compare(a.Logical, b.Logical) })
	var out []tarindex.Fragment
	for _, f := range frags {
		if f.Length <= 0 {
			continue
		}
		start := f.Logical &^ (blockSize - 1)
		end := min((f.Logical+f.Length+blockSize-1)&^(blockSize-1), size)
		if k := len(out) - 1; k >= 0 && start <= out[k].Logical+out[k].Length {
			out[k].Length = max(out[k].Length, end-out[k].Logical)
			continue
		}
		out = append(out, tarindex.Fragment{Logical: start, Length: end - start})
	}
	return out
}

// paxRecords encodes PAX extended header records, sorted by key so that
// the same member always gives the same bytes.
func paxRecords(recs map[string]string) []byte {
	keys := make([]string, 0, len(recs))
	for k := range recs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out []byte
	for _, k := range keys {
		rec := " " + k + "=" + recs[k] + "\n"
		// The length prefix counts its own digits.
		n := len(rec) + 1
		for len(rec)+len(strconv.Itoa(n)) != n {
			n = len(rec) + len(strconv.Itoa(n))
		}
		out = append(out, strconv.Itoa(n)+rec...)
	}
	return out
}

// ustarHeader encodes one header block. Fields too large for it are zero:
// the PAX records before it carry them.
func ustarHeader(name string, typeflag byte, mode, size, mtime int64) []byte {
	b := make([]byte, blockSize)
	copy(b[0:100], name[:min(len(name), 99)])
	octal(b[100:108], mode&0o7777)
	octal(b[108:116], 0)
	octal(b[116:124], 0)
	octal(b[124:136], size)
	octal(b[136:148], mtime)
	b[156] = typeflag
	copy(b[257:265], "ustar\x0000")
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// octal writes v as a NUL-terminated octal field, or zeros if it does not
// fit (or is negative).
func octal(field []byte, v int64) {
	s := strconv.FormatInt(v, 8)
	if v < 0 || len(s) > len(field)-1 {
		s = "0"
	}
	copy(field, strings.Repeat("0", len(field)-1-len(s))+s+"\x00")
}

func pad(b []byte) []byte { return append(b, make([]byte, (blockSize-len(b)%blockSize)%blockSize)...) }
