package union

import (
	"fmt"
	"slices"
	"strings"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/tarindex"
)

// Whiteout names, as the OCI image spec defines them (layer.md, "Whiteouts":
// https://github.com/opencontainers/image-spec/blob/main/layer.md#whiteouts),
// plus the AUFS names Docker still writes. The upper directory of a writable
// mount (overlay/cow) uses the same names.
const (
	WhiteoutPrefix = ".wh."
	WhiteoutMeta   = ".wh..wh."      // AUFS metadata; skipped
	OpaqueMarker   = ".wh..wh..opq"  // hides all lower children of its directory
	AUFSLinkDir    = ".wh..wh.plnk/" // AUFS stash of hardlink targets (at the root)
)

// Join joins a slash-separated path relative to a tree's root ("" for the
// root itself) and a name.
func Join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// deadStamp marks a node removed from the tree being built.
const deadStamp = -1

// inode is what hardlinked nodes share while the tree is built.
type inode struct {
	links uint32 // live union paths sharing it
	ino   uint64 // 0 until numbered
}

// plnkFile is a regular file of a layer's AUFS hardlink stash.
type plnkFile struct {
	entry *tarindex.Entry
	ino   inode
}

// BuildUnion stacks the image's layers into the tree a container runtime gets
// by extracting them in order (OCI image-spec layer.md; `umoci unpack` is the
// oracle). Each layer's entries are applied in tar order:
//
//   - `.wh.<name>` deletes <name>, with its subtree, from lower layers only:
//     nodes this layer created (or passed through, as parents of its entries)
//     survive wherever the whiteout stands in the tar, and the removal
//     descends into them to delete the lower content beneath. A directory
//     that survives only as the parent of this layer's entries, with
//     attributes from a lower layer, loses those attributes (it becomes a
//     synthesized 0755 directory, as it would be had the whiteout come
//     first). `.wh..wh..opq` in D does the same to every child of D. Other
//     `.wh..wh.*` names are AUFS metadata and skipped, as is any entry below
//     a `.wh.*` directory, except that regular files under the root's
//     `.wh..wh.plnk/` are kept aside, as Docker does, for hardlinks that
//     point into it. Whiteouts never create anything, and no `.wh.*` name
//     ever appears in the union.
//   - Directory over directory replaces the attributes and merges the
//     children; anything else replaces the node (and its subtree). Within
//     one layer the last duplicate wins the same way.
//   - Missing parents are synthesized (0755, root-owned, Layer -1, Entry
//     nil); an existing directory is kept with its attributes. A symlink
//     standing where a parent must be is followed, within the root, as
//     tar -x, umoci and Docker follow it (`lib/x` over `lib -> usr/lib`
//     lands in usr/lib; a dangling link's target directories are made);
//     whiteouts and hardlink targets are resolved the same way, creating
//     nothing. Any other non-directory there (a file, a symlink to one or
//     a looping symlink) is replaced by a synthesized directory. The
//     per-layer view follows nothing: it shows each layer as stored.
//   - A hardlink resolves to its target as it stands when the link entry is
//     applied (lower layers, then this layer's earlier entries and
//     whiteouts: what extraction links to). The node takes the target's
//     entry and layer, and shares its inode with every node resolved to
//     the same entry; later changes to the target path do not affect it. A
//     missing or directory target is an error (errors.Is archive.ErrCorruptLayer).
//   - A "." directory entry gives the root its attributes (the last one
//     wins); "." entries of any other type are ignored.
//
// Inode numbers come from a depth-first walk in name order (root = 1), so
// they are the same for the same image. Tree.Hidden counts, per layer, the
// stored bytes of regular-file content no union path shows (for sparse
// files, the bytes of their data fragments).
func BuildUnion(img *archive.Image) (*Tree, error) {
	b := newTreeBuilder(false, nil)
	b.stepLimit = stepBudget(img)
	for i, l := range img.Layers {
		if err := b.applyLayer(i, l); err != nil {
			return nil, err
		}
	}
	b.kids, b.links = nil, nil
	t := &Tree{Root: b.root, Layers: img.Layers, Hidden: make([]int64, len(img.Layers)), Warnings: b.allWarnings()}
	visible := make([]int64, len(img.Layers))
	finishTree(t.Root, visible, b.inodes)
	for i, l := range img.Layers {
		var stored int64
		for j := range l.TarIndex.Entries {
			if e := &l.TarIndex.Entries[j]; e.Type == tarindex.TypeReg {
				stored += storedSize(e)
			}
		}
		t.Hidden[i] = stored - visible[i]
	}
	return t, nil
}

