package union

import (
	"crypto/sha256"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/tarindex"
)

// ChangeKind says how a path differs between two trees; its value is the
// letter `imgmount diff` prints.
type ChangeKind byte

const (
	Added    ChangeKind = 'A' // only in the second tree
	Removed  ChangeKind = 'D' // only in the first tree
	Modified ChangeKind = 'M' // in both, with different attributes or content
)

// Diffs is the set of things that differ between the two nodes of a
// modified path.
type Diffs uint8

const (
	DiffType    Diffs = 1 << iota // file, dir, symlink, char, block, fifo
	DiffContent                   // regular files: size, then sha256
	DiffMode                      // permission bits (07777); not for symlinks
	DiffOwner                     // uid or gid
	DiffTarget                    // symlinks: the target as stored
	DiffDevice                    // char and block devices: major, minor
	DiffXattrs                    // names or values of extended attributes
)

// Change is one path that differs between two trees.
type Change struct {
	Path string // as Node.Path gives it: "." for the root, else "etc/passwd"
	Kind ChangeKind
	// A and B are the path's nodes in the first and second tree: A is nil
	// when the path was added, B when it was removed.
	A, B *Node
	What Diffs // Modified only: what differs
	// The names of the extended attributes only B has, only A has, and
	// both have with different values (DiffXattrs only), each sorted.
	XattrsAdded, XattrsRemoved, XattrsChanged []string
}

// Diff compares two trees (built by BuildUnion, over any layers) path by
// path and returns every path added, removed or modified from a to b,
// sorted by path, the root first. A removed or added directory brings
// every path beneath it; a path whose type changes is Modified, and the
// children of the directory it was or became are Removed or Added.
//
// Compared: the type, the permission bits (not a symlink's: Linux shows
// 0777), owner, xattrs, a symlink's target, a device's numbers, and a
// regular file's content: different sizes are different content;
// for equal sizes the content's sha256 decides, except that two nodes
// with the same entry of the same layer blob (the same diff_id) are equal
// without reading them. That trusts the diff_ids, which archive.Open
// checks whenever it has a cache directory. Not compared: modification
// times, and which paths are hardlinks of one another. Directories no
// layer stores compare as 0755 root:root.
func Diff(a, b *Tree) ([]Change, error) {
	d := &differ{a: a, b: b}
	d.node(a.Root, b.Root)
	if err := d.hashPending(); err != nil {
		return nil, err
	}
	out := d.out[:0]
	for _, c := range d.out {
		if c.Kind != Modified || c.What != 0 {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(x, y Change) int { return comparePaths(x.Path, y.Path) })
	return out, nil
}

// comparePaths orders paths as strings, the root (".") first.
func comparePaths(x, y string) int {
	switch {
	case x == y:
		return 0
	case x == ".":
		return -1
	case y == ".":
		return 1
	}
	return strings.Compare(x, y)
}

type differ struct {
	a, b *Tree
	out  []Change
	// pending are the indexes in out of changes whose content is still
	// to be compared by hash; sums holds the hashes, by entry.
	pending []int
	sums    map[*tarindex.Entry]*[sha256.Size]byte
	jobs    []hashJob
}

// hashJob is one entry to hash, with the tree whose layers hold it.
type hashJob struct {
	t   *Tree
	n   *Node
	sum [sha256.Size]byte
	err error
}

// node compares two nodes at the same path, then their children.
func (d *differ) node(na, nb *Node) {
	c := Change{Kind: Modified, A: na, B: nb}
	if pending := d.compare(&c); c.What != 0 || pending {
		c.Path = na.Path()
		if pending {
			d.pending = append(d.pending, len(d.out))
		}
		d.out = append(d.out, c)
	}
	switch da, db := na.IsDir(), nb.IsDir(); {
	case da && db:
		ca, cb := na.Children(), nb.Children()
		for len(ca) > 0 || len(cb) > 0 {
			switch {
			case len(cb) == 0 || len(ca) > 0 && ca[0].Name < cb[0].Name:
				d.subtree(ca[0], Removed)
				ca = ca[1:]
			case len(ca) == 0 || cb[0].Name < ca[0].Name:
				d.subtree(cb[0], Added)
				cb = cb[1:]
			default:
				d.node(ca[0], cb[0])
				ca, cb = ca[1:], cb[1:]
			}
		}
	case da:
		for _, ch := range na.Children() {
			d.subtree(ch, Removed)
		}
	case db:
		for _, ch := range nb.Children() {
			d.subtree(ch, Added)
		}
	}
}

// subtree records n and everything beneath it as added or removed.
func (d *differ) subtree(n *Node, kind ChangeKind) {
	Walk(n, func(m *Node) {
		c := Change{Path: m.Path(), Kind: kind}
		if kind == Added {
			c.B = m
		} else {
			c.A = m
		}
		d.out = append(d.out, c)
	})
}

// nodeAttrs are a node's compared attributes; a directory no layer
// stores is 0755 root:root.
func nodeAttrs(n *Node) (typ tarindex.Type, perm, uid, gid uint32) {
	if n.Entry == nil {
		return tarindex.TypeDir, 0o755, 0, 0
	}
	e := n.Entry
	return e.Type, e.Mode & 0o7777, e.UID, e.GID
}

// compare fills c.What for two nodes at one path, except for content of
// equal size, which it queues for hashing: pending says so.
func (d *differ) compare(c *Change) (pending bool) {
	ta, pa, ua, ga := nodeAttrs(c.A)
	tb, pb, ub, gb := nodeAttrs(c.B)
	if ta != tb {
		c.What |= DiffType
	}
	if pa != pb && ta != tarindex.TypeSymlink && tb != tarindex.TypeSymlink {
		c.What |= DiffMode
	}
	if ua != ub || ga != gb {
		c.What |= DiffOwner
	}
	ea, eb := c.A.Entry, c.B.Entry
	if ta == tb && ea != nil && eb != nil {
		switch ta {
		case tarindex.TypeReg:
			switch {
			case ea.Size != eb.Size:
				c.What |= DiffContent
			case ea.Size == 0 || sameStored(d.a, c.A, d.b, c.B):
			default:
				d.queue(d.a, c.A)
				d.queue(d.b, c.B)
				pending = true
			}
		case tarindex.TypeSymlink:
			if ea.Linkname != eb.Linkname {
				c.What |= DiffTarget
			}
		case tarindex.TypeChar, tarindex.TypeBlock:
			if ea.Devmajor != eb.Devmajor || ea.Devminor != eb.Devminor {
				c.What |= DiffDevice
			}
		}
	}
	c.XattrsAdded, c.XattrsRemoved, c.XattrsChanged = diffXattrs(ea, eb)
	if c.XattrsAdded != nil || c.XattrsRemoved != nil || c.XattrsChanged != nil {
		c.What |= DiffXattrs
	}
	return pending
}

// sameStored tells whether two regular-file nodes hold the same entry of
// the same layer blob: the same entry of one layer, or entries at the same
// place in two layers with one diff_id (identical tars, so identical
// content). Sparse entries are left to hashing.
func sameStored(ta *Tree, a *Node, tb *Tree, b *Node) bool {
	if a.Entry == b.Entry {
		return true
	}
	la, lb := ta.Layers[a.Layer], tb.Layers[b.Layer]
	if la.DiffID == "" || la.DiffID != lb.DiffID || la.TarIndex == nil || lb.TarIndex == nil ||
		len(la.TarIndex.Entries) == 0 || len(lb.TarIndex.Entries) == 0 ||
		a.Entry.Sparse != nil || b.Entry.Sparse != nil {
		return false
	}
	// Offsets are absolute in each layer's source (the outer tarball for
	// an uncompressed layer), so measure them from the first entry's.
	return a.Entry.Size == b.Entry.Size && a.Entry.Name == b.Entry.Name &&
		a.Entry.Offset-la.TarIndex.Entries[0].Offset == b.Entry.Offset-lb.TarIndex.Entries[0].Offset
}

// queue adds n's entry to the entries to hash, once.
func (d *differ) queue(t *Tree, n *Node) {
	if d.sums == nil {
		d.sums = map[*tarindex.Entry]*[sha256.Size]byte{}
	}
	if _, ok := d.sums[n.Entry]; ok {
		return
	}
	d.sums[n.Entry] = nil
	d.jobs = append(d.jobs, hashJob{t: t, n: n})
}

// hashPending hashes the queued entries, in parallel, and settles the
// pending content comparisons.
func (d *differ) hashPending() error {
	if len(d.jobs) == 0 {
		return nil
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(d.jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(d.jobs) {
					return
				}
				j := &d.jobs[i]
				j.sum, j.err = ContentSHA256(j.t, j.n)
			}
		}()
	}
	wg.Wait()
	for i := range d.jobs {
		j := &d.jobs[i]
		if j.err != nil {
			return j.err
		}
		d.sums[j.n.Entry] = &j.sum
	}
	for _, i := range d.pending {
		c := &d.out[i]
		if *d.sums[c.A.Entry] != *d.sums[c.B.Entry] {
			c.What |= DiffContent
		}
	}
	return nil
}

