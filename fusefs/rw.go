package fusefs

import (
	"context"
	"io"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imgmount/imgmount/overlay/cow"
	"github.com/imgmount/imgmount/overlay/union"
	"golang.org/x/sys/unix"
)

// rwFS is what every node of a writable mount shares.
type rwFS struct {
	cow       *cow.View
	allowRoot bool
	owner     uint32
	// mountInfo answers getxattr(MountInfoXattr) on the root, so that
	// `imgmount commit MOUNTPOINT` can find the image and upper directory.
	mountInfo []byte
	// names makes a rename and go-fuse's move of the renamed node one
	// step for every operation that turns nodes into paths: they hold the
	// read side from computing a path to the end of the view's call (see
	// Rename). Without it, a call in a directory whose parent is being
	// renamed could resolve an old path: fail, or land in a new directory
	// made under the old name.
	names sync.RWMutex
}

// resolving holds the read side of names for one operation; call the
// result to release it.
func (f *rwFS) resolving() func() {
	f.names.RLock()
	return f.names.RUnlock
}

// moved releases the write side of names that Rename took, once go-fuse
// shows child as parent's child called name. go-fuse moves it in its tree
// right after Rename returns; until then the paths of child's subtree are
// the old ones. The wait is bounded in case the kernel's view differs.
func (f *rwFS) moved(child, parent *fs.Inode, name string) {
	defer f.names.Unlock()
	for deadline := time.Now().Add(time.Second); parent.GetChild(name) != child && time.Now().Before(deadline); {
		time.Sleep(10 * time.Microsecond)
	}
}

// MountInfoXattr is the xattr the root of a writable mount answers with
// Options.MountInfo. It is not listed, and nothing else uses the name.
const MountInfoXattr = "user.imgmount.mount"

// rwNode is the go-fuse node of a writable mount. It holds no state of its
// own but its open files: go-fuse keeps the tree of names the kernel
// knows, and every operation hands the node's current path to cow.View,
// which works out from the upper directory and the lower tree what is
// there. Once the node has no name left (unlinked, or replaced by a
// rename), its operations go to one of its open files: the kernel sends
// no file handle with fstat, fchmod, fchown, futimens or fsetxattr, but
// they must work on the open file (openFile). A fifo or device, which the
// kernel opens without asking the mount, is kept (cow.View.Keep) when its
// last name goes, in case it is open.
type rwNode struct {
	fs.Inode
	fsys *rwFS

	mu      sync.Mutex
	handles []*rwHandle // open files, in the order opened
	kept    cow.File    // the fifo or device removed, if it is one
}

var _ fs.NodeOnForgetter = (*rwNode)(nil)

// OnForget releases what the node kept: the kernel has forgotten it, so
// nothing is open on it any more.
func (n *rwNode) OnForget() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.kept != nil {
		n.kept.Close()
		n.kept = nil
	}
}

// keep keeps the fifo or device at path, the node's (nil: none known to
// the kernel) before a call that may remove it, and gives a function that
// takes the call's result: what was kept stays with the node if the call
// worked.
func (n *rwNode) keep(node *fs.Inode, path string) func(syscall.Errno) syscall.Errno {
	var kept cow.File
	var rn *rwNode
	if node != nil {
		switch node.StableAttr().Mode & syscall.S_IFMT {
		case syscall.S_IFIFO, syscall.S_IFCHR, syscall.S_IFBLK:
			rn, _ = node.Operations().(*rwNode)
		}
	}
	if rn != nil {
		kept, _ = n.fsys.cow.Keep(path)
	}
	return func(errno syscall.Errno) syscall.Errno {
		if kept == nil {
			return errno
		}
		if errno != 0 {
			kept.Close()
			return errno
		}
		rn.mu.Lock()
		if rn.kept != nil {
			rn.kept.Close()
		}
		rn.kept = kept
		rn.mu.Unlock()
		return errno
	}
}

// addHandle records an open file of n.
func (n *rwNode) addHandle(h *rwHandle) {
	h.node = n
	n.mu.Lock()
	n.handles = append(n.handles, h)
	n.mu.Unlock()
}

