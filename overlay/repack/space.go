package repack

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/union"
	"github.com/imgmount/imgmount/tarindex"
)

// ErrNoSpace: what a commit or export would write does not fit in the free
// space of its filesystem. It is found before writing, so that an image
// (say with a huge file of holes, or a layer that inflates a thousandfold)
// cannot fill the disk others share.
var ErrNoSpace = errors.New("not enough free space")

// checkSpace fails with ErrNoSpace if need bytes are more than free says
// (nil free: nothing is checked).
func checkSpace(free func() (int64, error), need int64, what string) error {
	if free == nil {
		return nil
	}
	avail, err := free()
	if err != nil || need <= avail {
		return nil // unknown: the writes will tell
	}
	return fmt.Errorf("%w: %s needs about %s, and %s is free", ErrNoSpace, what, archive.HumanSize(need), archive.HumanSize(avail))
}

// treeBytes is about what WriteTreeTar writes for t, and never less: each
// entry's header block, and before it the PAX extended header archive/tar
// writes where the header alone cannot hold the entry (a name or link
// target past the header's fields or not ASCII, a nanosecond mtime,
// xattrs, numbers too large), each regular file's content once (a sparse
// file's map and data blocks only), and the end of the archive. A tar
// member carries its whole path, so a tree n deep writes about n² bytes of
// names: a tiny image of 100,000 nested directories exports to 10 GB,
// which this counts. It walks the tree once, carrying each directory's
// name length down as the writer builds the names.
func treeBytes(t *union.Tree) int64 {
	s := treeSizer{links: map[uint64]nameLen{}}
	n := int64(2 * blockSize) // the end of the archive
	if t.Root.Entry != nil {
		n += s.entry(t.Root, nameLen{}.plus("./"))
	}
	return n + s.children(t.Root, nameLen{ascii: true})
}

// USTAR header fields (archive/tar's nameSize, prefixSize).
const (
	ustarName   = 100
	ustarPrefix = 155
)

// nameLen is what the estimate needs of a name: its length, whether it is
// all ASCII, and the name itself while it is short enough to fit a USTAR
// header split in two (longer ones never do).
type nameLen struct {
	n     int
	ascii bool
	s     string // the name, if n <= ustarPrefix+1+ustarName
}

func (a nameLen) plus(s string) nameLen {
	b := nameLen{n: a.n + len(s), ascii: (a.n == 0 || a.ascii) && isASCII(s)}
	if b.n <= ustarPrefix+1+ustarName {
		b.s = a.s + s
	}
	return b
}

// paxRecord tells whether archive/tar records the name (or link target) in
// the PAX header, when it writes one: past the header's 100 bytes, or not
// ASCII.
func (a nameLen) paxRecord() bool { return a.n > ustarName || !a.ascii }

