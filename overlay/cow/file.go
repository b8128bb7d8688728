package cow

import (
	"fmt"
	"io"
	"strings"
	"sync/atomic"

	"github.com/imgmount/imgmount/overlay/union"
	"github.com/imgmount/imgmount/tarindex"
	"golang.org/x/sys/unix"
)

// File is an open regular file of the writable view.
type File interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Stat() (Stat, error)
	Sync(dataOnly bool) error
	Allocate(off, size int64, mode uint32) error
	// Seek answers SEEK_DATA and SEEK_HOLE.
	Seek(off int64, whence int) (int64, error)
	Close() error
}

// Slicer is implemented by files whose content can be handed out as a
// slice of a mapping (lower files that are not sparse).
type Slicer interface {
	Slice(off int64, size int) ([]byte, bool)
}

// Open opens the regular file at path. flags are open(2) flags: opening for
// writing, or with O_TRUNC, copies a lower file up first (without its data
// when truncating).
func (c *View) Open(path string, flags int) (File, error) {
	writing := flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0
	if writing {
		c.beginChange()
		defer c.mu.Unlock()
	} else {
		c.mu.RLock()
		defer c.mu.RUnlock()
	}
	l, err := c.resolveExisting(path)
	if err != nil {
		return nil, err
	}
	defer l.close()
	if l.isDir() {
		return nil, unix.EISDIR
	}
	if l.up == nil && !writing {
		return c.openLower(l.low), nil
	}
	if err := c.copyUp(l, flags&unix.O_TRUNC == 0); err != nil {
		return nil, err
	}
	flags &^= unix.O_CREAT | unix.O_EXCL | unix.O_DIRECT
	// Opened for reading and writing even when only reading is asked:
	// the kernel shares one backing file among all opens of an inode.
	fd, rw, err := c.openUpper(l.parent, l.name, flags, 0)
	if err != nil {
		return nil, err
	}
	return &upperFile{c: c, fd: fd, rw: rw}, nil
}

// lowerFile is a lower file opened for reading. The open lower files of
// one lower file (all its names, when it is hardlinked) share an upper file
// once there is one, and read and stat it from then on, as if they shared
// an inode: its copy-up (copyUp), or, when the file is gone from the view
// before that, the private copy that a change of its attributes through an
// open descriptor makes (fchmod, fsetxattr...; privateCopy).
type lowerFile struct {
	c  *View
	n  *union.Node
	sh *lowerShared
}

// lowerShared is what the open lowerFiles of one lower file share.
type lowerShared struct {
	refs int // under View.lowerMu
	// private is the upper file they read, once there is one (stored
	// under View.mu).
	private atomic.Pointer[upperFile]
}

// openLower opens the lower file n.
func (c *View) openLower(n *union.Node) *lowerFile {
	c.lowerMu.Lock()
	defer c.lowerMu.Unlock()
	sh := c.lowerOpen[n.Ino]
	if sh == nil {
		sh = &lowerShared{}
		c.lowerOpen[n.Ino] = sh
	}
	sh.refs++
	return &lowerFile{c: c, n: n, sh: sh}
}

func (f *lowerFile) Close() error {
	f.c.lowerMu.Lock()
	defer f.c.lowerMu.Unlock()
	if f.sh.refs--; f.sh.refs > 0 {
		return nil
	}
	delete(f.c.lowerOpen, f.n.Ino)
	if p := f.sh.private.Load(); p != nil {
		return p.Close()
	}
	return nil
}

// shareCopy hands the upper file fd, the copy of the lower file n just
// made, to the open lowerFiles of n, if any (they have none yet). Called
// under the write lock.
func (c *View) shareCopy(n *union.Node, fd int) {
	c.lowerMu.Lock()
	defer c.lowerMu.Unlock()
	sh := c.lowerOpen[n.Ino]
	if sh == nil || sh.private.Load() != nil {
		return
	}
	if dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0); err == nil {
		sh.private.Store(&upperFile{c: c, fd: dup, rw: true})
	}
}