// onlyOpen tells whether h is n's only open file.
func (n *rwNode) onlyOpen(h *rwHandle) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.handles) == 1 && n.handles[0] == h
}

// dropHandle forgets an open file of n.
func (n *rwNode) dropHandle(h *rwHandle) {
	n.mu.Lock()
	n.handles = slices.DeleteFunc(n.handles, func(o *rwHandle) bool { return o == h })
	n.mu.Unlock()
}

// unlinked tells whether n has no name left in the mount.
func (n *rwNode) unlinked() bool {
	_, parent := n.Parent()
	return parent == nil && !n.IsRoot()
}

// openFile is the open file an operation on n goes to, nil to go by its
// path: the handle the kernel sent (f); else, while n has a name, an upper
// file of n open for reading and writing (the file at that name: renames
// and removals move names, never open files; going by its descriptor
// saves resolving the path, and tar sets a file's attributes while it
// still has it open); else, once n has no name left, any open file of n
// (cow.View makes them share their attributes). Call done when the
// operation is over: a handle the kernel did not send may be released
// meanwhile, and its Release waits for done before closing the file.
func (n *rwNode) openFile(f fs.FileHandle) (file cow.File, done func()) {
	if h, ok := f.(*rwHandle); ok {
		return h.f, func() {}
	}
	unlinked := n.unlinked()
	n.mu.Lock()
	defer n.mu.Unlock()
	borrow := func(h *rwHandle) (cow.File, func()) {
		h.borrowed.Add(1)
		return h.f, h.borrowed.Done
	}
	if !unlinked {
		for _, h := range n.handles {
			if b, ok := h.f.(cow.Backer); ok {
				if _, rw := b.BackingFD(); rw {
					return borrow(h)
				}
			}
		}
		return nil, func() {}
	}
	if len(n.handles) == 0 {
		if n.kept == nil {
			return nil, func() {}
		}
		return n.kept, func() {}
	}
	return borrow(n.handles[0])
}

var (
	_ fs.InodeEmbedder      = (*rwNode)(nil)
	_ fs.NodeLookuper       = (*rwNode)(nil)
	_ fs.NodeGetattrer      = (*rwNode)(nil)
	_ fs.NodeSetattrer      = (*rwNode)(nil)
	_ fs.NodeOpendirHandler = (*rwNode)(nil)
	_ fs.NodeOpener         = (*rwNode)(nil)
	_ fs.NodeCreater        = (*rwNode)(nil)
	_ fs.NodeReadlinker     = (*rwNode)(nil)
	_ fs.NodeMkdirer        = (*rwNode)(nil)
	_ fs.NodeMknoder        = (*rwNode)(nil)
	_ fs.NodeSymlinker      = (*rwNode)(nil)
	_ fs.NodeLinker         = (*rwNode)(nil)
	_ fs.NodeUnlinker       = (*rwNode)(nil)
	_ fs.NodeRmdirer        = (*rwNode)(nil)
	_ fs.NodeRenamer        = (*rwNode)(nil)
	_ fs.NodeGetxattrer     = (*rwNode)(nil)
	_ fs.NodeSetxattrer     = (*rwNode)(nil)
	_ fs.NodeListxattrer    = (*rwNode)(nil)
	_ fs.NodeRemovexattrer  = (*rwNode)(nil)
	_ fs.NodeStatfser       = (*rwNode)(nil)
	_ fs.NodeAccesser       = (*rwNode)(nil)
	_ fs.NodeFsyncer        = (*rwNode)(nil)
)

// path is the node's path in the view ("" for the root). A node whose
// every name is gone gets a path that resolves to nothing.
func (n *rwNode) path() string { return n.Path(n.Root()) }

// pathFor is the path an operation on n hands cow.View with the open file
// file: "" for an upper file, which the view changes and reads by its
// descriptor alone (computing a path walks the tree and allocates it);
// n's path otherwise (a lower file is copied up by its path).
func (n *rwNode) pathFor(file cow.File) string {
	if _, ok := file.(cow.Backer); ok {
		return ""
	}
	return n.path()
}

// child is the view path of name within n.
func (n *rwNode) child(name string) string { return union.Join(n.path(), name) }

