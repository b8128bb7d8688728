package cow

import (
	"errors"
	"fmt"
	"strings"

	"github.com/imgmount/imgmount/overlay/union"
	"golang.org/x/sys/unix"
)

// Rename moves oldPath to newPath. flags are renameat2 flags
// (RENAME_NOREPLACE, RENAME_EXCHANGE). A lower directory is copied up whole
// (made opaque) before it moves, since a layer cannot say "this directory's
// contents are those of another path below"; a lower file is copied up.
func (c *View) Rename(oldPath, newPath string, flags uint) error {
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return unix.EINVAL
	}
	if err := checkName(newPath); err != nil {
		return err
	}
	c.beginChange()
	defer c.mu.Unlock()
	ol, err := c.resolveExisting(oldPath)
	if err != nil {
		return err
	}
	defer ol.close()
	nl, err := c.resolve(newPath)
	if err != nil {
		return err
	}
	defer nl.close()
	if oldPath == newPath {
		return nil
	}
	// Whatever happens below, cached directories at either name are
	// stale afterwards.
	defer c.forget(oldPath)
	defer c.forget(newPath)
	if flags&unix.RENAME_EXCHANGE != 0 {
		return c.exchange(ol, nl)
	}
	if nl.exists() {
		if flags&unix.RENAME_NOREPLACE != 0 {
			return unix.EEXIST
		}
		switch {
		case ol.isDir() && !nl.isDir():
			return unix.ENOTDIR
		case !ol.isDir() && nl.isDir():
			return unix.EISDIR
		case nl.isDir():
			ents, err := c.readDir(nl)
			if err != nil {
				return err
			}
			if len(ents) > 0 {
				return unix.ENOTEMPTY
			}
		}
	}
	if err := c.ownWhole(ol); err != nil {
		return err
	}
	npfd, err := c.parentFD(nl)
	if err != nil {
		return err
	}
	// Where a lower entry shows or was deleted at the new name, a moved
	// directory must hide it.
	if ol.isDir() && (nl.whiteout || nl.low != nil || (nl.parentLow != nil && lowerChild(nl.parentLow, nl.name) != nil)) {
		if err := c.markOpaque(ol); err != nil {
			return err
		}
	}
	if nl.up != nil && nl.isDir() {
		// Empty in the view, but it may hold whiteouts.
		if err := c.clearDir(nl); err != nil {
			return err
		}
	}
	oldHidesLower := ol.parentLow != nil && lowerChild(ol.parentLow, ol.name) != nil
	if oldHidesLower {
		if err := c.whiteout(ol); err != nil {
			return err
		}
	}
	if err := unix.Renameat2(ol.parent, ol.name, npfd, nl.name, 0); err != nil {
		return err
	}
	switch {
	case !holdsUserXattrs(ol.up.Mode):
		moveChildOrigin(ol.parent, ol.name, npfd, nl.name, false)
	case nl.up != nil && !holdsUserXattrs(nl.up.Mode):
		_ = removeChildOrigin(npfd, nl.name) // it named the entry replaced
	}
	return c.finishNew(nl, npfd, false)
}

// ownWhole makes the entry at l wholly upper: a file is copied up; a
// directory is copied up with everything the view shows beneath it and made
// opaque, so it no longer depends on the lower tree at its path.
func (c *View) ownWhole(l *loc) error {
	if err := c.copyUp(l, true); err != nil {
		return err
	}
	if !l.isDir() || l.low == nil {
		return nil
	}
	ents, err := c.readDir(l)
	if err != nil {
		return err
	}
	for _, e := range ents {
		cl, err := c.resolve(union.Join(l.path, e.Name))
		if err != nil {
			return err
		}
		err = c.ownWhole(cl)
		cl.close()
		if err != nil {
			return err
		}
	}
	if err := c.markOpaque(l); err != nil {
		return err
	}
	l.low = nil
	return nil
}

// markOpaque puts the opaque marker into the upper directory at l, and
// then removes its whiteouts: the marker hides every lower child, so they
// hide nothing more (and a layer should not carry them).
func (c *View) markOpaque(l *loc) error {
	c.forget(l.path) // its lower side is hidden from now on
	pfd, err := c.parentFD(l)
	if err != nil {
		return err
	}
	return keepTimes(pfd, func() error {
		dfd, err := unix.Openat(pfd, l.name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(dfd)
		return keepTimes(dfd, func() error {
			fd, err := unix.Openat(dfd, union.OpaqueMarker, unix.O_CREAT|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
			if err != nil {
				return fmt.Errorf("upper directory %s: marking %s opaque: %w", c.dir, l.path, err)
			}
			if err := unix.Close(fd); err != nil {
				return err
			}
			names, err := readNames(dfd)
			if err != nil {
				return fmt.Errorf("upper directory %s: listing %s: %w", c.dir, l.path, err)
			}
			for _, n := range names {
				if strings.HasPrefix(n, union.WhiteoutPrefix) && !strings.HasPrefix(n, union.WhiteoutMeta) {
					if err := unix.Unlinkat(dfd, n, 0); err != nil && !errors.Is(err, unix.ENOENT) {
						return fmt.Errorf("upper directory %s: removing the whiteout %s of opaque %s: %w", c.dir, n, l.path, err)
					}
				}
			}
			return nil
		})
	})
}

// exchange swaps two existing entries (RENAME_EXCHANGE). Both are made
// wholly upper first; each then hides whatever lower entry its new name had.
func (c *View) exchange(a, b *loc) error {
	if !b.exists() {
		return unix.ENOENT
	}
	for _, l := range []*loc{a, b} {
		if err := c.ownWhole(l); err != nil {
			return err
		}
	}
	for _, pair := range [][2]*loc{{a, b}, {b, a}} {
		src, dst := pair[0], pair[1]
		if src.isDir() && dst.parentLow != nil && lowerChild(dst.parentLow, dst.name) != nil {
			if err := c.markOpaque(src); err != nil {
				return err
			}
		}
	}
	av, aerr := getxattrPath(dirPath(a.parent), childOriginKey(a.name))
	bv, berr := getxattrPath(dirPath(b.parent), childOriginKey(b.name))
	if err := unix.Renameat2(a.parent, a.name, b.parent, b.name, unix.RENAME_EXCHANGE); err != nil {
		return err
	}
	// The origins kept by the directories change places too.
	swapOrigin := func(l *loc, v []byte, err error) {
		if err == nil {
			_ = unix.Lsetxattr(dirPath(l.parent), childOriginKey(l.name), v, 0)
		} else {
			_ = removeChildOrigin(l.parent, l.name)
		}
	}
	if aerr == nil || berr == nil {
		swapOrigin(b, av, aerr)
		swapOrigin(a, bv, berr)
	}
	return nil
}