// treeBuilder applies layers to a tree under construction. Nodes are found
// by name in their directory (kids), so building allocates no path strings,
// and an entry is looked up in its own directory's small map, which stays
// in the CPU's cache while the tar goes through that directory: one map of
// every path in a million-file layer took half of a saved-index mount's
// time in cache misses. Removed nodes are marked dead rather than
// unlinked; they may linger in kids and in children lists until
// finishTree drops them.
type treeBuilder struct {
	root *Node
	kids map[*Node]map[string]*Node // a directory's children by name, the last made of each name
	raw  bool                       // per-layer view: entries as stored, no whiteout processing

	layer int   // index of the layer being applied
	stamp int32 // layer+1
	diff  string
	plnk  map[string]*plnkFile // this layer's AUFS hardlink stash, by base name

	lastDir    string // parent cache: tar entries come grouped by directory
	lastParent *Node
	lastPath   string // lastParent's real path (lastDir with symlinks followed)
	slab       []Node

	// Symlinked parents: each link's resolution is kept while no node has
	// been removed since (gen counts removals), and the steps spent
	// resolving are bounded for the whole image (stepBudget: a hostile
	// layer could otherwise make every entry resolve a long link again).
	links     map[*Node]resolvedLink
	gen       uint64
	steps     int
	stepLimit int

	warnings []string
	skipped  int // warnings not kept (past maxWarnings)

	// inodes holds the inode of every node that is a hardlink or the
	// target of one, until finishTree numbers them.
	inodes map[*Node]*inode
}

// resolvedLink is where a symlink to a directory led, at generation gen.
type resolvedLink struct {
	gen  uint64
	dir  *Node
	real string
}

// Limits the kernel puts on what a filesystem may show (NAME_MAX,
// PATH_MAX less the NUL): an entry past them could not be extracted, and
// would make its whole directory unreadable through FUSE.
const (
	maxNameLen   = 255
	maxTargetLen = 4095
	maxWarnings  = 100
)

// stepBudget bounds the path steps that resolving symlinked parents may
// take in building img's union: generous for real images (a resolution is
// remembered, so an entry under a symlinked directory costs a step or
// two), and one budget for the whole image, not one per layer, so that a
// tiny tarball listing one hostile layer thousands of times cannot take
// minutes either.
func stepBudget(img *archive.Image) int {
	total := 0
	for _, l := range img.Layers {
		total += len(l.TarIndex.Entries)
	}
	return 1<<22 + 64*total
}

// newTreeBuilder starts a tree. inodes, if not nil, is where hardlinked
// nodes' inodes are kept (builders whose trees finishTree numbers as one
// share it); else the builder makes its own.
func newTreeBuilder(raw bool, inodes map[*Node]*inode) *treeBuilder {
	if inodes == nil {
		inodes = map[*Node]*inode{}
	}
	b := &treeBuilder{raw: raw, kids: map[*Node]map[string]*Node{}, inodes: inodes}
	b.root = b.alloc()
	b.root.Layer = -1
	return b
}

// alloc hands out zeroed nodes from slabs: one allocation per 256 nodes.
func (b *treeBuilder) alloc() *Node {
	if len(b.slab) == 0 {
		b.slab = make([]Node, 256)
	}
	n := &b.slab[0]
	b.slab = b.slab[1:]
	return n
}

func (b *treeBuilder) applyLayer(i int, l *archive.Layer) error {
	b.layer, b.stamp, b.plnk = i, int32(i+1), nil
	b.diff = archive.ShortDigest(l.DiffID)
	b.lastDir, b.lastParent = "", nil
	entries := l.TarIndex.Entries
	for j := range entries {
		if err := b.add(&entries[j]); err != nil {
			return err
		}
	}
	b.plnk = nil
	return nil
}

// errorf is a layer the union cannot be built from; it matches
// archive.ErrCorruptLayer.
func (b *treeBuilder) errorf(format string, a ...any) error {
	return archive.Errorf(archive.ErrCorruptLayer, "layer %d (%s): %s", b.layer, b.diff, fmt.Sprintf(format, a...))
}

