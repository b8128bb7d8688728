package overlay

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/imgmount/imgmount/tarindex"
)

// Whiteout names from the OCI image spec (layer.md).
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."     // AUFS metadata; skipped
	opaqueMarker   = ".wh..wh..opq" // hides all lower children of its directory
)

// inode identifies one file's content: nodes that are hardlinks of one
// another point at the same inode.
type inode struct {
	layer int
	entry *tarindex.Entry
	links uint32
}

// BuildUnion stacks the image's layers into the tree a container runtime
// would unpack, applying whiteouts and opaque directories per the OCI spec.
//
// Each layer is applied in two passes. Whiteouts and opaque markers delete
// content of lower layers only, wherever they stand in the layer's tar, so
// they are applied first; then the layer's other entries are added in tar
// order (duplicates: the last wins, as extraction does).
func BuildUnion(img *Image) (*Tree, error) {
	b := newBuilder()
	t := &Tree{Layers: img.Layers, Hidden: make([]int64, len(img.Layers))}
	for i, l := range img.Layers {
		entries := l.TarIndex.Entries
		for j := range entries {
			e := &entries[j]
			dir, base := path.Split(e.Name)
			dir = strings.TrimSuffix(dir, "/")
			switch {
			case base == opaqueMarker:
				if n := b.lookup(dir); n != nil && n.IsDir() {
					b.clearKids(n)
				}
			case strings.HasPrefix(base, whiteoutMeta):
			case strings.HasPrefix(base, whiteoutPrefix):
				b.remove(path.Join(dir, base[len(whiteoutPrefix):]))
			}
		}
		for j := range entries {
			e := &entries[j]
			base := path.Base(e.Name)
			if strings.HasPrefix(base, whiteoutPrefix) {
				if base == opaqueMarker {
					// The marker implies its directory exists.
					b.ensureDir(path.Dir(e.Name))
				}
				continue
			}
			if err := b.add(i, e, false); err != nil {
				return nil, fmt.Errorf("layer %d (%s): %w", i, shortDigest(l.DiffID), err)
			}
		}
	}
	b.finish(t)
	// Hidden bytes: regular-file content stored in a layer that no union
	// path shows any more.
	visible := map[*tarindex.Entry]bool{}
	walk(t.Root, func(n *Node) {
		if n.Entry != nil {
			visible[n.Entry] = true
		}
	})
	for i, l := range img.Layers {
		for j := range l.TarIndex.Entries {
			e := &l.TarIndex.Entries[j]
			if e.Type == tarindex.TypeReg && !visible[e] && !strings.HasPrefix(path.Base(e.Name), whiteoutPrefix) {
				t.Hidden[i] += e.Size
			}
		}
	}
	return t, nil
}

// BuildLayersView returns a tree whose root holds one directory per layer,
// named NN-<first 12 hex digits of the diff_id>, each showing that layer's
// entries exactly as stored (whiteout files included, as the empty files
// they are). A hardlink whose target is not in its own layer is shown as the
// empty regular file the link entry itself is.
func BuildLayersView(img *Image) (*Tree, error) {
	b := newBuilder()
	width := 2
	if len(img.Layers) > 100 {
		width = 3
	}
	for i, l := range img.Layers {
		name := fmt.Sprintf("%0*d-%s", width, i, shortHex(l))
		sub := newBuilder()
		for j := range l.TarIndex.Entries {
			e := &l.TarIndex.Entries[j]
			if parent := sub.lookup(path.Dir(e.Name)); parent != nil && !parent.IsDir() &&
				strings.HasPrefix(path.Base(e.Name), whiteoutPrefix) {
				// A whiteout below a path this layer made a file (umoci writes
				// these when a directory becomes a file): the file is what the
				// layer stores there, so it is what the view shows.
				continue
			}
			if err := sub.add(i, e, true); err != nil {
				return nil, fmt.Errorf("layer %d (%s): %w", i, shortDigest(l.DiffID), err)
			}
		}
		sub.root.Name, sub.root.Parent = name, b.root
		b.root.kids[name] = sub.root
	}
	t := &Tree{Layers: img.Layers}
	b.finish(t)
	return t, nil
}