func (f *lowerFile) ReadAt(p []byte, off int64) (int, error) {
	if pf := f.sh.private.Load(); pf != nil {
		return pf.ReadAt(p, off)
	}
	return f.c.tree.ReadAt(f.n, p, off)
}

func (f *lowerFile) WriteAt(p []byte, off int64) (int, error) {
	return 0, unix.EBADF
}

func (f *lowerFile) Stat() (Stat, error) {
	if pf := f.sh.private.Load(); pf != nil {
		return pf.Stat()
	}
	return union.NodeStat(f.n), nil
}

func (f *lowerFile) Sync(bool) error                          { return nil }
func (f *lowerFile) Allocate(off, size int64, m uint32) error { return unix.EBADF }

func (f *lowerFile) Slice(off int64, size int) ([]byte, bool) {
	if f.sh.private.Load() != nil {
		return nil, false
	}
	return f.c.tree.Slice(f.n, off, size)
}

func (f *lowerFile) Seek(off int64, whence int) (int64, error) {
	if pf := f.sh.private.Load(); pf != nil {
		return pf.Seek(off, whence)
	}
	return union.SeekSparse(f.n, off, whence)
}

// privateCopy gives the lower file f, gone from the view, its private
// copy, unless it has an upper file already: an unnamed upper file
// (O_TMPFILE, never linked in, so no layer carries it) with the lower
// file's content, attributes and origin. Called under the write lock.
func (c *View) privateCopy(f *lowerFile) (*upperFile, error) {
	if pf := f.sh.private.Load(); pf != nil {
		return pf, nil
	}
	fd, err := unix.Openat(c.root, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("upper directory %s: a private copy of %s: %w", c.dir, f.n.Path(), err)
	}
	defer unix.Close(fd)
	if err := c.fillCopy(fd, f.n, true); err != nil {
		return nil, fmt.Errorf("upper directory %s: a private copy of %s: %w", c.dir, f.n.Path(), err)
	}
	c.shareCopy(f.n, fd)
	return f.sh.private.Load(), nil
}

// openEntry is an upper entry reached through an open file: an upper file
// (upperFile), or a fifo or device kept (keptFile).
type openEntry interface {
	target() target
	Stat() (Stat, error)
}

// openTarget is the upper entry that a change made through the open file
// f goes to: f itself when it is an upper file or a kept entry; for a
// lower file, nil when the view still shows it at path (the change goes by
// the path, which copies it up), else its private copy.
func (c *View) openTarget(path string, f File) (openEntry, error) {
	switch f := f.(type) {
	case *upperFile:
		return f, nil
	case *keptFile:
		return f, nil
	case *lowerFile:
		if pf := f.sh.private.Load(); pf != nil {
			return pf, nil
		}
		if l, err := c.resolve(path); err == nil {
			shown := l.up == nil && l.low == f.n
			l.close()
			if shown {
				return nil, nil
			}
		}
		pf, err := c.privateCopy(f)
		if err != nil || pf == nil {
			return nil, err // a nil *upperFile is no nil openEntry
		}
		return pf, nil
	}
	return nil, nil
}

// keptFile is a fifo or device removed from the view while the kernel may
// have it open (it opens them itself, never asking the mount): an O_PATH
// descriptor of the upper entry, through which a descriptor open on it
// still reads and changes its attributes (fstat, fchmod...), as on any
// filesystem. Keep makes one.
type keptFile struct {
	fd  int    // O_PATH
	ino uint64 // its inode number in the view
}