// warn records an entry left out of the tree.
func (b *treeBuilder) warn(format string, a ...any) {
	if len(b.warnings) == maxWarnings {
		b.skipped++
		return
	}
	b.warnings = append(b.warnings, fmt.Sprintf("layer %d (%s): ", b.layer, b.diff)+fmt.Sprintf(format, a...))
}

// allWarnings is what warn recorded, and how many more there were.
func (b *treeBuilder) allWarnings() []string {
	if b.skipped > 0 {
		return append(b.warnings, fmt.Sprintf("and %d more entries left out", b.skipped))
	}
	return b.warnings
}

// tooLong tells whether a path has a component longer than NAME_MAX.
func tooLong(p string) bool {
	for len(p) > maxNameLen {
		i := strings.IndexByte(p, '/')
		if i < 0 || i > maxNameLen {
			return true
		}
		p = p[i+1:]
	}
	return false
}

// nameTooLong tells whether e names (or, for a hardlink, links to) a path
// with a component no filesystem could show. A whiteout's own name may be
// longer by its prefix: it is never shown, and the name it deletes is what
// must fit (containerd and Docker write such whiteouts).
func (b *treeBuilder) nameTooLong(e *tarindex.Entry) bool {
	if e.Type == tarindex.TypeHardlink && tooLong(e.Linkname) {
		return true
	}
	dir, base := splitName(e.Name)
	if !b.raw && strings.HasPrefix(base, WhiteoutPrefix) {
		return tooLong(dir) || len(base)-len(WhiteoutPrefix) > maxNameLen
	}
	return tooLong(e.Name)
}

// splitName splits a cleaned name into its parent ("" for the root) and base.
func splitName(name string) (dir, base string) {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[:i], name[i+1:]
	}
	return "", name
}

// live returns the node at real path p ("" or "." is the root), or nil.
func (b *treeBuilder) live(p string) *Node {
	if p == "." {
		return b.root
	}
	n := b.root
	for p != "" {
		name, rest, _ := strings.Cut(p, "/")
		if n = b.kids[n][name]; n == nil {
			return nil
		}
		p = rest
	}
	if n.stamp == deadStamp {
		return nil
	}
	return n
}

// liveChild returns dir's child called name, or nil.
func (b *treeBuilder) liveChild(dir *Node, name string) *Node {
	if n := b.kids[dir][name]; n != nil && n.stamp != deadStamp {
		return n
	}
	return nil
}

// touch stamps n and its ancestors as passed through by the current layer.
// A stamped node's ancestors are always stamped, so it stops at the first.
func (b *treeBuilder) touch(n *Node) {
	for ; n != nil && n.stamp != b.stamp; n = n.Parent {
		n.stamp = b.stamp
	}
}

// kill removes n and its subtree. The parent cache goes too: it may hold
// a directory reached through a symlink n was, or was under.
func (b *treeBuilder) kill(n *Node) {
	b.lastParent = nil
	b.gen++
	n.stamp = deadStamp
	for _, c := range n.children {
		if c.stamp != deadStamp {
			b.kill(c)
		}
	}
}

// whiteout removes what lower layers put at n, keeping what the current
// layer put there (see BuildUnion).
func (b *treeBuilder) whiteout(n *Node) {
	if n.stamp != b.stamp {
		b.kill(n)
		return
	}
	if !n.IsDir() {
		return
	}
	if n.Layer != b.layer && n != b.root {
		n.Layer, n.Entry = -1, nil
	}
	for _, c := range n.children {
		if c.stamp != deadStamp {
			b.whiteout(c)
		}
	}
}

func (b *treeBuilder) newChild(parent *Node, name string, layer int, e *tarindex.Entry) *Node {
	n := b.alloc()
	n.Name, n.Parent, n.Layer, n.Entry, n.stamp = name, parent, layer, e, b.stamp
	parent.children = append(parent.children, n)
	m := b.kids[parent]
	if m == nil {
		m = map[string]*Node{}
		b.kids[parent] = m
	}
	m[name] = n
	return n
}

// parentDir returns the directory at dir and its real path (dir itself
// unless a symlink on the way was followed), creating it and its parents
// as needed, stamped by the current layer.
func (b *treeBuilder) parentDir(dir string) (*Node, string) {
	if p := b.lastParent; p != nil && p.stamp != deadStamp && b.lastDir == dir {
		b.touch(p)
		return p, b.lastPath
	}
	p, real := b.ensureDir(dir)
	b.lastDir, b.lastParent, b.lastPath = dir, p, real
	return p, real
}

