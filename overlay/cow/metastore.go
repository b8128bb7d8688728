package cow

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// metaStore gives upper entries the owner, mode, device type and xattrs
// they should have: what differs between a mount run by root and one run
// without privilege (the split of umoci's fseval.Default and
// fseval.Rootless). A View holds one, chosen at New by newMetaStore:
//
//   - rootMeta applies everything for real: chown, chmod, mknod, xattrs in
//     any namespace;
//   - rootlessMeta applies what it can and records the rest in the upper
//     directory's format (upperdir.go): owner, full mode and device type in
//     StatXattr, xattrs the filesystem refuses under XattrPrefix + name.
//     The real mode keeps the owner (the user running the mount) able to
//     read and write the entry.
//
// stat, Listxattr and the layer writer read both records whichever
// metaStore made them, so owners recorded without privilege still show
// when root mounts the upper directory; Getxattr and Removexattr look
// under XattrPrefix only through rootlessMeta.
type metaStore interface {
	// setOwnerMode gives the upper entry t the owner and the whole mode
	// (type and permission bits) of m: a new entry, a copy-up.
	setOwnerMode(t target, m meta) error
	// changeOwnerMode makes the changes of owner and permission bits a
	// asks for (its other fields are not looked at) on the upper entry t,
	// whose lstat is st.
	changeOwnerMode(t target, st *unix.Stat_t, a SetAttr) error
	// mknod creates a device, fifo or socket node name in dirfd, mode
	// giving its type.
	mknod(dirfd int, name string, mode uint32, rdev uint64) error
	// setxattr sets one xattr of t (flags: XATTR_CREATE, XATTR_REPLACE);
	// isLink tells that t is a symlink.
	setxattr(t target, name string, value []byte, flags int, isLink bool) error
	// getxattr reads one xattr of t.
	getxattr(t target, name string) ([]byte, error)
	// removexattr removes one xattr of t; isLink tells that t is a
	// symlink.
	removexattr(t target, name string, isLink bool) error
}

// newMetaStore is the metaStore for this process: rootMeta when it can
// chown and mknod for real (it runs as root), else rootlessMeta.
func newMetaStore() metaStore {
	if os.Geteuid() == 0 {
		return rootMeta{}
	}
	return rootlessMeta{}
}

// rootMeta applies owners, modes, devices and xattrs for real.
type rootMeta struct{}

// setOwnerMode chowns first: chown clears setuid bits, which the chmod
// after it sets again. A symlink has no mode of its own.
func (rootMeta) setOwnerMode(t target, m meta) error {
	if err := t.chown(int(m.uid), int(m.gid)); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if m.mode&unix.S_IFMT != unix.S_IFLNK {
		if err := t.chmod(m.mode & 0o7777); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	return nil
}

func (rootMeta) changeOwnerMode(t target, st *unix.Stat_t, a SetAttr) error {
	if a.UID != nil || a.GID != nil {
		uid, gid := -1, -1
		if a.UID != nil {
			uid = int(*a.UID)
		}
		if a.GID != nil {
			gid = int(*a.GID)
		}
		if err := t.chown(uid, gid); err != nil {
			return err
		}
	}
	if a.Mode != nil && st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := t.chmod(*a.Mode & 0o7777); err != nil {
			return err
		}
	}
	return nil
}

func (rootMeta) mknod(dirfd int, name string, mode uint32, rdev uint64) error {
	return unix.Mknodat(dirfd, name, mode&unix.S_IFMT|0o600, int(rdev))
}

func (rootMeta) setxattr(t target, name string, value []byte, flags int, isLink bool) error {
	return t.setxattrFlags(name, value, flags)
}

func (rootMeta) getxattr(t target, name string) ([]byte, error) { return t.getxattr(name) }

func (rootMeta) removexattr(t target, name string, isLink bool) error {
	return t.removexattr(name)
}

// rootlessMeta applies what an unprivileged process can and records the
// rest in StatXattr and XattrPrefix xattrs. Symlinks carry neither (user
// xattrs are not allowed on them): their owner is the mount's user.
type rootlessMeta struct{}