// ContentSHA256 hashes the content of the regular file n of t (holes of a
// sparse file read as zeros).
func ContentSHA256(t *Tree, n *Node) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	e := n.Entry
	if e == nil || e.Type != tarindex.TypeReg {
		return sum, fmt.Errorf("%s: not a regular file", n.Path())
	}
	h := sha256.New()
	const chunk = 4 << 20
	var buf []byte
	for off := int64(0); off < e.Size; {
		want := int(min(e.Size-off, chunk))
		p, ok := t.Slice(n, off, want)
		if !ok {
			if buf == nil {
				buf = make([]byte, chunk)
			}
			k, err := t.ReadAt(n, buf[:want], off)
			if k < want {
				return sum, archive.Errorf(archive.ErrCorruptLayer, "%s: reading %d bytes at %d: %v", n.Path(), want, off, err)
			}
			p = buf[:k]
		} else if len(p) < want {
			return sum, archive.Errorf(archive.ErrCorruptLayer, "%s: the layer ends %d bytes into the file's %d", n.Path(), off+int64(len(p)), e.Size)
		}
		h.Write(p)
		off += int64(len(p))
	}
	h.Sum(sum[:0])
	return sum, nil
}

// diffXattrs compares two entries' extended attributes (nil entries have
// none; of duplicate names the last counts).
func diffXattrs(a, b *tarindex.Entry) (added, removed, changed []string) {
	ma, mb := xattrMap(a), xattrMap(b)
	for name, va := range ma {
		vb, ok := mb[name]
		switch {
		case !ok:
			removed = append(removed, name)
		case va != vb:
			changed = append(changed, name)
		}
	}
	for name := range mb {
		if _, ok := ma[name]; !ok {
			added = append(added, name)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	slices.Sort(changed)
	return added, removed, changed
}

func xattrMap(e *tarindex.Entry) map[string]string {
	if e == nil || len(e.Xattrs) == 0 {
		return nil
	}
	m := make(map[string]string, len(e.Xattrs))
	for _, x := range e.Xattrs {
		m[x.Name] = x.Value
	}
	return m
}
