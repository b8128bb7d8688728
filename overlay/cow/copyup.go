package cow

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/imgmount/imgmount/overlay/union"
	"github.com/imgmount/imgmount/tarindex"
	"golang.org/x/sys/unix"
)

// meta is what an entry should look like.
type meta struct {
	mode     uint32 // S_IF* type and permission bits
	uid, gid uint32
	rdev     uint64
	xattrs   []tarindex.Xattr
	mtime    *unix.Timespec // nil: leave as created
	origin   uint64         // lower inode number, 0 for new entries
}

func nodeMeta(n *union.Node) meta {
	st := union.NodeStat(n)
	m := meta{mode: st.Mode, uid: st.Uid, gid: st.Gid, rdev: st.Rdev, origin: n.Ino, mtime: &st.Mtim}
	if n.Entry != nil {
		m.xattrs = n.Entry.Xattrs
	}
	return m
}

// apply gives a new upper entry its owner, mode, xattrs and times, in the
// order that keeps each (chown clears setuid bits and capabilities, so it
// comes first), through c.metaStore.
func (c *View) apply(t target, m meta) error {
	isLink := m.mode&unix.S_IFMT == unix.S_IFLNK
	if err := c.metaStore.setOwnerMode(t, m); err != nil {
		return err
	}
	for _, x := range m.xattrs {
		if err := c.metaStore.setxattr(t, x.Name, []byte(x.Value), 0, isLink); err != nil {
			return fmt.Errorf("setting xattr %s: %w", x.Name, err)
		}
	}
	if m.origin != 0 && !isLink {
		if err := t.setxattr(originXattr, []byte(strconv.FormatUint(m.origin, 10))); err != nil {
			return fmt.Errorf("recording the origin: %w", err)
		}
	}
	if m.mtime != nil {
		if err := t.utimes([]unix.Timespec{*m.mtime, *m.mtime}); err != nil {
			return fmt.Errorf("setting times: %w", err)
		}
	}
	return nil
}

// keepTimes runs fn, which adds an entry to the upper directory dirfd as
// part of a copy-up, and puts the directory's times back: copying up is
// not a change the view should show.
func keepTimes(dirfd int, fn func() error) error {
	var st unix.Stat_t
	if err := unix.Fstat(dirfd, &st); err != nil {
		return err
	}
	if err := fn(); err != nil {
		return err
	}
	return unix.UtimesNanoAt(unix.AT_FDCWD, procPath(dirfd, ""), []unix.Timespec{st.Atim, st.Mtim}, 0)
}