// maxSymlinkHops bounds the symlinks followed for one path, as the
// kernel's ELOOP limit does.
const maxSymlinkHops = 40

// ensureDir walks dir from the root, creating missing directories,
// following symlinks that lead to directories (not in the per-layer view)
// and replacing other non-directories in the way. It returns the directory
// and its real path. Node keys are real paths, so a directory found at dir
// itself needs no walk.
func (b *treeBuilder) ensureDir(dir string) (*Node, string) {
	if n := b.live(dir); n != nil && n.IsDir() {
		b.touch(n)
		return n, dir
	}
	cur, real := b.root, ""
	b.touch(cur)
	hops, onPrefix := 0, true // onPrefix: real is still a prefix of dir
	for start := 0; start < len(dir); {
		end := strings.IndexByte(dir[start:], '/')
		if end < 0 {
			end = len(dir)
		} else {
			end += start
		}
		name := dir[start:end]
		start = end + 1
		p := dir[:end] // no allocation until a symlink is followed
		if !onPrefix {
			p = Join(real, name)
		}
		n := b.liveChild(cur, name)
		switch {
		case n == nil:
		case n.IsDir():
			b.touch(n)
			cur, real = n, p
			continue
		case !b.raw && isSymlink(n):
			if t, tp, missing, ok := b.followLink(n, cur, real, &hops); ok {
				b.touch(t)
				for _, m := range missing { // a dangling link: its target made
					tp = Join(tp, m)
					t = b.newChild(t, m, -1, nil)
				}
				cur, real, onPrefix = t, tp, false
				continue
			}
			b.kill(n) // looping, or not to a directory
		default:
			b.kill(n) // a non-directory where a directory must be
		}
		cur, real = b.newChild(cur, name, -1, nil), p
	}
	return cur, real
}

// lookupDir resolves rel from the directory dir (at real path dirPath)
// following symlinks within the root, as extraction does: an absolute rel
// or link target starts at the root, and ".." never climbs above it. It
// returns the deepest existing directory on the way, its real path, and
// the names still to create below it (mkdir -p through a dangling link, as
// umoci and Docker do). It creates nothing; ok is false when the path ends
// at or passes through a non-directory, or takes more than maxSymlinkHops
// links.
func (b *treeBuilder) lookupDir(dir *Node, dirPath, rel string, hops *int) (*Node, string, []string, bool) {
	if *hops++; *hops > maxSymlinkHops {
		return nil, "", nil, false
	}
	cur, real := dir, dirPath
	if strings.HasPrefix(rel, "/") {
		cur, real = b.root, ""
	}
	var missing []string
	for _, name := range strings.Split(rel, "/") {
		if b.steps++; b.steps > b.stepLimit {
			return nil, "", nil, false // add reports it
		}
		switch {
		case name == "" || name == ".":
			continue
		case name == ".." && len(missing) > 0:
			missing = missing[:len(missing)-1]
			continue
		case name == "..":
			if cur != b.root {
				cur = cur.Parent
				real, _ = splitName(real)
			}
			continue
		case strings.HasPrefix(name, WhiteoutPrefix):
			// Only a directory to be made could have such a name: no
			// whiteout name ever appears in the union, so the link is
			// not followed.
			return nil, "", nil, false
		case len(missing) > 0:
			missing = append(missing, name)
			continue
		}
		n := b.liveChild(cur, name)
		switch {
		case n == nil:
			missing = append(missing, name)
		case n.IsDir():
			cur, real = n, Join(real, name)
		case isSymlink(n):
			t, tp, more, ok := b.followLink(n, cur, real, hops)
			if !ok {
				return nil, "", nil, false
			}
			cur, real, missing = t, tp, more
		default:
			return nil, "", nil, false
		}
	}
	return cur, real, missing, true
}

// followLink resolves the symlink n, which stands in the directory cur at
// real path real, to a directory as lookupDir does. A resolution that
// needed nothing created is kept until a node is removed or a symlink
// added, either of which could change it.
func (b *treeBuilder) followLink(n, cur *Node, real string, hops *int) (*Node, string, []string, bool) {
	if r, ok := b.links[n]; ok && r.gen == b.gen {
		return r.dir, r.real, nil, true
	}
	t, tp, missing, ok := b.lookupDir(cur, real, n.Entry.Linkname, hops)
	if ok && len(missing) == 0 {
		if b.links == nil {
			b.links = map[*Node]resolvedLink{}
		}
		b.links[n] = resolvedLink{gen: b.gen, dir: t, real: tp}
	}
	return t, tp, missing, ok
}