// Keep gives, for the fifo or device at path, a File that stays that entry
// once it is removed or replaced (Unlink, Rename): an O_PATH descriptor of
// its upper entry, or, for one only in the lower tree, of a private copy
// (made under a temporary name in the upper directory and unlinked again:
// nothing of it is left there). For anything else it gives nil: the
// kernel opens regular files through the mount, which then has them.
func (c *View) Keep(path string) (File, error) {
	c.beginChange()
	defer c.mu.Unlock()
	l, err := c.resolveExisting(path)
	if err != nil {
		return nil, err
	}
	defer l.close()
	st, err := c.stat(l)
	if err != nil {
		return nil, err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO, unix.S_IFCHR, unix.S_IFBLK:
	default:
		return nil, nil
	}
	var fd int
	if l.up != nil {
		fd, err = unix.Openat(l.parent, l.name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	} else {
		fd, err = c.privateNode(l.low)
	}
	if err != nil {
		return nil, fmt.Errorf("upper directory %s: keeping %s: %w", c.dir, path, err)
	}
	return &keptFile{fd: fd, ino: st.Ino}, nil
}

// privateNode makes a private copy of the lower fifo or device n, and
// gives an O_PATH descriptor of it: made under a temporary name in the
// upper directory, given n's attributes, and unlinked again.
func (c *View) privateNode(n *union.Node) (fd int, err error) {
	m := nodeMeta(n)
	err = keepTimes(c.root, func() error {
		tmp, err := c.createTemp(c.root, func(tmp string) error { return c.metaStore.mknod(c.root, tmp, m.mode, m.rdev) })
		if err != nil {
			return err
		}
		defer removeTemp(c.root, tmp)
		if err := c.applyNamed(c.root, tmp, m); err != nil {
			return err
		}
		fd, err = unix.Openat(c.root, tmp, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		return err
	})
	return fd, err
}

func (f *keptFile) target() target { return opathTarget(f.fd) }

// Stat gives the kept entry's attributes: its own, or where it is an
// empty regular file standing for a fifo or device (an unprivileged
// mount), those its StatXattr records.
func (f *keptFile) Stat() (Stat, error) {
	t := f.target()
	st, err := t.stat()
	if err != nil {
		return Stat{}, err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		if v, err := t.getxattr(StatXattr); err == nil {
			applyOverride(&st, string(v))
		}
	}
	st.Ino = f.ino
	return st, nil
}

func (f *keptFile) ReadAt(p []byte, off int64) (int, error)   { return 0, unix.EBADF }
func (f *keptFile) WriteAt(p []byte, off int64) (int, error)  { return 0, unix.EBADF }
func (f *keptFile) Sync(bool) error                           { return nil }
func (f *keptFile) Allocate(off, size int64, m uint32) error  { return unix.EBADF }
func (f *keptFile) Seek(off int64, whence int) (int64, error) { return 0, unix.ESPIPE }
func (f *keptFile) Close() error                              { return unix.Close(f.fd) }

// upperFile is an open file of the upper directory.
type upperFile struct {
	c  *View
	fd int
	rw bool // opened for reading and writing
}

func (f *upperFile) target() target { return fdTarget(f.fd) }

// BackingFD gives the descriptor of an upper file opened for reading and
// writing, which the kernel may then read and write directly (FUSE
// passthrough); ok is false otherwise.
func (f *upperFile) BackingFD() (int, bool) { return f.fd, f.rw }

// Backer is implemented by files the kernel may use directly.
type Backer interface {
	BackingFD() (fd int, ok bool)
}

func (f *upperFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := unix.Pread(f.fd, p, off)
	if err == nil && n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, err
}

func (f *upperFile) WriteAt(p []byte, off int64) (int, error) { return unix.Pwrite(f.fd, p, off) }

func (f *upperFile) Stat() (Stat, error) {
	var st Stat
	if err := unix.Fstat(f.fd, &st); err != nil {
		return Stat{}, err
	}
	applyXattrs(fdTarget(f.fd), &st)
	return st, nil
}

func (f *upperFile) Sync(dataOnly bool) error {
	if dataOnly {
		return unix.Fdatasync(f.fd)
	}
	return unix.Fsync(f.fd)
}

func (f *upperFile) Allocate(off, size int64, mode uint32) error {
	return unix.Fallocate(f.fd, mode, off, size)
}

func (f *upperFile) Seek(off int64, whence int) (int64, error) {
	return unix.Seek(f.fd, off, whence)
}

func (f *upperFile) Close() error { return unix.Close(f.fd) }

// SetAttr says which attributes Setattr changes; nil leaves one alone.
// Times may carry unix.UTIME_NOW in Nsec.
type SetAttr struct {
	Mode         *uint32 // permission bits
	UID, GID     *uint32
	Size         *int64
	Atime, Mtime *unix.Timespec
}

// Setattr changes attributes of the entry at path, or of the open file f
// when given (which works after the path is gone, see openTarget),
// copying a lower entry up first.
func (c *View) Setattr(path string, f File, a SetAttr) (Stat, error) {
	c.beginChange()
	defer c.mu.Unlock()
	oe, err := c.openTarget(path, f)
	if err != nil {
		return Stat{}, err
	}
	if oe != nil {
		if err := c.setattr(oe.target(), a); err != nil {
			return Stat{}, err
		}
		return oe.Stat()
	}
	l, err := c.resolveExisting(path)
	if err != nil {
		return Stat{}, err
	}
	defer l.close()
	if err := c.copyUp(l, a.Size == nil || *a.Size != 0); err != nil {
		return Stat{}, err
	}
	err = c.withTarget(l, func(t target) error { return c.setattr(t, a) })
	if err == nil && l.parent < 0 {
		err = c.markRootChanged()
	}
	if err != nil {
		return Stat{}, err
	}
	var st unix.Stat_t
	if l.parent < 0 {
		err = unix.Fstat(c.root, &st)
	} else {
		err = unix.Fstatat(l.parent, l.name, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return Stat{}, err
	}
	l.up = &st
	return c.stat(l)
}

// withTarget runs fn on the upper entry at l, opened when it is a
// directory (fchown and friends refuse O_PATH descriptors).
func (c *View) withTarget(l *loc, fn func(target) error) error {
	if l.isDir() {
		fd, err := c.openUpperDir(l)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return fn(fdTarget(fd))
	}
	return fn(nameTarget(l.parent, l.name))
}

func (c *View) setattr(t target, a SetAttr) error {
	if a.Mode != nil || a.UID != nil || a.GID != nil {
		st, err := t.stat()
		if err != nil {
			return err
		}
		if err := c.metaStore.changeOwnerMode(t, &st, a); err != nil {
			return err
		}
	}
	if a.Size != nil {
		var err error
		if t.fd >= 0 {
			err = unix.Ftruncate(t.fd, *a.Size)
		} else {
			err = unix.Truncate(t.path(), *a.Size)
		}
		if err != nil {
			return err
		}
	}
	if a.Atime != nil || a.Mtime != nil {
		omit := unix.Timespec{Nsec: unix.UTIME_OMIT}
		ts := []unix.Timespec{omit, omit}
		if a.Atime != nil {
			ts[0] = *a.Atime
		}
		if a.Mtime != nil {
			ts[1] = *a.Mtime
		}
		if err := t.utimes(ts); err != nil {
			return err
		}
	}
	return nil
}

// Getxattr reads one extended attribute of the entry at path, or of the
// open file f when given (see Setattr).
func (c *View) Getxattr(path string, f File, name string) (value []byte, err error) {
	if IsPrivateXattr(name) {
		return nil, unix.ENODATA
	}
	get := func(t target) error {
		value, err = c.metaStore.getxattr(t, name)
		return err
	}
	getLower := func(n *union.Node) error {
		for _, x := range lowerXattrs(n) {
			if x.Name == name {
				value = []byte(x.Value)
				return nil
			}
		}
		return unix.ENODATA
	}
	err = c.readingXattrs(path, f, get, getLower)
	return value, err
}

// readingXattrs runs, under the read lock, fn on the upper entry at path,
// or fnLower on the lower one; with f given, on f's upper file or f's
// lower file.
func (c *View) readingXattrs(path string, f File, fn func(target) error, fnLower func(*union.Node) error) error {
	if f != nil {
		c.mu.RLock()
		defer c.mu.RUnlock()
		switch f := f.(type) {
		case *upperFile:
			return fn(f.target())
		case *keptFile:
			return fn(f.target())
		case *lowerFile:
			if pf := f.sh.private.Load(); pf != nil {
				return fn(pf.target())
			}
			return fnLower(f.n)
		}
		return unix.EBADF
	}
	return c.reading(path, func(l *loc) error {
		if l.up == nil {
			return fnLower(l.low)
		}
		return c.withTarget(l, fn)
	})
}

func lowerXattrs(n *union.Node) []tarindex.Xattr {
	if n.Entry == nil {
		return nil
	}
	return n.Entry.Xattrs
}

// Listxattr lists the names of the extended attributes of the entry at
// path, or of the open file f when given (see Setattr).
func (c *View) Listxattr(path string, f File) (names []string, err error) {
	list := func(t target) error {
		all, err := t.listxattr()
		for _, n := range all {
			switch {
			case strings.HasPrefix(n, XattrPrefix):
				names = append(names, n[len(XattrPrefix):])
			case !IsPrivateXattr(n):
				names = append(names, n)
			}
		}
		return err
	}
	listLower := func(n *union.Node) error {
		for _, x := range lowerXattrs(n) {
			names = append(names, x.Name)
		}
		return nil
	}
	err = c.readingXattrs(path, f, list, listLower)
	return names, err
}

// Setxattr sets an extended attribute (flags: XATTR_CREATE, XATTR_REPLACE)
// of the entry at path, or of the open file f when given (see Setattr).
func (c *View) Setxattr(path string, f File, name string, value []byte, flags int) error {
	if IsPrivateXattr(name) {
		return unix.EPERM
	}
	return c.changeXattr(path, f, func(t target, isLink bool) error {
		return c.metaStore.setxattr(t, name, value, flags, isLink)
	})
}

// Removexattr removes an extended attribute of the entry at path, or of
// the open file f when given (see Setattr).
func (c *View) Removexattr(path string, f File, name string) error {
	if IsPrivateXattr(name) {
		return unix.ENODATA
	}
	return c.changeXattr(path, f, func(t target, isLink bool) error {
		return c.metaStore.removexattr(t, name, isLink)
	})
}

func (c *View) changeXattr(path string, f File, fn func(t target, isLink bool) error) error {
	c.beginChange()
	defer c.mu.Unlock()
	oe, err := c.openTarget(path, f)
	if err != nil {
		return err
	}
	if oe != nil {
		return fn(oe.target(), false)
	}
	l, err := c.resolveExisting(path)
	if err != nil {
		return err
	}
	defer l.close()
	if err := c.copyUp(l, true); err != nil {
		return err
	}
	isLink := l.up.Mode&unix.S_IFMT == unix.S_IFLNK
	err = c.withTarget(l, func(t target) error { return fn(t, isLink) })
	if err == nil && l.parent < 0 {
		err = c.markRootChanged()
	}
	return err
}

// markRootChanged records that the root's own attributes were changed
// (rootChangedXattr), so that commit writes them.
func (c *View) markRootChanged() error {
	// c.root is an O_PATH descriptor, which fsetxattr refuses.
	if err := unix.Setxattr(procPath(c.root, "."), rootChangedXattr, []byte("1"), 0); err != nil {
		return fmt.Errorf("upper directory %s: marking its root changed: %w", c.dir, err)
	}
	return nil
}

// SyncPath makes the upper entry at path durable (fsync of a directory:
// the names in it). Entries only below need nothing.
func (c *View) SyncPath(path string, dataOnly bool) error {
	return c.reading(path, func(l *loc) error {
		if l.up == nil {
			return nil
		}
		return c.withTarget(l, func(t target) error {
			if t.fd >= 0 {
				return unix.Fsync(t.fd)
			}
			return nil // a symlink or device: nothing of it is buffered
		})
	})
}
