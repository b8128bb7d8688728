package cow

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// This file keeps the origin (the lower inode number) of upper entries
// copied up, so that they keep their inode numbers: in originXattr on
// regular files and directories, and in an xattr of the parent directory
// for the entries Linux allows no user.* xattr on (see upperdir.go).

// holdsUserXattrs tells whether an upper entry of mode (S_IF* bits) can
// carry user.* xattrs: Linux allows them on regular files and directories
// only.
func holdsUserXattrs(mode uint32) bool {
	typ := mode & unix.S_IFMT
	return typ == unix.S_IFREG || typ == unix.S_IFDIR
}

// xattrNameMax is the longest xattr name Linux takes (XATTR_NAME_MAX).
const xattrNameMax = 255

// childOriginKey is the name of the xattr, on an upper directory, holding
// the origin of its entry name: childOriginPrefix + name, or for a name
// too long for that, originXattr + "#" + the SHA-256 of name in hex.
func childOriginKey(name string) string {
	if len(childOriginPrefix)+len(name) <= xattrNameMax {
		return childOriginPrefix + name
	}
	sum := sha256.Sum256([]byte(name))
	return originXattr + "#" + hex.EncodeToString(sum[:])
}

// isChildOriginKey tells whether an xattr name is one of childOriginKey's.
func isChildOriginKey(n string) bool {
	return strings.HasPrefix(n, childOriginPrefix) || strings.HasPrefix(n, originXattr+"#")
}

// dirPath names the upper directory dirfd (an O_PATH descriptor) for the
// xattr calls, which have no form taking one.
func dirPath(dirfd int) string { return procPath(dirfd, ".") }

// setChildOrigin records in the upper directory dirfd that its entry name,
// whose upper inode number is ino, was copied up from the lower inode
// origin.
func setChildOrigin(dirfd int, name string, origin, ino uint64) error {
	v := strconv.FormatUint(origin, 10) + ":" + strconv.FormatUint(ino, 10)
	return unix.Lsetxattr(dirPath(dirfd), childOriginKey(name), []byte(v), 0)
}

// childOrigin reads the origin setChildOrigin recorded for the entry name
// of dirfd, 0 if there is none or it was recorded for another inode than
// ino.
func childOrigin(dirfd int, name string, ino uint64) uint64 {
	v, err := getxattrPath(dirPath(dirfd), childOriginKey(name))
	if err != nil {
		return 0
	}
	o, i, ok := strings.Cut(string(v), ":")
	if !ok || i != strconv.FormatUint(ino, 10) {
		return 0
	}
	origin, err := strconv.ParseUint(o, 10, 64)
	if err != nil {
		return 0
	}
	return origin
}

// removeChildOrigin forgets the origin of the entry name of dirfd; there
// being none is no error.
func removeChildOrigin(dirfd int, name string) error {
	err := unix.Lremovexattr(dirPath(dirfd), childOriginKey(name))
	if errors.Is(err, unix.ENODATA) {
		return nil
	}
	return err
}

// moveChildOrigin carries the origin recorded for the entry from of the
// upper directory fromfd to the entry to of tofd, after a rename or with
// a new hard link (keep says whether the old name still exists). Where
// from has none, any left at to goes: to now names another entry. Failures
// only lose the origin (the entry then shows its upper inode number).
func moveChildOrigin(fromfd int, from string, tofd int, to string, keep bool) {
	v, err := getxattrPath(dirPath(fromfd), childOriginKey(from))
	if err != nil {
		_ = removeChildOrigin(tofd, to)
		return
	}
	_ = unix.Lsetxattr(dirPath(tofd), childOriginKey(to), v, 0)
	if !keep {
		_ = removeChildOrigin(fromfd, from)
	}
}

// recordOrigin records the lower inode origin of the upper entry name of
// dirfd, which st describes: on the entry when it can carry it, else on
// dirfd for finalName, the name the entry is about to take.
func recordOrigin(dirfd int, name, finalName string, origin uint64, st *unix.Stat_t) error {
	if origin == 0 {
		return nil
	}
	if holdsUserXattrs(st.Mode) {
		return nameTarget(dirfd, name).setxattr(originXattr, []byte(strconv.FormatUint(origin, 10)))
	}
	return setChildOrigin(dirfd, finalName, origin, st.Ino)
}