// resolveDir finds the existing directory at dir, following symlinks on
// the way (lookupDir), for whiteouts and hardlink targets, which create
// nothing. It returns dir itself when no symlink stands in the way.
func (b *treeBuilder) resolveDir(dir string) (string, bool) {
	if n := b.live(dir); n != nil && n.IsDir() {
		return dir, true
	}
	hops := 0
	_, real, missing, ok := b.lookupDir(b.root, "", dir, &hops)
	return real, ok && len(missing) == 0
}

func isSymlink(n *Node) bool { return n.Entry != nil && n.Entry.Type == tarindex.TypeSymlink }

// underNonDir tells whether a non-directory stands at dir or above it.
func (b *treeBuilder) underNonDir(dir string) bool {
	for p := dir; p != ""; p, _ = splitName(p) {
		if n := b.live(p); n != nil {
			return !n.IsDir() // the deepest existing node decides: its parents are directories
		}
	}
	return false
}

// add applies one entry of the current layer.
func (b *treeBuilder) add(e *tarindex.Entry) error {
	if e.Name == "." {
		if e.Type == tarindex.TypeDir {
			b.root.Layer, b.root.Entry = b.layer, e
		}
		return nil
	}
	if b.nameTooLong(e) {
		b.warn("%.80q... left out: a name longer than %d bytes", e.Name, maxNameLen)
		return nil
	}
	if e.Type == tarindex.TypeSymlink && len(e.Linkname) > maxTargetLen {
		b.warn("%q left out: its symlink target is %d bytes, more than the kernel takes", e.Name, len(e.Linkname))
		return nil
	}
	dir, base := splitName(e.Name)
	if !b.raw {
		if strings.HasPrefix(base, WhiteoutPrefix) {
			b.applyWhiteout(dir, base)
			return nil
		}
		if strings.HasPrefix(dir, WhiteoutPrefix) || strings.Contains(dir, "/"+WhiteoutPrefix) {
			if e.Type == tarindex.TypeReg && strings.HasPrefix(e.Name, AUFSLinkDir) {
				if b.plnk == nil {
					b.plnk = map[string]*plnkFile{}
				}
				b.plnk[base] = &plnkFile{entry: e}
			}
			return nil
		}
	}
	if b.raw && strings.HasPrefix(base, WhiteoutPrefix) && b.underNonDir(dir) {
		// A whiteout file never displaces stored content, not even in
		// the per-layer view (extraction could not create it either).
		return nil
	}
	entry, layer := e, b.layer
	var ino *inode
	if e.Type == tarindex.TypeHardlink {
		target, tlayer, tino, err := b.linkTarget(e)
		switch {
		case err == nil:
			entry, layer, ino = target, tlayer, tino
		case b.raw:
			// The per-layer view shows a link it cannot resolve within
			// its layer as the empty regular file the link entry is.
			stored := *e
			stored.Type, stored.Size, stored.Sparse = tarindex.TypeReg, 0, nil
			entry = &stored
		default:
			return err
		}
	}
	parent, _ := b.parentDir(dir)
	if b.steps > b.stepLimit {
		return b.errorf("%q: resolving symlinked parents took more than the image's budget of %d steps", e.Name, b.stepLimit)
	}
	if old := b.liveChild(parent, base); old != nil {
		if old.IsDir() && entry.Type == tarindex.TypeDir {
			old.Layer, old.Entry = layer, entry // attributes replaced, children merged
			b.touch(old)
			return nil
		}
		b.kill(old)
	}
	n := b.newChild(parent, base, layer, entry)
	if ino != nil {
		b.inodes[n] = ino
	}
	if entry.Type == tarindex.TypeSymlink {
		b.gen++ // a new link can change where paths through its name lead
	}
	return nil
}

