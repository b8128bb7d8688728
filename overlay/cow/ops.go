package cow

import (
	"errors"
	"fmt"
	"strings"

	"github.com/imgmount/imgmount/overlay/union"
	"golang.org/x/sys/unix"
)

// checkName refuses names the upper directory's format reserves.
func checkName(path string) error {
	i := strings.LastIndexByte(path, '/')
	if strings.HasPrefix(path[i+1:], union.WhiteoutPrefix) {
		return ErrReservedName
	}
	return nil
}

// prepareNew resolves path for creating an entry: it must not exist, and
// its upper parent is made ready.
func (c *View) prepareNew(path string) (*loc, int, error) {
	if err := checkName(path); err != nil {
		return nil, -1, err
	}
	l, err := c.resolve(path)
	if err != nil {
		return nil, -1, err
	}
	if l.exists() {
		l.close()
		return nil, -1, unix.EEXIST
	}
	pfd, err := c.parentFD(l)
	if err != nil {
		l.close()
		return nil, -1, err
	}
	return l, pfd, nil
}

// newOwner works out the owner and mode of a new entry: a setgid parent
// passes on its group (and, to directories, its setgid bit), as Linux
// filesystems do.
func (c *View) newOwner(l *loc, o Owner, mode uint32) (Owner, uint32) {
	// The parent is in the upper directory by now (prepareNew).
	var ps unix.Stat_t
	if unix.Fstat(l.parent, &ps) != nil {
		return o, mode
	}
	if v, err := getxattrPath(procPath(l.parent, "."), StatXattr); err == nil {
		applyOverride(&ps, string(v))
	}
	if ps.Mode&unix.S_ISGID != 0 {
		o.GID = ps.Gid
		if mode&unix.S_IFMT == unix.S_IFDIR {
			mode |= unix.S_ISGID
		}
	}
	return o, mode
}

// finishNew ends the creation of an entry at l: the whiteout that hid a
// lower entry of that name goes (after the entry exists, so a crash in
// between shows the new entry), and a new directory where a lower one was
// becomes opaque, so the old contents do not reappear.
func (c *View) finishNew(l *loc, pfd int, isDir bool) error {
	if !l.whiteout {
		return nil
	}
	if isDir {
		fd, err := unix.Openat(pfd, l.name+"/"+union.OpaqueMarker, unix.O_CREAT|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return fmt.Errorf("upper directory %s: marking %s opaque: %w", c.dir, l.path, err)
		}
		unix.Close(fd)
	}
	if err := unix.Unlinkat(pfd, union.WhiteoutPrefix+l.name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("upper directory %s: removing the whiteout of %s: %w", c.dir, l.path, err)
	}
	return nil
}

// statNew stats the entry just created at l.
func (c *View) statNew(l *loc) (Stat, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(l.parent, l.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return Stat{}, err
	}
	l.up, l.low = &st, nil
	return c.stat(l)
}

// Create makes a new regular file and opens it. flags are open(2) flags.
func (c *View) Create(path string, flags int, mode uint32, o Owner) (File, Stat, error) {
	c.beginChange()
	defer c.mu.Unlock()
	l, pfd, err := c.prepareNew(path)
	if err != nil {
		return nil, Stat{}, err
	}
	defer l.close()
	o, mode = c.newOwner(l, o, unix.S_IFREG|mode&0o7777)
	fd, rw, err := c.openUpper(pfd, l.name, flags|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return nil, Stat{}, err
	}
	st, err := c.initFile(fd, meta{mode: mode, uid: o.UID, gid: o.GID})
	if err != nil {
		unix.Close(fd)
		unix.Unlinkat(pfd, l.name, 0)
		return nil, Stat{}, fmt.Errorf("upper directory %s: creating %s: %w", c.dir, path, err)
	}
	if err := c.finishNew(l, pfd, false); err != nil {
		unix.Close(fd)
		return nil, Stat{}, err
	}
	return &upperFile{c: c, fd: fd, rw: rw}, st, nil
}

// initFile gives fd, a regular file the view has just created, the owner
// and mode of m, and reports what the view shows of it. Run as root, it
// asks only for what open(2) did not already give (the caller's file in a
// directory without setgid is created right, so a file costs one fstat,
// no chown, chmod or xattr reads: it carries no bookkeeping xattrs yet).
func (c *View) initFile(fd int, m meta) (Stat, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Stat{}, err
	}
	if _, ok := c.metaStore.(rootMeta); !ok {
		if err := c.apply(fdTarget(fd), m); err != nil {
			return Stat{}, err
		}
		if err := unix.Fstat(fd, &st); err != nil {
			return Stat{}, err
		}
		applyXattrs(fdTarget(fd), &st)
		return st, nil
	}
	changed := false
	if st.Uid != m.uid || st.Gid != m.gid {
		// chown first: it clears setuid and setgid, which chmod sets.
		if err := unix.Fchown(fd, int(m.uid), int(m.gid)); err != nil {
			return Stat{}, fmt.Errorf("chown: %w", err)
		}
		changed = true
	}
	if changed || st.Mode&0o7777 != m.mode&0o7777 {
		if err := unix.Fchmod(fd, m.mode&0o7777); err != nil {
			return Stat{}, fmt.Errorf("chmod: %w", err)
		}
		changed = true
	}
	if changed {
		if err := unix.Fstat(fd, &st); err != nil {
			return Stat{}, err
		}
	}
	st.Ino |= upperInoBit
	return st, nil
}

