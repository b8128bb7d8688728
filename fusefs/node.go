package fusefs

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imgmount/imgmount/overlay/union"
	"github.com/imgmount/imgmount/tarindex"
)

// fsys is what every node of one mount shares.
type fsys struct {
	tree     *union.Tree
	prefetch *prefetcher
	// allow_root: only root and owner may use the mount.
	allowRoot bool
	owner     uint32

	statfsOnce sync.Once
	statfs     fuse.StatfsOut
}

// node is the go-fuse node type for every path of the mount. It wraps the
// tree node that gives its attributes and content. Hardlinked paths share
// one Inode (go-fuse keys inodes by StableAttr.Ino), and with it the node
// of whichever path was looked up first: attributes and content are the
// same for all of them.
type node struct {
	fs.Inode
	fsys *fsys
	n    *union.Node
	// pushed: for a file, its content is in the kernel's cache or on its
	// way there; for a directory, its small files were pushed (prefetch.go).
	pushed atomic.Bool
	access atomic.Pointer[fileAccess] // a big file's reads, once it has any
}

func newRoot(tree *union.Tree, mo mountOpts, owner uint32) *node {
	return &node{fsys: &fsys{tree: tree, allowRoot: mo.allowRoot, owner: owner}, n: tree.Root}
}

// The interfaces node implements; the compiler checks the list.
var (
	_ fs.InodeEmbedder      = (*node)(nil)
	_ fs.NodeLookuper       = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeReaddirer      = (*node)(nil)
	_ fs.NodeGetattrer      = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeFlusher        = (*node)(nil)
	_ fs.NodeReader         = (*node)(nil)
	_ fs.NodeLseeker        = (*node)(nil)
	_ fs.NodeReadlinker     = (*node)(nil)
	_ fs.NodeGetxattrer     = (*node)(nil)
	_ fs.NodeListxattrer    = (*node)(nil)
	_ fs.NodeStatfser       = (*node)(nil)

	// Read-only: these answer EROFS rather than the ENOSYS/ENOTSUP
	// go-fuse gives for operations a node does not implement.
	_ fs.NodeSetattrer     = (*node)(nil)
	_ fs.NodeCreater       = (*node)(nil)
	_ fs.NodeTmpfiler      = (*node)(nil)
	_ fs.NodeMkdirer       = (*node)(nil)
	_ fs.NodeMknoder       = (*node)(nil)
	_ fs.NodeUnlinker      = (*node)(nil)
	_ fs.NodeRmdirer       = (*node)(nil)
	_ fs.NodeRenamer       = (*node)(nil)
	_ fs.NodeSymlinker     = (*node)(nil)
	_ fs.NodeLinker        = (*node)(nil)
	_ fs.NodeSetxattrer    = (*node)(nil)
	_ fs.NodeRemovexattrer = (*node)(nil)
	_ fs.NodeWriter        = (*node)(nil)
	_ fs.NodeAllocater     = (*node)(nil)
)

// denied tells whether allow_root turns the caller away.
func (f *fsys) denied(ctx context.Context) bool {
	if !f.allowRoot {
		return false
	}
	c, ok := fuse.FromContext(ctx)
	return ok && c.Uid != 0 && c.Uid != f.owner
}

// typeBits gives the S_IF* bits of a tree node.
func typeBits(n *union.Node) uint32 { return union.NodeStat(n).Mode & syscall.S_IFMT }

// fillAttr sets out from the tree node's entry.
func fillAttr(n *union.Node, out *fuse.Attr) {
	st := union.NodeStat(n)
	statToAttr(&st, out)
}

func (n *node) newChild(ctx context.Context, c *union.Node) *fs.Inode {
	return n.NewInode(ctx, &node{fsys: n.fsys, n: c}, fs.StableAttr{Mode: typeBits(c), Ino: c.Ino})
}

// Lookup finds a child by name.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.fsys.denied(ctx) {
		return nil, syscall.EACCES
	}
	if !n.n.IsDir() {
		return nil, syscall.ENOTDIR
	}
	c := n.n.Lookup(name)
	if c == nil {
		return nil, syscall.ENOENT
	}
	fillAttr(c, &out.Attr)
	return n.newChild(ctx, c), 0
}

// Getattr reports the entry's attributes.
func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if n.fsys.denied(ctx) {
		return syscall.EACCES
	}
	fillAttr(n.n, &out.Attr)
	return 0
}

// OpendirHandle opens a directory for listing. The listing never changes,
// so the kernel may keep it (FOPEN_CACHE_DIR).
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if n.fsys.denied(ctx) {
		return nil, 0, syscall.EACCES
	}
	if !n.n.IsDir() {
		return nil, 0, syscall.ENOTDIR
	}
	return &dirHandle{n: n.n}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// Readdir lists a directory (go-fuse uses OpendirHandle's handle instead;
// this serves callers of the DirStream API).
func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	if n.fsys.denied(ctx) {
		return nil, syscall.EACCES
	}
	if !n.n.IsDir() {
		return nil, syscall.ENOTDIR
	}
	return &dirHandle{n: n.n}, 0
}

// Open answers ENOSYS: files need no handle here, and the kernel then
// stops sending OPEN and RELEASE for the mount (FUSE's no-open mode) and
// keeps file pages between opens (FOPEN_KEEP_CACHE is its default then):
// two round trips fewer for every file opened. The kernel refuses writes
// itself (the mount is read-only), and lookups already turned away whom
// allow_root shuts out.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return nil, 0, syscall.ENOSYS
}

