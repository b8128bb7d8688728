// Package union builds the filesystem trees an image shows: the union of
// its layers, with whiteouts, opaque directories and hardlinks applied as
// the OCI image spec says (BuildUnion), the per-layer view
// (BuildLayersView), and what differs between two trees (Diff,
// ContentSHA256). Trees are immutable once built. A node's content is read
// through its layer (Tree.Bytes): slices of the mapping of an uncompressed
// layer (or of a decompressed copy), without a copy; a sparse file, or a
// compressed layer served in place (through archive.Layer.Content, that is
// tarindex's span cache), is read into a buffer. It knows nothing of FUSE
// or of edits (overlay/cow).
package union

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/tarindex"
)

// Node is one path of a filesystem tree built from the image (the union, or
// the per-layer view). Trees are immutable once built and safe for
// concurrent readers.
type Node struct {
	Name   string // base name; "" for the root
	Parent *Node  // nil for the root
	// Layer is the index (into Tree.Layers) of the layer whose entry gives
	// this node's attributes and content, or -1 for a directory that no
	// layer stores (an implied parent, the root, a per-layer view folder).
	Layer int
	// Entry holds attributes and content. For a hardlink it is the resolved
	// target entry as it stood when the link was made (Type is never
	// TypeHardlink here). Nil when Layer is -1.
	Entry *tarindex.Entry
	// Ino is stable for the life of the tree; nodes that are hardlinks of one
	// another share it.
	Ino   uint64
	Nlink uint32

	// Build-time state (see union.go): the layer stamp (layer+1 once the
	// layer being applied created or passed through this node; deadStamp
	// once removed). The inode hardlinked nodes share while the tree is
	// built is kept by the builder (treeBuilder.inodes): links are rare,
	// and a field would cost every node of a million-file tree 8 bytes.
	stamp int32

	children []*Node // sorted by Name once built; in insertion order, dead nodes included, while building
}

// Children returns the node's children sorted by name (nil for non-dirs).
func (n *Node) Children() []*Node { return n.children }

// Lookup returns the child called name, or nil.
func (n *Node) Lookup(name string) *Node {
	i := sort.Search(len(n.children), func(i int) bool { return n.children[i].Name >= name })
	if i < len(n.children) && n.children[i].Name == name {
		return n.children[i]
	}
	return nil
}

// Find returns the node at the slash path p ("." is the root), or nil.
func (t *Tree) Find(p string) *Node {
	n := t.Root
	if p == "." {
		return n
	}
	for _, name := range strings.Split(p, "/") {
		if n = n.Lookup(name); n == nil {
			return nil
		}
	}
	return n
}

// IsDir tells whether the node is a directory.
func (n *Node) IsDir() bool { return n.Entry == nil || n.Entry.Type == tarindex.TypeDir }

// Path returns the node's path relative to the root ("." for the root),
// built in one allocation: its cost is the path's length.
func (n *Node) Path() string {
	if n.Parent == nil {
		return "."
	}
	size := -1
	for m := n; m.Parent != nil; m = m.Parent {
		size += len(m.Name) + 1
	}
	b := make([]byte, size)
	end := size
	for m := n; m.Parent != nil; m = m.Parent {
		start := end - len(m.Name)
		copy(b[start:end], m.Name)
		if start > 0 {
			b[start-1] = '/'
		}
		end = start - 1
	}
	return string(b)
}

// Tree is a built filesystem tree over an image's layers.
type Tree struct {
	Root   *Node
	Layers []*archive.Layer
	// Hidden[i] is how many bytes of regular-file content in layer i are
	// not visible in the union because a later layer overwrote or deleted
	// them (what dive calls wasted space). Only the union fills it.
	Hidden []int64
	// Warnings name the entries left out because no Linux filesystem could
	// show them (a name or symlink target past the kernel's limits), as GNU
	// tar skips them with a message; the first hundred, then a count.
	Warnings []string
}

// Slice returns up to size bytes of n's content at off as a subslice of the
// layer's mapping (zero copy). ok is false for sparse files and for layers
// with no mapping (compressed, served in place), which must go through
// ReadAt.
func (t *Tree) Slice(n *Node, off int64, size int) (data []byte, ok bool) {
	if n.Entry == nil || n.Entry.Sparse != nil {
		return nil, false
	}
	l := t.Layers[n.Layer]
	if l.Data == nil {
		return nil, false
	}
	return n.Entry.Slice(l.Data, off, size), true
}

// Bytes returns size bytes of n's content at off (fewer at its end): a
// subslice of the layer's mapping when there is one (zero copy), else read
// into buf, which must hold size bytes (sparse files, compressed layers).
// Fewer bytes than the content holds means the layer is truncated: an
// error wrapping io.ErrUnexpectedEOF.
func (t *Tree) Bytes(n *Node, off int64, size int, buf []byte) ([]byte, error) {
	if n.Entry == nil || off >= n.Entry.Size {
		return nil, nil
	}
	want := int(min(int64(size), n.Entry.Size-off))
	if data, ok := t.Slice(n, off, want); ok {
		if len(data) < want {
			return nil, fmt.Errorf("%s: the layer ends %d bytes into the file: %w", n.Path(), off+int64(len(data)), io.ErrUnexpectedEOF)
		}
		return data, nil
	}
	m, err := t.ReadAt(n, buf[:want], off)
	if m < want {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%s: reading %d bytes at %d: %w", n.Path(), want, off, err)
	}
	return buf[:m], nil
}

// ReadAt copies n's content at off into p.
func (t *Tree) ReadAt(n *Node, p []byte, off int64) (int, error) {
	if n.Entry == nil {
		return 0, io.EOF
	}
	l := t.Layers[n.Layer]
	if l.Data != nil {
		return n.Entry.ReadAt(l.Data, p, off)
	}
	return n.Entry.ReadFrom(l.Content, p, off)
}