func (f *rwFS) denied(ctx context.Context) bool {
	if !f.allowRoot {
		return false
	}
	c, ok := fuse.FromContext(ctx)
	return ok && c.Uid != 0 && c.Uid != f.owner
}

func caller(ctx context.Context) cow.Owner {
	if c, ok := fuse.FromContext(ctx); ok {
		return cow.Owner{UID: c.Uid, GID: c.Gid}
	}
	return cow.Owner{}
}

// statToAttr converts the view's stat to FUSE attributes.
func statToAttr(st *cow.Stat, out *fuse.Attr) {
	*out = fuse.Attr{
		Ino:       st.Ino,
		Size:      uint64(st.Size),
		Blocks:    uint64(st.Blocks),
		Atime:     uint64(st.Atim.Sec),
		Atimensec: uint32(st.Atim.Nsec),
		Mtime:     uint64(st.Mtim.Sec),
		Mtimensec: uint32(st.Mtim.Nsec),
		Ctime:     uint64(st.Ctim.Sec),
		Ctimensec: uint32(st.Ctim.Nsec),
		Mode:      st.Mode,
		Nlink:     uint32(st.Nlink),
		Owner:     fuse.Owner{Uid: st.Uid, Gid: st.Gid},
		Rdev:      uint32(st.Rdev),
		Blksize:   uint32(st.Blksize),
	}
}

// entry registers the child node for a stat and fills the entry reply.
func (n *rwNode) entry(ctx context.Context, st *cow.Stat, out *fuse.EntryOut) *fs.Inode {
	statToAttr(st, &out.Attr)
	return n.NewInode(ctx, &rwNode{fsys: n.fsys}, fs.StableAttr{Mode: st.Mode & syscall.S_IFMT, Ino: st.Ino})
}

func (n *rwNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.fsys.denied(ctx) {
		return nil, syscall.EACCES
	}
	defer n.fsys.resolving()()
	st, err := n.fsys.cow.Lookup(n.child(name))
	if err != nil {
		return nil, toErrno(err)
	}
	return n.entry(ctx, &st, out), 0
}

func (n *rwNode) Access(ctx context.Context, mask uint32) syscall.Errno {
	// Only asked without default_permissions (unprivileged mounts), where
	// the mounting user may do anything inside the mount.
	if n.fsys.denied(ctx) {
		return syscall.EACCES
	}
	return 0
}

func (n *rwNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if n.fsys.denied(ctx) {
		return syscall.EACCES
	}
	defer n.fsys.resolving()()
	// go-fuse hands an open file of the node when the kernel sent none:
	// all of them show the node's file (a lower file opened before a
	// copy-up shows the copy).
	var st cow.Stat
	var err error
	file, done := n.openFile(f)
	defer done()
	if file != nil {
		st, err = file.Stat()
	} else {
		st, err = n.fsys.cow.Lookup(n.path())
	}
	if err != nil {
		return toErrno(err)
	}
	statToAttr(&st, &out.Attr)
	return 0
}

func (n *rwNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.fsys.denied(ctx) {
		return syscall.EACCES
	}
	defer n.fsys.resolving()()
	var a cow.SetAttr
	if m, ok := in.GetMode(); ok {
		a.Mode = &m
	}
	if u, ok := in.GetUID(); ok {
		a.UID = &u
	}
	if g, ok := in.GetGID(); ok {
		a.GID = &g
	}
	if s, ok := in.GetSize(); ok {
		sz := int64(s)
		a.Size = &sz
	}
	a.Atime = setTime(in.Valid, fuse.FATTR_ATIME, fuse.FATTR_ATIME_NOW, in.Atime, in.Atimensec)
	a.Mtime = setTime(in.Valid, fuse.FATTR_MTIME, fuse.FATTR_MTIME_NOW, in.Mtime, in.Mtimensec)
	file, done := n.openFile(f)
	defer done()
	st, err := n.fsys.cow.Setattr(n.pathFor(file), file, a)
	if err != nil {
		return toErrno(err)
	}
	statToAttr(&st, &out.Attr)
	return 0
}