// fitsUSTAR tells whether the name fits a USTAR header: in its name field,
// or split at a slash between its prefix and name fields (archive/tar's
// splitUSTARPath). A link target has no prefix field.
func (a nameLen) fitsUSTAR(canSplit bool) bool {
	if !a.ascii {
		return false
	}
	if a.n <= ustarName {
		return true
	}
	if !canSplit || a.n > ustarPrefix+1+ustarName {
		return false
	}
	name := a.s
	length := min(len(name), ustarPrefix+1)
	if length == len(name) && name[length-1] == '/' {
		length--
	}
	i := strings.LastIndexByte(name[:length], '/')
	suffix := len(name) - i - 1
	return i > 0 && suffix <= ustarName && suffix > 0 && i <= ustarPrefix
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// treeSizer walks a tree as WriteTreeTar does.
type treeSizer struct {
	links map[uint64]nameLen // Ino -> the first name of a multiply linked file
}

// children is what n's subtree takes; dir is n's name with its trailing
// slash (nothing for the root).
func (s *treeSizer) children(n *union.Node, dir nameLen) int64 {
	var total int64
	for _, c := range n.Children() {
		name := dir.plus(c.Name)
		if c.IsDir() {
			name = name.plus("/")
		}
		total += s.entry(c, name)
		if c.IsDir() {
			total += s.children(c, name)
		}
	}
	return total
}

// Limits of the header's octal fields: past them archive/tar writes the
// number as a PAX record.
const (
	maxOctal7  = 1<<21 - 1 // uid, gid
	maxOctal11 = 1<<33 - 1 // size, mtime
)

// paxRecordLen is the length of the PAX record "LEN KEY=VALUE\n" for a key
// and a value of vlen bytes.
func paxRecordLen(key string, vlen int) int64 {
	base := len(key) + vlen + 3 // ' ', '=', '\n'
	n := base + len(strconv.Itoa(base))
	if m := base + len(strconv.Itoa(n)); m != n { // the length's digits made it a digit longer
		n = m
	}
	return int64(n)
}

// paxTimeLen bounds the length of a PAX time value ("SEC.NNNNNNNNN").
const paxTimeLen = 30

// header is what archive/tar writes for one header: the PAX records it
// would hold and whether it needs them (USTAR cannot hold the entry).
type header struct {
	pax      int64
	needsPAX bool
}

func (h *header) name(key string, name nameLen, canSplit bool) {
	if name.paxRecord() {
		h.pax += paxRecordLen(key, name.n)
	}
	if !name.fitsUSTAR(canSplit) {
		h.needsPAX = true
	}
}

// bytes: the header block and, if needed, the PAX header before it.
func (h header) bytes() int64 {
	if !h.needsPAX || h.pax == 0 {
		return blockSize
	}
	return 2*blockSize + padded(h.pax)
}

// entry is what the node n written as name takes.
func (s *treeSizer) entry(n *union.Node, name nameLen) int64 {
	var h header
	h.name("path", name, true)
	e := n.Entry
	if e == nil { // a directory no layer stores: mode, owner and mtime 0 fit the header
		return h.bytes()
	}
	if e.Mtime != 0 || e.MtimeSec < 0 || e.MtimeSec > maxOctal11 {
		h.pax += paxRecordLen("mtime", paxTimeLen)
		h.needsPAX = true
	}
	for _, id := range []uint32{e.UID, e.GID} {
		if id > maxOctal7 {
			h.pax += paxRecordLen("uid", 10)
			h.needsPAX = true
		}
	}
	for _, x := range e.Xattrs {
		h.pax += paxRecordLen("SCHILY.xattr."+x.Name, len(x.Value))
		h.needsPAX = true
	}
	switch e.Type {
	case tarindex.TypeDir, tarindex.TypeChar, tarindex.TypeBlock, tarindex.TypeFifo:
		return h.bytes()
	case tarindex.TypeSymlink:
		h.name("linkpath", nameLen{}.plus(e.Linkname), false)
		return h.bytes()
	}
	// A regular file; a second name of a multiply linked one is a hardlink
	// to its first.
	if n.Nlink > 1 {
		if first, ok := s.links[n.Ino]; ok {
			h.name("linkpath", first, false)
			return h.bytes()
		}
		s.links[n.Ino] = name
	}
	if e.Sparse != nil {
		return sparseBytes(e, name, h.pax)
	}
	if e.Size > maxOctal11 {
		h.pax += paxRecordLen("size", 20)
		h.needsPAX = true
	}
	return h.bytes() + padded(e.Size)
}

// sparseBytes is what writeSparse writes for the sparse file e: a PAX
// header (the real name and size, and the sparse records besides others),
// then the member: the map of fragments and their blocks.
func sparseBytes(e *tarindex.Entry, name nameLen, others int64) int64 {
	frags := blockFragments(e.Sparse, e.Size)
	var data int64
	for _, f := range frags {
		data += f.Length
	}
	pax := others + paxRecordLen("GNU.sparse.major", 1) + paxRecordLen("GNU.sparse.minor", 1) +
		paxRecordLen("GNU.sparse.name", name.n) + paxRecordLen("GNU.sparse.realsize", 20) +
		paxRecordLen("mtime", paxTimeLen) + paxRecordLen("uid", 10) + paxRecordLen("gid", 10) + paxRecordLen("size", 20)
	smap := int64(2*len(frags)+3) * 21 // the count, offset and length lines, the final (size, 0)
	return header{pax: pax, needsPAX: true}.bytes() + padded(smap) + padded(data)
}

// padded is n rounded up to whole blocks.
func padded(n int64) int64 { return (n + blockSize - 1) / blockSize * blockSize }

// outputBytes is about what the output of layers takes: the blobs it
// holds and a little for its headers, config and manifests.
func outputBytes(layers []outLayer) int64 {
	n := int64(64 << 10)
	for _, l := range layers {
		if !l.omit {
			n += l.size + 2*blockSize
		}
	}
	return n
}