// setOwnerMode records owner and mode in StatXattr; the real mode is the
// wanted permission bits plus read and write (and search, for a directory)
// for the owner.
func (rootlessMeta) setOwnerMode(t target, m meta) error {
	if m.mode&unix.S_IFMT == unix.S_IFLNK {
		return nil
	}
	real := m.mode&0o777 | 0o600
	if m.mode&unix.S_IFMT == unix.S_IFDIR {
		real |= 0o700
	}
	if err := t.chmod(real); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if m.mode&unix.S_IFMT == unix.S_IFSOCK {
		// No user.* xattr on a socket: it shows the mount's user as its
		// owner (and no layer carries sockets).
		return nil
	}
	o := StatOverride{UID: m.uid, GID: m.gid, Mode: modeToGo(m.mode), Major: unix.Major(m.rdev), Minor: unix.Minor(m.rdev)}
	if err := t.setxattr(StatXattr, []byte(FormatStatOverride(o))); err != nil {
		return fmt.Errorf("recording owner and mode: %w", err)
	}
	return nil
}

// changeOwnerMode starts from what the entry shows (its StatXattr applied)
// and records it with the changes made. A change of owner alone clears
// setuid and setgid of non-directories, as chown does.
func (r rootlessMeta) changeOwnerMode(t target, st *unix.Stat_t, a SetAttr) error {
	if (a.UID == nil && a.GID == nil && a.Mode == nil) || st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return nil
	}
	view := *st
	applyXattrs(t, &view)
	m := meta{mode: view.Mode, uid: view.Uid, gid: view.Gid, rdev: view.Rdev}
	if a.UID != nil {
		m.uid = *a.UID
	}
	if a.GID != nil {
		m.gid = *a.GID
	}
	if a.Mode != nil {
		m.mode = m.mode&unix.S_IFMT | *a.Mode&0o7777
	} else if m.mode&unix.S_IFMT != unix.S_IFDIR {
		m.mode &^= unix.S_ISUID | unix.S_ISGID
	}
	return r.setOwnerMode(t, m)
}

// mknod makes a device or a fifo an empty regular file (its StatXattr,
// set by setOwnerMode, gives the type): no ordinary user may make a
// device, and neither can carry the user.* xattr StatXattr (the kernel
// serves the mount's fifos and devices by the type it is told, never by
// the upper file). Sockets need no privilege.
func (rootlessMeta) mknod(dirfd int, name string, mode uint32, rdev uint64) error {
	typ := mode & unix.S_IFMT
	if typ == unix.S_IFCHR || typ == unix.S_IFBLK || typ == unix.S_IFIFO {
		fd, err := unix.Openat(dirfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		return unix.Close(fd)
	}
	return unix.Mknodat(dirfd, name, typ|0o600, int(rdev))
}

// setxattr keeps an xattr the filesystem refuses (trusted.*, security.*)
// under XattrPrefix + name.
func (rootlessMeta) setxattr(t target, name string, value []byte, flags int, isLink bool) error {
	err := t.setxattrFlags(name, value, flags)
	if err != nil && !isLink && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)) && !strings.HasPrefix(name, "user.") {
		err = t.setxattrFlags(XattrPrefix+name, value, flags)
	}
	return err
}

// getxattr reads an xattr kept under XattrPrefix + name where the entry
// has none of that name.
func (rootlessMeta) getxattr(t target, name string) ([]byte, error) {
	v, err := t.getxattr(name)
	if errors.Is(err, unix.ENODATA) {
		v, err = t.getxattr(XattrPrefix + name)
	}
	return v, err
}

// removexattr removes the xattr kept under XattrPrefix + name where the
// entry has none of that name.
func (rootlessMeta) removexattr(t target, name string, isLink bool) error {
	err := t.removexattr(name)
	if errors.Is(err, unix.ENODATA) && !isLink {
		err = t.removexattr(XattrPrefix + name)
	}
	return err
}