func setTime(valid, bit, nowBit uint32, sec uint64, nsec uint32) *unix.Timespec {
	switch {
	case valid&bit == 0:
		return nil
	case valid&nowBit != 0:
		return &unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	return &unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
}

func (n *rwNode) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if n.fsys.denied(ctx) {
		return nil, 0, syscall.EACCES
	}
	return &rwDirHandle{node: n}, 0, 0
}

// listDir lists the directory n as it is now, "." and ".." first.
func (n *rwNode) listDir() ([]fuse.DirEntry, error) {
	unlock := n.fsys.resolving()
	ents, err := n.fsys.cow.ReadDir(n.path())
	unlock()
	if err != nil {
		return nil, err
	}
	self := n.StableAttr().Ino
	parent := self
	if _, p := n.Parent(); p != nil {
		parent = p.StableAttr().Ino
	}
	list := make([]fuse.DirEntry, 0, len(ents)+2)
	list = append(list, fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: self}, fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: parent})
	for _, e := range ents {
		list = append(list, fuse.DirEntry{Name: e.Name, Mode: e.Mode, Ino: e.Ino})
	}
	return list, nil
}

func (n *rwNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if n.fsys.denied(ctx) {
		return nil, 0, syscall.EACCES
	}
	defer n.fsys.resolving()()
	f, err := n.fsys.cow.Open(n.path(), int(flags))
	if err != nil {
		return nil, 0, toErrno(err)
	}
	// Every change goes through this mount, so the kernel's pages stay
	// right between opens.
	h := &rwHandle{f: f}
	n.addHandle(h)
	return h, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *rwNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if n.fsys.denied(ctx) {
		return nil, nil, 0, syscall.EACCES
	}
	defer n.fsys.resolving()()
	f, st, err := n.fsys.cow.Create(n.child(name), int(flags), mode, caller(ctx))
	if err != nil {
		return nil, nil, 0, toErrno(err)
	}
	child := n.entry(ctx, &st, out)
	h := &rwHandle{f: f}
	child.Operations().(*rwNode).addHandle(h)
	return child, h, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *rwNode) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if n.fsys.denied(ctx) {
		return nil, syscall.EACCES
	}
	defer n.fsys.resolving()()
	t, err := n.fsys.cow.Readlink(n.path())
	if err != nil {
		return nil, toErrno(err)
	}
	return []byte(t), 0
}

func (n *rwNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.fsys.denied(ctx) {
		return nil, syscall.EACCES
	}
	defer n.fsys.resolving()()
	st, err := n.fsys.cow.Mkdir(n.child(name), mode, caller(ctx))
	if err != nil {
		return nil, toErrno(err)
	}
	return n.entry(ctx, &st, out), 0
}

func (n *rwNode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.fsys.denied(ctx) {
		return nil, syscall.EACCES
	}
	defer n.fsys.resolving()()
	st, err := n.fsys.cow.Mknod(n.child(name), mode, uint64(dev), caller(ctx))
	if err != nil {
		return nil, toErrno(err)
	}
	return n.entry(ctx, &st, out), 0
}

func (n *rwNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.fsys.denied(ctx) {
		return nil, syscall.EACCES
	}
	defer n.fsys.resolving()()
	st, err := n.fsys.cow.Symlink(target, n.child(name), caller(ctx))
	if err != nil {
		return nil, toErrno(err)
	}
	return n.entry(ctx, &st, out), 0
}

func (n *rwNode) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.fsys.denied(ctx) {
		return nil, syscall.EACCES
	}
	defer n.fsys.resolving()()
	t, ok := target.(*rwNode)
	if !ok {
		return nil, syscall.EXDEV
	}
	st, err := n.fsys.cow.Link(t.path(), n.child(name))
	if err != nil {
		return nil, toErrno(err)
	}
	return n.entry(ctx, &st, out), 0
}

func (n *rwNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if n.fsys.denied(ctx) {
		return syscall.EACCES
	}
	defer n.fsys.resolving()()
	path := n.child(name)
	done := n.keep(n.GetChild(name), path)
	return done(toErrno(n.fsys.cow.Unlink(path)))
}

func (n *rwNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	if n.fsys.denied(ctx) {
		return syscall.EACCES
	}
	defer n.fsys.resolving()()
	return toErrno(n.fsys.cow.Rmdir(n.child(name)))
}