func shortHex(l *Layer) string {
	h := l.DiffID.Encoded()
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

type builder struct {
	root *Node
}

func newBuilder() *builder {
	return &builder{root: newDir("", nil)}
}

func newDir(name string, parent *Node) *Node {
	return &Node{Name: name, Parent: parent, Layer: -1, kids: map[string]*Node{}}
}

// lookup finds the node at a cleaned path ("." or "" is the root).
func (b *builder) lookup(p string) *Node {
	n := b.root
	if p == "." || p == "" {
		return n
	}
	for p != "" {
		var part string
		part, p, _ = strings.Cut(p, "/")
		if n = n.kids[part]; n == nil {
			return nil
		}
	}
	return n
}

// ensureDir returns the directory at p, creating missing parents. A
// non-directory standing where a directory is needed is replaced, as tar
// extraction of a later layer would do.
func (b *builder) ensureDir(p string) *Node {
	n := b.root
	if p == "." || p == "" {
		return n
	}
	for p != "" {
		var part string
		part, p, _ = strings.Cut(p, "/")
		c := n.kids[part]
		if c == nil || !c.IsDir() {
			c = newDir(part, n)
			n.kids[part] = c
		}
		n = c
	}
	return n
}

func (b *builder) remove(p string) {
	if n := b.lookup(p); n != nil && n.Parent != nil {
		delete(n.Parent.kids, n.Name)
	}
}

func (b *builder) clearKids(n *Node) {
	n.kids = map[string]*Node{}
}

// add places entry e of layer i at its path. In raw mode (per-layer view)
// whiteout files are ordinary entries and a hardlink to something outside
// the layer shows as the stored entry.
func (b *builder) add(i int, e *tarindex.Entry, raw bool) error {
	if e.Name == "." {
		if e.Type == tarindex.TypeDir {
			b.root.Layer, b.root.Entry = i, e
		}
		return nil
	}
	target := e
	ino := &inode{layer: i, entry: e}
	if e.Type == tarindex.TypeHardlink {
		t := b.lookup(e.Linkname)
		switch {
		case t != nil && !t.IsDir():
			// Link to the target as it stands now: later changes to the
			// target path replace its node, not this shared inode.
			ino, target = t.inode, t.Entry
			i = t.Layer
		case raw:
			stored := *e
			stored.Type, stored.Size, stored.Linkname = tarindex.TypeReg, 0, ""
			target = &stored
			ino = &inode{layer: i, entry: target}
		case t == nil:
			return fmt.Errorf("hardlink %q: target %q does not exist", e.Name, e.Linkname)
		default:
			return fmt.Errorf("hardlink %q: target %q is a directory", e.Name, e.Linkname)
		}
	}
	dir, base := path.Split(e.Name)
	parent := b.ensureDir(strings.TrimSuffix(dir, "/"))
	if old := parent.kids[base]; old != nil && old.IsDir() && target.Type == tarindex.TypeDir {
		// Directory over directory: attributes replaced, children merged.
		old.Layer, old.Entry = i, target
		return nil
	}
	n := &Node{Name: base, Parent: parent, Layer: i, Entry: target, inode: ino}
	if target.Type == tarindex.TypeDir {
		n.kids = map[string]*Node{}
	}
	parent.kids[base] = n
	return nil
}

// finish turns the build maps into sorted children, then numbers inodes in
// a sorted walk (deterministic for a given image) and counts links.
func (b *builder) finish(t *Tree) {
	t.Root = b.root
	var next uint64
	walk(b.root, func(n *Node) {
		if n.kids != nil {
			n.children = make([]*Node, 0, len(n.kids))
			for _, c := range n.kids {
				n.children = append(n.children, c)
			}
			sort.Slice(n.children, func(a, c int) bool { return n.children[a].Name < n.children[c].Name })
			n.kids = nil
		}
		if n.inode != nil {
			n.inode.links++
		}
	})
	inos := map[*inode]uint64{}
	walk(b.root, func(n *Node) {
		if n.IsDir() {
			next++
			n.Ino = next
			n.Nlink = 2
			for _, c := range n.children {
				if c.IsDir() {
					n.Nlink++
				}
			}
			return
		}
		if inos[n.inode] == 0 {
			next++
			inos[n.inode] = next
		}
		n.Ino, n.Nlink = inos[n.inode], n.inode.links
	})
	walk(b.root, func(n *Node) { n.inode = nil })
}

// walk visits n and its descendants depth first, parents before children.
// It builds children lists on the way when called during finish.
func walk(n *Node, fn func(*Node)) {
	fn(n)
	for _, c := range n.children {
		walk(c, fn)
	}
}