// openUpper opens an upper file for reading and writing where it can
// (the kernel reads pages of files opened write-only), else as asked.
// O_APPEND is dropped: the kernel gives every write its offset.
func (c *View) openUpper(dirfd int, name string, flags int, mode uint32) (fd int, rw bool, err error) {
	access := flags & unix.O_ACCMODE
	flags &^= unix.O_APPEND | unix.O_ACCMODE | unix.O_NOCTTY | unix.O_DIRECT
	flags |= unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err = unix.Openat(dirfd, name, flags|unix.O_RDWR, mode)
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ETXTBSY) || errors.Is(err, unix.EROFS) {
		fd, err = unix.Openat(dirfd, name, flags|access, mode)
		return fd, false, err
	}
	return fd, err == nil, err
}

// Mkdir makes a directory.
func (c *View) Mkdir(path string, mode uint32, o Owner) (Stat, error) {
	c.beginChange()
	defer c.mu.Unlock()
	l, pfd, err := c.prepareNew(path)
	if err != nil {
		return Stat{}, err
	}
	defer l.close()
	o, mode = c.newOwner(l, o, unix.S_IFDIR|mode&0o7777)
	if err := unix.Mkdirat(pfd, l.name, 0o700); err != nil {
		return Stat{}, err
	}
	if err := c.applyNamed(pfd, l.name, meta{mode: mode, uid: o.UID, gid: o.GID}); err != nil {
		unix.Unlinkat(pfd, l.name, unix.AT_REMOVEDIR)
		return Stat{}, fmt.Errorf("upper directory %s: creating %s: %w", c.dir, path, err)
	}
	if err := c.finishNew(l, pfd, true); err != nil {
		return Stat{}, err
	}
	return c.statNew(l)
}

// applyNamed is apply on an entry named in dirfd, opening it when an open
// descriptor is needed (directories: fchown on an O_PATH descriptor fails).
func (c *View) applyNamed(dirfd int, name string, m meta) error {
	if m.mode&unix.S_IFMT == unix.S_IFDIR {
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return c.apply(fdTarget(fd), m)
	}
	return c.apply(nameTarget(dirfd, name), m)
}

// Mknod makes a device node, fifo or socket (a regular file for mknod of
// S_IFREG).
func (c *View) Mknod(path string, mode uint32, rdev uint64, o Owner) (Stat, error) {
	if mode&unix.S_IFMT == unix.S_IFREG || mode&unix.S_IFMT == 0 {
		f, st, err := c.Create(path, unix.O_WRONLY, mode&0o7777, o)
		if err == nil {
			f.Close()
		}
		return st, err
	}
	c.beginChange()
	defer c.mu.Unlock()
	l, pfd, err := c.prepareNew(path)
	if err != nil {
		return Stat{}, err
	}
	defer l.close()
	o, mode = c.newOwner(l, o, mode)
	if err := c.metaStore.mknod(pfd, l.name, mode, rdev); err != nil {
		return Stat{}, err
	}
	if err := c.applyNamed(pfd, l.name, meta{mode: mode, uid: o.UID, gid: o.GID, rdev: rdev}); err != nil {
		unix.Unlinkat(pfd, l.name, 0)
		return Stat{}, fmt.Errorf("upper directory %s: creating %s: %w", c.dir, path, err)
	}
	if err := c.finishNew(l, pfd, false); err != nil {
		return Stat{}, err
	}
	return c.statNew(l)
}

// Symlink makes a symbolic link at path pointing at target.
func (c *View) Symlink(target, path string, o Owner) (Stat, error) {
	c.beginChange()
	defer c.mu.Unlock()
	l, pfd, err := c.prepareNew(path)
	if err != nil {
		return Stat{}, err
	}
	defer l.close()
	o, _ = c.newOwner(l, o, unix.S_IFLNK)
	if err := unix.Symlinkat(target, pfd, l.name); err != nil {
		return Stat{}, err
	}
	if err := c.applyNamed(pfd, l.name, meta{mode: unix.S_IFLNK, uid: o.UID, gid: o.GID}); err != nil {
		unix.Unlinkat(pfd, l.name, 0)
		return Stat{}, fmt.Errorf("upper directory %s: creating %s: %w", c.dir, path, err)
	}
	if err := c.finishNew(l, pfd, false); err != nil {
		return Stat{}, err
	}
	return c.statNew(l)
}