// Flush answers ENOSYS so that the kernel stops sending FLUSH on close:
// there is nothing to flush.
func (n *node) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}

// Read serves content as a slice of the layer's mapping (no copy), or, for
// sparse files, assembled into dest.
func (n *node) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	e := n.n.Entry
	if e == nil || e.Type == tarindex.TypeDir {
		return nil, syscall.EISDIR
	}
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= e.Size || len(dest) == 0 {
		return fuse.ReadResultData(nil), 0
	}
	data, err := n.fsys.tree.Bytes(n.n, off, len(dest), dest)
	if err != nil {
		// A truncated layer, or a compressed span that no longer decodes.
		return nil, readErrno(err)
	}
	if p := n.fsys.prefetch; p != nil && e.Sparse == nil {
		p.read(n, off, len(data))
	}
	return fuse.ReadResultData(data), 0
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the sparse map (a file that
// is not sparse is all data).
func (n *node) Lseek(ctx context.Context, f fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	r, err := union.SeekSparse(n.n, int64(min(off, 1<<63-1)), int(whence))
	if err != nil {
		return 0, toErrno(err)
	}
	return uint64(r), 0
}

// Readlink gives a symlink's target as stored.
func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if n.fsys.denied(ctx) {
		return nil, syscall.EACCES
	}
	e := n.n.Entry
	if e == nil || e.Type != tarindex.TypeSymlink {
		return nil, syscall.EINVAL
	}
	return []byte(e.Linkname), 0
}

// Getxattr reads one extended attribute stored with the entry. With dest
// too small it answers the size needed and ERANGE.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if n.fsys.denied(ctx) {
		return 0, syscall.EACCES
	}
	if e := n.n.Entry; e != nil {
		for _, x := range e.Xattrs {
			if x.Name != attr {
				continue
			}
			if len(dest) < len(x.Value) {
				return uint32(len(x.Value)), syscall.ERANGE
			}
			return uint32(copy(dest, x.Value)), 0
		}
	}
	return 0, fs.ENOATTR
}

// Listxattr lists the names of the entry's extended attributes, each
// followed by a NUL. With dest too small it answers the size needed and
// ERANGE.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if n.fsys.denied(ctx) {
		return 0, syscall.EACCES
	}
	e := n.n.Entry
	if e == nil {
		return 0, 0
	}
	size := 0
	for _, x := range e.Xattrs {
		size += len(x.Name) + 1
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	p := dest[:0]
	for _, x := range e.Xattrs {
		p = append(append(p, x.Name...), 0)
	}
	return uint32(len(p)), 0
}

// Statfs reports the tree's size and inode count; nothing is free.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	if n.fsys.denied(ctx) {
		return syscall.EACCES
	}
	n.fsys.statfsOnce.Do(n.fsys.computeStatfs)
	*out = n.fsys.statfs
	return 0
}

func (f *fsys) computeStatfs() {
	const bsize = 4096
	var bytes int64
	var files, maxIno uint64
	seen := map[uint64]bool{} // hardlinked inodes, counted once
	var walk func(*union.Node)
	walk = func(n *union.Node) {
		if n.Nlink > 1 && !n.IsDir() {
			if seen[n.Ino] {
				return
			}
			seen[n.Ino] = true
		}
		files++
		maxIno = max(maxIno, n.Ino)
		if n.Entry != nil && (n.Entry.Type == tarindex.TypeReg || n.Entry.Type == tarindex.TypeHardlink) {
			bytes += n.Entry.Size
		}
		for _, c := range n.Children() {
			walk(c)
		}
	}
	walk(f.tree.Root)
	f.statfs = fuse.StatfsOut{
		Blocks:  uint64((bytes + bsize - 1) / bsize),
		Files:   files,
		Bsize:   bsize,
		Frsize:  bsize,
		NameLen: 255,
	}
}

// Everything that would change the tree answers EROFS.

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}

func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno { return syscall.EROFS }

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno { return syscall.EROFS }

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return syscall.EROFS
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return syscall.EROFS
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno { return syscall.EROFS }

func (n *node) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	return 0, syscall.EROFS
}

func (n *node) Allocate(ctx context.Context, f fs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	return syscall.EROFS
}

// dirHandle lists one directory: ".", "..", then the children in name
// order. Offsets are positions in that list, so seeking is exact.
type dirHandle struct {
	n   *union.Node
	pos int
}

var (
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
	_ fs.FileReleasedirer = (*dirHandle)(nil)
	_ fs.DirStream        = (*dirHandle)(nil)
)

func (d *dirHandle) len() int { return 2 + len(d.n.Children()) }

func (d *dirHandle) HasNext() bool { return d.pos < d.len() }

func (d *dirHandle) Next() (fuse.DirEntry, syscall.Errno) {
	var de fuse.DirEntry
	switch d.pos {
	case 0:
		de = fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: d.n.Ino}
	case 1:
		p := d.n.Parent
		if p == nil {
			p = d.n
		}
		de = fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: p.Ino}
	default:
		c := d.n.Children()[d.pos-2]
		de = fuse.DirEntry{Name: c.Name, Mode: typeBits(c), Ino: c.Ino}
	}
	d.pos++
	de.Off = uint64(d.pos)
	return de, 0
}

func (d *dirHandle) Close() {}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if !d.HasNext() {
		return nil, 0
	}
	de, errno := d.Next()
	return &de, errno
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off > uint64(d.len()) {
		return syscall.EINVAL
	}
	d.pos = int(off)
	return 0
}

func (d *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {}
