package overlay

import (
	"errors"
	"io/fs"

	"golang.org/x/sys/unix"
)

// Helpers of repack, kept apart from the writable mount's own so that the
// two can change independently.

// relJoin joins a slash-separated relative path ("" for the root) and a
// name.
func relJoin(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// statModeToGo converts a stat st_mode (S_IF* type and permission bits)
// to an fs.FileMode.
func statModeToGo(m uint32) fs.FileMode {
	var t fs.FileMode
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		t = fs.ModeDir
	case unix.S_IFLNK:
		t = fs.ModeSymlink
	case unix.S_IFIFO:
		t = fs.ModeNamedPipe
	case unix.S_IFSOCK:
		t = fs.ModeSocket
	case unix.S_IFCHR:
		t = fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		t = fs.ModeDevice
	}
	t |= fs.FileMode(m & 0o777)
	if m&unix.S_ISUID != 0 {
		t |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		t |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		t |= fs.ModeSticky
	}
	return t
}

// permBits gives the tar mode (07777) of an fs.FileMode.
func permBits(m fs.FileMode) int64 {
	p := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		p |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		p |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		p |= 0o1000
	}
	return p
}

// lgetxattrAll reads a whole xattr without following a final symlink.
func lgetxattrAll(path, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			sz, err := unix.Lgetxattr(path, name, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, sz+64)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