func (n *rwNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if n.fsys.denied(ctx) {
		return syscall.EACCES
	}
	np, ok := newParent.(*rwNode)
	if !ok {
		return syscall.EXDEV
	}
	n.fsys.names.Lock() // released once go-fuse has moved the node (moved)
	child := n.GetChild(name)
	newPath := np.child(newName)
	done := func(errno syscall.Errno) syscall.Errno { return errno }
	if flags&unix.RENAME_EXCHANGE == 0 {
		done = n.keep(np.GetChild(newName), newPath) // what it replaces
	}
	errno := done(toErrno(n.fsys.cow.Rename(n.child(name), newPath, uint(flags))))
	if errno != 0 || child == nil {
		n.fsys.names.Unlock()
		return errno
	}
	go n.fsys.moved(child, np.EmbeddedInode(), newName)
	return 0
}

func (n *rwNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if n.fsys.denied(ctx) {
		return 0, syscall.EACCES
	}
	defer n.fsys.resolving()()
	var v []byte
	if attr == MountInfoXattr && n.IsRoot() && n.fsys.mountInfo != nil {
		v = n.fsys.mountInfo
	} else {
		var err error
		file, done := n.openFile(nil)
		defer done()
		if v, err = n.fsys.cow.Getxattr(n.pathFor(file), file, attr); err != nil {
			return 0, toErrno(err)
		}
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *rwNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	if n.fsys.denied(ctx) {
		return 0, syscall.EACCES
	}
	defer n.fsys.resolving()()
	file, done := n.openFile(nil)
	defer done()
	names, err := n.fsys.cow.Listxattr(n.pathFor(file), file)
	if err != nil {
		return 0, toErrno(err)
	}
	size := 0
	for _, s := range names {
		size += len(s) + 1
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	p := dest[:0]
	for _, s := range names {
		p = append(append(p, s...), 0)
	}
	return uint32(len(p)), 0
}

func (n *rwNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if n.fsys.denied(ctx) {
		return syscall.EACCES
	}
	defer n.fsys.resolving()()
	file, done := n.openFile(nil)
	defer done()
	return toErrno(n.fsys.cow.Setxattr(n.pathFor(file), file, attr, data, int(flags)))
}

func (n *rwNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if n.fsys.denied(ctx) {
		return syscall.EACCES
	}
	defer n.fsys.resolving()()
	file, done := n.openFile(nil)
	defer done()
	return toErrno(n.fsys.cow.Removexattr(n.pathFor(file), file, attr))
}

// Fsync makes an entry durable; go-fuse sends directories' fsync here.
func (n *rwNode) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	if h, ok := f.(*rwHandle); ok {
		return h.Fsync(ctx, flags)
	}
	defer n.fsys.resolving()()
	return toErrno(n.fsys.cow.SyncPath(n.path(), flags&1 != 0))
}

func (n *rwNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	if n.fsys.denied(ctx) {
		return syscall.EACCES
	}
	st, err := n.fsys.cow.Statfs()
	if err != nil {
		return toErrno(err)
	}
	*out = fuse.StatfsOut{
		Blocks: st.Blocks, Bfree: st.Bfree, Bavail: st.Bavail,
		Files: st.Files, Ffree: st.Ffree,
		Bsize: uint32(st.Bsize), Frsize: uint32(st.Frsize), NameLen: uint32(st.Namelen),
	}
	return 0
}

// rwHandle is an open file of a writable mount.
type rwHandle struct {
	f    cow.File
	node *rwNode // whose open file it is
	// borrowed counts the operations on node using f without the kernel
	// having sent this handle (openFile); Release waits for them.
	borrowed sync.WaitGroup
}

var (
	_ fs.FileReader    = (*rwHandle)(nil)
	_ fs.FileWriter    = (*rwHandle)(nil)
	_ fs.FileFsyncer   = (*rwHandle)(nil)
	_ fs.FileFlusher   = (*rwHandle)(nil)
	_ fs.FileReleaser  = (*rwHandle)(nil)
	_ fs.FileLseeker   = (*rwHandle)(nil)
	_ fs.FileAllocater = (*rwHandle)(nil)
	_ fs.FileGetattrer = (*rwHandle)(nil)

	_ fs.FilePassthroughFder = (*rwHandle)(nil)
)

// PassthroughFd lets the kernel read and write an upper file directly
// (FUSE passthrough, Linux 6.9+, root only; go-fuse falls back to Read and
// Write where it cannot register the file).
//
// go-fuse asks only while no file of the node is open by passthrough, so
// any other open file of it is in the kernel's cached mode, which a
// passthrough open may not join: the kernel fails that open with EIO. So
// a file opened for writing while the same file is open for reading (a
// lower file being copied up, or a read whose RELEASE is still on its way
// behind asynchronous reads) is served through Read and Write instead.
func (h *rwHandle) PassthroughFd() (int, bool) {
	b, ok := h.f.(cow.Backer)
	if !ok || !h.node.onlyOpen(h) {
		return 0, false
	}
	return b.BackingFD()
}

func (h *rwHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if s, ok := h.f.(cow.Slicer); ok {
		if data, ok := s.Slice(off, len(dest)); ok {
			return fuse.ReadResultData(data), 0
		}
	}
	n, err := h.f.ReadAt(dest, off)
	if err != nil && err != io.EOF {
		return nil, readErrno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (h *rwHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n, err := h.f.WriteAt(data, off)
	if err != nil {
		return uint32(n), toErrno(err)
	}
	return uint32(n), 0
}

func (h *rwHandle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	st, err := h.f.Stat()
	if err != nil {
		return toErrno(err)
	}
	statToAttr(&st, &out.Attr)
	return 0
}

func (h *rwHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return toErrno(h.f.Sync(flags&1 != 0))
}

// Flush is close(2) of one descriptor: the data is already in the upper
// file, so there is nothing to do, and answering ENOSYS tells the kernel
// to stop sending FLUSH for the mount: one round trip fewer for every
// close (it does not need FLUSH for locks: the mount leaves them to the
// kernel).
func (h *rwHandle) Flush(ctx context.Context) syscall.Errno { return syscall.ENOSYS }

func (h *rwHandle) Release(ctx context.Context) syscall.Errno {
	h.node.dropHandle(h) // no operation borrows it from now on
	h.borrowed.Wait()
	return toErrno(h.f.Close())
}

func (h *rwHandle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	r, err := h.f.Seek(int64(off), int(whence))
	if err != nil {
		return 0, toErrno(err)
	}
	return uint64(r), 0
}

func (h *rwHandle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	return toErrno(h.f.Allocate(int64(off), int64(size), mode))
}

// rwDirHandle lists a directory as it was when first read, or when last
// rewound: a READDIR at offset 0 after others (rewinddir, lseek to 0)
// reads it again, as ext4 and overlayfs do. Listing at the first read,
// not at opendir, makes a rewinddir before any read show the directory as
// it is then too (go-fuse asks no Seekdir for it). Offsets are positions
// in the list.
type rwDirHandle struct {
	node   *rwNode
	ents   []fuse.DirEntry
	listed bool
	pos    int
}

// list reads the directory (again).
func (d *rwDirHandle) list() syscall.Errno {
	list, err := d.node.listDir()
	if err != nil {
		return toErrno(err)
	}
	d.ents, d.listed = list, true
	return 0
}

var (
	_ fs.FileReaddirenter = (*rwDirHandle)(nil)
	_ fs.FileSeekdirer    = (*rwDirHandle)(nil)
	_ fs.FileReleasedirer = (*rwDirHandle)(nil)
)

func (d *rwDirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if !d.listed {
		if errno := d.list(); errno != 0 {
			return nil, errno
		}
	}
	if d.pos >= len(d.ents) {
		return nil, 0
	}
	de := d.ents[d.pos]
	d.pos++
	de.Off = uint64(d.pos)
	return &de, 0
}

// Seekdir is asked by go-fuse only for a READDIR at another offset than
// where the last one ended.
func (d *rwDirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off == 0 || !d.listed {
		if errno := d.list(); errno != 0 {
			return errno
		}
	}
	if off > uint64(len(d.ents)) {
		return syscall.EINVAL
	}
	d.pos = int(off)
	return 0
}

func (d *rwDirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {}
