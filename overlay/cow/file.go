package cow

import (
	"fmt"
	"io"
	"strings"

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
		return &lowerFile{c: c, n: l.low}, nil
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

// lowerFile is a lower file opened for reading.
type lowerFile struct {
	c *View
	n *union.Node
}

func (f *lowerFile) ReadAt(p []byte, off int64) (int, error) { return f.c.tree.ReadAt(f.n, p, off) }
func (f *lowerFile) WriteAt(p []byte, off int64) (int, error) {
	return 0, unix.EBADF
}
func (f *lowerFile) Stat() (Stat, error)                      { return union.NodeStat(f.n), nil }
func (f *lowerFile) Sync(bool) error                          { return nil }
func (f *lowerFile) Allocate(off, size int64, m uint32) error { return unix.EBADF }
func (f *lowerFile) Close() error                             { return nil }
func (f *lowerFile) Slice(off int64, size int) ([]byte, bool) {
	return f.c.tree.Slice(f.n, off, size)
}

func (f *lowerFile) Seek(off int64, whence int) (int64, error) {
	return union.SeekSparse(f.n, off, whence)
}

// upperFile is an open file of the upper directory.
type upperFile struct {
	c  *View
	fd int
	rw bool // opened for reading and writing
}

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
// when given (which works after the path is gone), copying a lower entry
// up first.
func (c *View) Setattr(path string, f File, a SetAttr) (Stat, error) {
	c.beginChange()
	defer c.mu.Unlock()
	if uf, ok := f.(*upperFile); ok {
		t := fdTarget(uf.fd)
		if err := c.setattr(t, a); err != nil {
			return Stat{}, err
		}
		if c.isRoot(uf.fd) {
			if err := c.markRootChanged(); err != nil {
				return Stat{}, err
			}
		}
		return uf.Stat()
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
	st, err := t.stat()
	if err != nil {
		return err
	}
	if err := c.metaStore.changeOwnerMode(t, &st, a); err != nil {
		return err
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

// Getxattr reads one extended attribute.
func (c *View) Getxattr(path, name string) (value []byte, err error) {
	if IsPrivateXattr(name) {
		return nil, unix.ENODATA
	}
	err = c.reading(path, func(l *loc) error {
		if l.up == nil {
			for _, x := range lowerXattrs(l.low) {
				if x.Name == name {
					value = []byte(x.Value)
					return nil
				}
			}
			return unix.ENODATA
		}
		return c.withTarget(l, func(t target) error {
			value, err = c.metaStore.getxattr(t, name)
			return err
		})
	})
	return value, err
}

func lowerXattrs(n *union.Node) []tarindex.Xattr {
	if n.Entry == nil {
		return nil
	}
	return n.Entry.Xattrs
}

// Listxattr lists the names of the extended attributes.
func (c *View) Listxattr(path string) (names []string, err error) {
	err = c.reading(path, func(l *loc) error {
		if l.up == nil {
			for _, x := range lowerXattrs(l.low) {
				names = append(names, x.Name)
			}
			return nil
		}
		return c.withTarget(l, func(t target) error {
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
		})
	})
	return names, err
}

// Setxattr sets an extended attribute (flags: XATTR_CREATE, XATTR_REPLACE).
func (c *View) Setxattr(path, name string, value []byte, flags int) error {
	if IsPrivateXattr(name) {
		return unix.EPERM
	}
	return c.changeXattr(path, func(t target, isLink bool) error {
		return c.metaStore.setxattr(t, name, value, flags, isLink)
	})
}

// Removexattr removes an extended attribute.
func (c *View) Removexattr(path, name string) error {
	if IsPrivateXattr(name) {
		return unix.ENODATA
	}
	return c.changeXattr(path, func(t target, isLink bool) error {
		return c.metaStore.removexattr(t, name, isLink)
	})
}

func (c *View) changeXattr(path string, fn func(t target, isLink bool) error) error {
	c.beginChange()
	defer c.mu.Unlock()
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

// isRoot tells whether fd is open on the upper directory itself.
func (c *View) isRoot(fd int) bool {
	var a, b unix.Stat_t
	return unix.Fstat(fd, &a) == nil && unix.Fstat(c.root, &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino
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