// Link makes newPath another name of the file at oldPath (copied up first
// if it is a lower file).
func (c *View) Link(oldPath, newPath string) (Stat, error) {
	c.beginChange()
	defer c.mu.Unlock()
	ol, err := c.resolveExisting(oldPath)
	if err != nil {
		return Stat{}, err
	}
	defer ol.close()
	if ol.isDir() {
		return Stat{}, unix.EPERM
	}
	if err := c.copyUp(ol, true); err != nil {
		return Stat{}, err
	}
	l, pfd, err := c.prepareNew(newPath)
	if err != nil {
		return Stat{}, err
	}
	defer l.close()
	if err := unix.Linkat(ol.parent, ol.name, pfd, l.name, 0); err != nil {
		return Stat{}, err
	}
	if !holdsUserXattrs(ol.up.Mode) {
		moveChildOrigin(ol.parent, ol.name, pfd, l.name, true)
	}
	if err := c.finishNew(l, pfd, false); err != nil {
		return Stat{}, err
	}
	return c.statNew(l)
}

// whiteout records, in the upper parent of l, that the lower entry there is
// deleted.
func (c *View) whiteout(l *loc) error {
	pfd, err := c.parentFD(l)
	if err != nil {
		return err
	}
	name := union.WhiteoutPrefix + l.name
	failed := func(err error) error {
		return fmt.Errorf("upper directory %s: recording the deletion of %s: %w", c.dir, l.path, err)
	}
	for range 2 {
		fd, err := unix.Openat(pfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == nil {
			return unix.Close(fd)
		}
		if err != unix.EEXIST {
			return failed(err)
		}
		var st unix.Stat_t
		if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return failed(err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			return nil // recorded already
		}
		// Something else under the whiteout's name (a damaged or hostile
		// upper directory): opening a fifo for writing would block with
		// the view locked, a device or link would reach elsewhere. It is
		// replaced, never opened.
		if err := unix.Unlinkat(pfd, name, 0); err != nil {
			return failed(err)
		}
	}
	return failed(unix.EEXIST)
}

// Unlink removes a non-directory.
func (c *View) Unlink(path string) error {
	c.beginChange()
	defer c.mu.Unlock()
	l, err := c.resolveExisting(path)
	if err != nil {
		return err
	}
	defer l.close()
	if l.isDir() {
		return unix.EISDIR
	}
	return c.remove(l, 0)
}

// remove deletes the entry at l: a whiteout first if a lower entry shows
// there (so a crash in between still hides it), then the upper entry.
func (c *View) remove(l *loc, flags int) error {
	hidesLower := l.low != nil || (l.up != nil && l.parentLow != nil && lowerChild(l.parentLow, l.name) != nil)
	if hidesLower {
		if err := c.whiteout(l); err != nil {
			return err
		}
	}
	if l.up != nil {
		if flags == unix.AT_REMOVEDIR {
			if err := c.clearDir(l); err != nil {
				return err
			}
		}
		if err := unix.Unlinkat(l.parent, l.name, flags); err != nil {
			return err
		}
		if !holdsUserXattrs(l.up.Mode) {
			_ = removeChildOrigin(l.parent, l.name)
		}
	}
	return nil
}

// clearDir removes the whiteouts and opaque marker of an upper directory
// that is empty in the view, so that it can be removed or replaced.
func (c *View) clearDir(l *loc) error {
	dfd, err := c.openUpperDir(l)
	if err != nil {
		return err
	}
	names, err := readNames(dfd)
	defer unix.Close(dfd)
	if err != nil {
		return err
	}
	for _, n := range names {
		if !strings.HasPrefix(n, union.WhiteoutPrefix) {
			return unix.ENOTEMPTY
		}
		err := unix.Unlinkat(dfd, n, 0)
		if errors.Is(err, unix.EISDIR) {
			err = unix.Unlinkat(dfd, n, unix.AT_REMOVEDIR) // a copy-up's temporary directory
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	return nil
}

// readNames lists a directory descriptor's names (without . and ..).
func readNames(dfd int) ([]string, error) {
	fd, err := unix.Openat(dfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var names []string
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// Rmdir removes an empty directory.
func (c *View) Rmdir(path string) error {
	c.beginChange()
	defer c.mu.Unlock()
	if path == "" {
		return unix.EBUSY
	}
	l, err := c.resolveExisting(path)
	if err != nil {
		return err
	}
	defer l.close()
	if !l.isDir() {
		return unix.ENOTDIR
	}
	ents, err := c.readDir(l)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return unix.ENOTEMPTY
	}
	c.forget(path)
	return c.remove(l, unix.AT_REMOVEDIR)
}
