package cow

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

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
// comes first), through c.metaStore. The origin is not its business
// (recordOrigin).
func (c *View) apply(t target, m meta) error {
	isLink := m.mode&unix.S_IFMT == unix.S_IFLNK
	if err := c.metaStore.setOwnerMode(t, m); err != nil {
		return err
	}
	for _, x := range m.xattrs {
		if !holdsXattr(m.mode, x.Name) {
			continue
		}
		if err := c.metaStore.setxattr(t, x.Name, []byte(x.Value), 0, isLink); err != nil {
			return fmt.Errorf("setting xattr %s: %w", x.Name, err)
		}
	}
	if m.mtime != nil {
		if err := t.utimes([]unix.Timespec{*m.mtime, *m.mtime}); err != nil {
			return fmt.Errorf("setting times: %w", err)
		}
	}
	return nil
}

// holdsXattr tells whether Linux lets an entry of the given mode hold the
// xattr called name: user.* only on regular files and directories. A tar
// entry may carry one on a symlink, fifo or device; a copy-up leaves it
// out, as GNU tar's extraction does, rather than fail every change of
// such an entry (and every rename of its directory) with EPERM.
func holdsXattr(mode uint32, name string) bool {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR:
		return true
	}
	return !strings.HasPrefix(name, "user.")
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
// lower node n, all or nothing: the copy is made unnamed (a regular file,
// O_TMPFILE) or under a temporary name (tempPrefix), given its
// attributes and origin, and only then linked or renamed to name. A
// failure removes it; a crash leaves at most a temporary name.
func (c *View) materialize(dirfd int, name string, n *union.Node, withData bool) error {
	m := nodeMeta(n)
	if m.mode&unix.S_IFMT == unix.S_IFREG {
		return c.materializeFile(dirfd, name, n, withData)
	}
	tmp, err := c.createTemp(dirfd, func(tmp string) error {
		switch m.mode & unix.S_IFMT {
		case unix.S_IFDIR:
			return unix.Mkdirat(dirfd, tmp, 0o700)
		case unix.S_IFLNK:
			return unix.Symlinkat(n.Entry.Linkname, dirfd, tmp)
		default:
			return c.metaStore.mknod(dirfd, tmp, m.mode, m.rdev)
		}
	})
	if err != nil {
		return err
	}
	if err := c.completeTemp(dirfd, tmp, name, m); err != nil {
		removeTemp(dirfd, tmp)
		return err
	}
	return nil
}

// materializeFile is materialize of a regular file: written unnamed and
// linked in when complete.
func (c *View) materializeFile(dirfd int, name string, n *union.Node, withData bool) error {
	fd, err := unix.Openat(dirfd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := c.fillCopy(fd, n, withData); err != nil {
		return err
	}
	if err := unix.Linkat(unix.AT_FDCWD, procPath(fd, ""), dirfd, name, unix.AT_SYMLINK_FOLLOW); err != nil {
		return err
	}
	c.shareCopy(n, fd)
	return nil
}

// fillCopy makes the new unnamed upper file fd a copy of the lower regular
// file n: its content (unless withData is false), attributes and origin.
func (c *View) fillCopy(fd int, n *union.Node, withData bool) error {
	if withData {
		if err := c.copyData(fd, n); err != nil {
			return err
		}
	}
	m := nodeMeta(n)
	if err := c.apply(fdTarget(fd), m); err != nil {
		return err
	}
	if err := fdTarget(fd).setxattr(originXattr, []byte(strconv.FormatUint(m.origin, 10))); err != nil {
		return fmt.Errorf("recording the origin: %w", err)
	}
	return nil
}

// createTemp runs create with a temporary name in dirfd that is free, and
// returns that name.
func (c *View) createTemp(dirfd int, create func(tmp string) error) (string, error) {
	for {
		tmp := tempPrefix + strconv.Itoa(os.Getpid()) + "." + strconv.FormatUint(c.tempSeq.Add(1), 10)
		err := create(tmp)
		if !errors.Is(err, unix.EEXIST) {
			return tmp, err
		}
	}
}

// completeTemp gives the copy at tmp in dirfd the attributes and origin of
// m, and renames it to name, which must not exist.
func (c *View) completeTemp(dirfd int, tmp, name string, m meta) error {
	if err := c.applyNamed(dirfd, tmp, m); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, tmp, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if err := recordOrigin(dirfd, tmp, name, m.origin, &st); err != nil {
		return fmt.Errorf("recording the origin: %w", err)
	}
	err := unix.Renameat2(dirfd, tmp, dirfd, name, unix.RENAME_NOREPLACE)
	if err != nil && childOrigin(dirfd, name, st.Ino) != 0 {
		_ = removeChildOrigin(dirfd, name) // recorded for the copy, which goes
	}
	return err
}

// removeTemp removes what createTemp made at tmp in dirfd (a directory it
// made is still empty).
func removeTemp(dirfd int, tmp string) {
	if err := unix.Unlinkat(dirfd, tmp, 0); errors.Is(err, unix.EISDIR) {
		_ = unix.Unlinkat(dirfd, tmp, unix.AT_REMOVEDIR)
	}
}

// copyData writes n's content into fd, leaving the holes of sparse files
// as holes.
func (c *View) copyData(fd int, n *union.Node) error {
	e := n.Entry
	if e.Sparse == nil {
		// Slices of the layer's mapping; buf only for a compressed layer
		// read in place.
		buf := make([]byte, min(copyChunk, e.Size))
		for off := int64(0); off < e.Size; {
			data, err := c.tree.Bytes(n, off, len(buf), buf)
			if err != nil {
				return fmt.Errorf("reading %s from its layer: %w", n.Path(), err)
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
					if err := unix.Linkat(l.parent, l.name, pfd, al.name, 0); err != nil {
						return err
					}
					if !holdsUserXattrs(l.up.Mode) {
						moveChildOrigin(l.parent, l.name, pfd, al.name, true)
					}
					return nil
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