// upperDir returns an O_PATH descriptor (the caller closes it) of the upper
// directory at path, an existing directory of the view, copying it and its
// ancestors up from the lower tree where the upper lacks them.
func (c *View) upperDir(path string) (int, error) {
	fd, err := unix.Dup(c.root)
	if err != nil {
		return -1, err
	}
	low := c.tree.Root
	for _, comp := range splitPath(path) {
		low = lowerChild(low, comp)
		next, err := unix.Openat(fd, comp, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) {
			if low == nil || !low.IsDir() {
				unix.Close(fd)
				return -1, unix.ENOENT
			}
			err = keepTimes(fd, func() error { return c.materialize(fd, comp, low, true) })
			if err == nil {
				next, err = unix.Openat(fd, comp, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
		}
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("upper directory %s: copying up %s: %w", c.dir, path, err)
		}
		fd = next
	}
	return fd, nil
}

// parentFD gives the upper parent of l, copying it up if needed. The loc
// keeps ownership of the descriptor.
func (c *View) parentFD(l *loc) (int, error) {
	if l.parent >= 0 {
		return l.parent, nil
	}
	fd, err := c.upperDir(parentPath(l.path))
	if err != nil {
		return -1, err
	}
	l.parent, l.owned = fd, true
	return fd, nil
}

// copyUp makes the lower entry at l an upper one (data included unless
// withData is false, for an open with O_TRUNC). Hardlinked lower files are
// copied up once and every other name of theirs still showing the lower
// file is linked to the copy, so the names stay one file.
func (c *View) copyUp(l *loc, withData bool) error {
	if l.up != nil {
		return nil
	}
	pfd, err := c.parentFD(l)
	if err != nil {
		return err
	}
	n := l.low
	err = keepTimes(pfd, func() error { return c.materialize(pfd, l.name, n, withData) })
	if err != nil {
		return fmt.Errorf("upper directory %s: copying up %s: %w", c.dir, l.path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, l.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	l.up = &st
	if !n.IsDir() {
		l.low = nil
	}
	if n.Nlink > 1 && !n.IsDir() && n.Entry != nil && n.Entry.Type != tarindex.TypeSymlink {
		c.linkAliases(l, n)
	}
	return nil
}

// materialize creates name in the upper directory dirfd as a copy of the
// lower node n.
func (c *View) materialize(dirfd int, name string, n *union.Node, withData bool) error {
	m := nodeMeta(n)
	switch m.mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := unix.Mkdirat(dirfd, name, 0o700); err != nil {
			return err
		}
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return c.apply(fdTarget(fd), m)
	case unix.S_IFREG:
		// Written unnamed and linked in when complete: a crash never
		// leaves a partial copy under the real name.
		fd, err := unix.Openat(dirfd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if withData {
			if err := c.copyData(fd, n); err != nil {
				return err
			}
		}
		if err := c.apply(fdTarget(fd), m); err != nil {
			return err
		}
		return unix.Linkat(unix.AT_FDCWD, procPath(fd, ""), dirfd, name, unix.AT_SYMLINK_FOLLOW)
	case unix.S_IFLNK:
		if err := unix.Symlinkat(n.Entry.Linkname, dirfd, name); err != nil {
			return err
		}
		return c.apply(nameTarget(dirfd, name), m)
	default:
		if err := c.metaStore.mknod(dirfd, name, m.mode, m.rdev); err != nil {
			return err
		}
		return c.apply(nameTarget(dirfd, name), m)
	}
}

// copyData writes n's content into fd, leaving the holes of sparse files
// as holes.
func (c *View) copyData(fd int, n *union.Node) error {
	e := n.Entry
	if e.Sparse == nil {
		for off := int64(0); off < e.Size; {
			data, ok := c.tree.Slice(n, off, copyChunk)
			if !ok || len(data) == 0 {
				return fmt.Errorf("reading %s from its layer: %w", n.Path(), unix.EIO)
			}
			if err := pwriteAll(fd, data, off); err != nil {
				return err
			}
			off += int64(len(data))
		}
		return nil
	}
	buf := make([]byte, copyChunk)
	for _, f := range e.Sparse {
		for done := int64(0); done < f.Length; {
			k := min(int64(len(buf)), f.Length-done)
			m, err := c.tree.ReadAt(n, buf[:k], f.Logical+done)
			if m == 0 && err != nil {
				return fmt.Errorf("reading %s from its layer: %w", n.Path(), err)
			}
			if err := pwriteAll(fd, buf[:m], f.Logical+done); err != nil {
				return err
			}
			done += int64(m)
		}
	}
	return unix.Ftruncate(fd, e.Size)
}

func pwriteAll(fd int, p []byte, off int64) error {
	for len(p) > 0 {
		n, err := unix.Pwrite(fd, p, off)
		if err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// linkAliases links the other names of the lower hardlinked file n, where
// the view still shows the lower file, to l's fresh copy. Failures leave
// those names showing the lower file (a broken link, as overlayfs without
// its index gives), never an error for the caller.
func (c *View) linkAliases(l *loc, n *union.Node) {
	c.aliasOnce.Do(c.buildAliases)
	for _, a := range c.aliases[n.Ino] {
		p := a.Path()
		if p == l.path {
			continue
		}
		al, err := c.resolve(p)
		if err != nil {
			continue
		}
		if al.up == nil && al.low == a {
			if pfd, err := c.parentFD(al); err == nil {
				_ = keepTimes(pfd, func() error {
					return unix.Linkat(l.parent, l.name, pfd, al.name, 0)
				})
			}
		}
		al.close()
	}
}

func (c *View) buildAliases() {
	c.aliases = map[uint64][]*union.Node{}
	union.Walk(c.tree.Root, func(n *union.Node) {
		if n.Nlink > 1 && !n.IsDir() {
			c.aliases[n.Ino] = append(c.aliases[n.Ino], n)
		}
	})
}
