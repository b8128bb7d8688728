package cow

import (
	"errors"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// This file holds the calls on upper entries that have a descriptor form
// and a path form (target), and the xattr reads the view and the layer
// writer share.

// target is an upper entry to set attributes on: an open descriptor (fd),
// an O_PATH descriptor (fd with opath: a fifo or device kept, see
// keptFile), or a name in an O_PATH directory descriptor (symlinks,
// devices, entries not open).
type target struct {
	fd    int
	dirfd int
	name  string
	// opath says that fd is an O_PATH descriptor, which the f* calls but
	// fstat refuse: the calls go through /proc/self/fd instead.
	opath bool
}

func fdTarget(fd int) target                   { return target{fd: fd, dirfd: -1} }
func opathTarget(fd int) target                { return target{fd: fd, dirfd: -1, opath: true} }
func nameTarget(dirfd int, name string) target { return target{fd: -1, dirfd: dirfd, name: name} }

func (t target) path() string {
	if t.fd >= 0 {
		return procPath(t.fd, "")
	}
	return procPath(t.dirfd, t.name)
}

func (t target) chown(uid, gid int) error {
	if t.opath {
		return unix.Fchownat(t.fd, "", uid, gid, unix.AT_EMPTY_PATH)
	}
	if t.fd >= 0 {
		return unix.Fchown(t.fd, uid, gid)
	}
	return unix.Fchownat(t.dirfd, t.name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
}

func (t target) chmod(mode uint32) error {
	if t.opath {
		return unix.Chmod(t.path(), mode)
	}
	if t.fd >= 0 {
		return unix.Fchmod(t.fd, mode)
	}
	return unix.Fchmodat(t.dirfd, t.name, mode, 0)
}

func (t target) setxattr(name string, value []byte) error { return t.setxattrFlags(name, value, 0) }

func (t target) setxattrFlags(name string, value []byte, flags int) error {
	if t.opath {
		return unix.Setxattr(t.path(), name, value, flags)
	}
	if t.fd >= 0 {
		return unix.Fsetxattr(t.fd, name, value, flags)
	}
	return unix.Lsetxattr(t.path(), name, value, flags)
}

func (t target) listxattr() ([]string, error) {
	if t.opath {
		return splitXattrNames(xattrBytes(func(b []byte) (int, error) { return unix.Listxattr(t.path(), b) }))
	}
	if t.fd >= 0 {
		return splitXattrNames(xattrBytes(func(b []byte) (int, error) { return unix.Flistxattr(t.fd, b) }))
	}
	return listxattrPath(t.path())
}

func (t target) removexattr(name string) error {
	if t.opath {
		return unix.Removexattr(t.path(), name)
	}
	if t.fd >= 0 {
		return unix.Fremovexattr(t.fd, name)
	}
	return unix.Lremovexattr(t.path(), name)
}

func (t target) getxattr(name string) ([]byte, error) {
	if t.opath {
		return xattrBytes(func(b []byte) (int, error) { return unix.Getxattr(t.path(), name, b) })
	}
	if t.fd >= 0 {
		return xattrBytes(func(b []byte) (int, error) { return unix.Fgetxattr(t.fd, name, b) })
	}
	return getxattrPath(t.path(), name)
}

func (t target) utimes(ts []unix.Timespec) error {
	if t.fd >= 0 {
		// utimensat of the descriptor itself (AT_EMPTY_PATH), not of
		// its /proc/self/fd name, which costs a walk through /proc;
		// older kernels refuse the flag, and get the name.
		err := unix.UtimesNanoAt(t.fd, "", ts, unix.AT_EMPTY_PATH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			err = unix.UtimesNanoAt(unix.AT_FDCWD, t.path(), ts, 0)
		}
		return err
	}
	return unix.UtimesNanoAt(t.dirfd, t.name, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func (t target) stat() (unix.Stat_t, error) {
	var st unix.Stat_t
	var err error
	if t.fd >= 0 {
		err = unix.Fstat(t.fd, &st)
	} else {
		err = unix.Fstatat(t.dirfd, t.name, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	return st, err
}

// getxattrPath reads a whole xattr without following a final symlink.
func getxattrPath(path, name string) ([]byte, error) {
	return xattrBytes(func(b []byte) (int, error) { return unix.Lgetxattr(path, name, b) })
}

// listxattrPath lists the xattr names of path without following a final
// symlink, in the filesystem's order.
func listxattrPath(path string) ([]string, error) {
	return splitXattrNames(xattrBytes(func(b []byte) (int, error) { return unix.Llistxattr(path, b) }))
}

// xattrScratch holds the buffers xattrBytes tries first: most answers are
// none (ENODATA: security.capability, asked by the kernel before every
// write and chown) or a few bytes, which need no buffer of their own.
var xattrScratch = sync.Pool{New: func() any { return new([256]byte) }}

// xattrBytes runs call, a getxattr or listxattr, with a buffer large enough
// for its answer: most fit the first, a scratch buffer whose answer is
// copied out; for the others, call with no buffer tells the size.
func xattrBytes(call func([]byte) (int, error)) ([]byte, error) {
	scratch := xattrScratch.Get().(*[256]byte)
	n, err := call(scratch[:])
	if err == nil {
		v := make([]byte, n)
		copy(v, scratch[:n])
		xattrScratch.Put(scratch)
		return v, nil
	}
	xattrScratch.Put(scratch)
	if !errors.Is(err, unix.ERANGE) {
		return nil, err
	}
	for {
		sz, err := call(nil)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, sz+64) // room for a little growth meanwhile
		n, err := call(buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// splitXattrNames splits a listxattr answer into its names.
func splitXattrNames(list []byte, err error) ([]string, error) {
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range strings.Split(string(list), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	return names, nil
}