// linkTarget resolves hardlink e against the tree as it stands now.
func (b *treeBuilder) linkTarget(e *tarindex.Entry) (*tarindex.Entry, int, *inode, error) {
	if !b.raw && strings.HasPrefix(e.Linkname, AUFSLinkDir) {
		_, base := splitName(e.Linkname)
		if f := b.plnk[base]; f != nil {
			return f.entry, b.layer, &f.ino, nil // links to one stashed file share its inode
		}
	}
	t := b.live(e.Linkname)
	if t == nil && !b.raw {
		if dir, base := splitName(e.Linkname); dir != "" {
			if real, ok := b.resolveDir(dir); ok && real != dir {
				t = b.live(Join(real, base))
			}
		}
	}
	if t == nil {
		return nil, 0, nil, b.errorf("hardlink %q: target %q does not exist", e.Name, e.Linkname)
	}
	if t.IsDir() {
		return nil, 0, nil, b.errorf("hardlink %q: target %q is a directory", e.Name, e.Linkname)
	}
	ino := b.inodes[t]
	if ino == nil {
		ino = &inode{}
		b.inodes[t] = ino
	}
	return t.Entry, t.Layer, ino, nil
}

func (b *treeBuilder) applyWhiteout(dir, base string) {
	if dir != "" {
		real, ok := b.resolveDir(dir)
		if !ok {
			return // nothing there to white out
		}
		dir = real
	}
	if base == OpaqueMarker {
		if d := b.live(dir); d != nil && d.IsDir() {
			for _, c := range d.children {
				if c.stamp != deadStamp {
					b.whiteout(c)
				}
			}
		}
		return
	}
	if strings.HasPrefix(base, WhiteoutMeta) {
		return
	}
	name := base[len(WhiteoutPrefix):]
	if name == "" || name == "." || name == ".." {
		return
	}
	if d := b.live(dir); d != nil {
		if n := b.liveChild(d, name); n != nil {
			b.whiteout(n)
		}
	}
}

// finishTree drops dead nodes, sorts children by name, numbers inodes in a
// depth-first walk in name order (root = 1) and sets link counts. If
// visible is not nil it receives, per layer, the stored bytes of the
// regular files the tree shows (hardlinked content once). inodes are the
// inodes hardlinked nodes share (treeBuilder.inodes).
func finishTree(root *Node, visible []int64, inodes map[*Node]*inode) {
	total := compactTree(root, inodes)
	arena := make([]*Node, 0, total)
	var next uint64
	numberTree(root, &arena, &next, visible, inodes)
}

// compactTree drops dead children below n, sorts the rest and counts the
// links of shared inodes; it returns the number of live nodes below n.
func compactTree(n *Node, inodes map[*Node]*inode) int {
	kids := n.children[:0]
	for _, c := range n.children {
		if c.stamp == deadStamp {
			clearDead(c)
			continue
		}
		kids = append(kids, c)
	}
	clear(n.children[len(kids):])
	n.children = kids
	slices.SortFunc(kids, func(a, c *Node) int { return strings.Compare(a.Name, c.Name) })
	count := len(kids)
	for _, c := range kids {
		if c.IsDir() {
			count += compactTree(c, inodes)
		} else if ino := inodes[c]; ino != nil {
			ino.links++
		}
	}
	return count
}

// clearDead zeroes a removed subtree so that the slabs holding it keep
// nothing else alive.
func clearDead(n *Node) {
	for _, c := range n.children {
		clearDead(c)
	}
	*n = Node{stamp: deadStamp}
}

func numberTree(n *Node, arena *[]*Node, next *uint64, visible []int64, inodes map[*Node]*inode) {
	*next++
	n.Ino = *next
	n.stamp = 0
	start := len(*arena)
	*arena = append(*arena, n.children...)
	n.children = (*arena)[start:len(*arena):len(*arena)]
	n.Nlink = 2
	for _, c := range n.children {
		if c.IsDir() {
			n.Nlink++
			numberTree(c, arena, next, visible, inodes)
			continue
		}
		c.stamp = 0
		first := true
		if ino := inodes[c]; ino == nil {
			*next++
			c.Ino, c.Nlink = *next, 1
		} else {
			if ino.ino == 0 {
				*next++
				ino.ino = *next
			} else {
				first = false
			}
			c.Ino, c.Nlink = ino.ino, ino.links
		}
		if first && visible != nil && c.Entry.Type == tarindex.TypeReg {
			visible[c.Layer] += storedSize(c.Entry)
		}
	}
}

// storedSize is the number of content bytes an entry stores in its layer.
func storedSize(e *tarindex.Entry) int64 {
	if e.Sparse == nil {
		return e.Size
	}
	var n int64
	for _, f := range e.Sparse {
		n += f.Length
	}
	return n
}

// Walk visits n and its descendants depth first, parents before children,
// in name order.
func Walk(n *Node, fn func(*Node)) {
	fn(n)
	for _, c := range n.children {
		Walk(c, fn)
	}
}
