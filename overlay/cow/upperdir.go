package cow

import (
	"fmt"
	"io/fs"
	"strconv"
	"strings"
)

// The upper directory of a writable mount is itself an OCI layer directory:
//
//   - files, directories, symlinks, devices and fifos as they should appear;
//   - a deletion of a lower path NAME as an empty regular file ".wh.NAME"
//     beside where NAME was;
//   - a directory whose lower contents are all hidden holds an empty regular
//     file ".wh..wh..opq";
//   - where the mount could not give a file its real owner, mode or type
//     (an unprivileged mount cannot chown or mknod a device), the intended
//     values are in the xattr StatXattr (an unprivileged mount makes
//     devices and fifos empty regular files that carry it); xattrs outside
//     the user namespace that could not be set are kept as XattrPrefix +
//     their name;
//   - the directory itself carries the image root's owner, mode and times
//     (adopted when it was made), and the xattr rootChangedXattr once they
//     were changed in the mount: only then does the layer hold a "./" entry;
//   - imgmount's own bookkeeping, see below.
//
// The bookkeeping is never written in a layer: the layer writer leaves out
// every xattr named privatePrefix* and every name starting with ".wh..wh."
// but the opaque marker. It is:
//
//   - originXattr on the regular files and directories copied up (and on
//     the directory itself, once it adopted the root's attributes);
//   - for the other entries copied up (symlinks, fifos, devices), on which
//     Linux refuses user.* xattrs, the same origin in an xattr of their
//     directory, named childOriginKey(NAME) and valued "ORIGIN:INO", INO
//     being the upper entry's own inode number: a value whose INO is not
//     the entry's (left by a crash, or by copying the upper directory
//     elsewhere) is ignored;
//   - lowerXattr on the directory itself;
//   - while a copy-up is under way, the copy of a directory, symlink or
//     special file under a temporary name tempPrefix* beside its final
//     name, renamed to it once complete (a regular file is written
//     unnamed, O_TMPFILE, and linked in), so that a copy-up never leaves
//     part of a copy under the real name. Only a crash leaves a temporary
//     name behind: never shown, and removed with its directory.
//
// WriteUpperLayer (layer.go) writes it as a layer tar; remounting with the
// same directory shows every edit again.
const (
	// StatXattr holds "UID:GID:MODE[:TYPE[:MAJOR:MINOR]]": MODE the
	// permission bits in octal (with setuid, setgid, sticky), TYPE one of
	// file, dir, symlink, fifo, socket, char, block (the file's own type if
	// absent), MAJOR:MINOR for devices.
	StatXattr = "user.imgmount.stat"
	// XattrPrefix is prepended to the names of xattrs kept on behalf of a
	// namespace the mount cannot write (trusted.*, security.* unprivileged).
	XattrPrefix = "user.imgmount.xattr."
	// privatePrefix marks xattrs that are imgmount's own bookkeeping: never
	// shown in the mount, never copied into a layer.
	privatePrefix = "user.imgmount."
	// rootChangedXattr on the upper directory itself says that the mount's
	// root had its owner, mode, times or xattrs changed, so that a layer
	// made from the directory carries the root as its "./" entry. Creating
	// and deleting entries in the root changes its times too, but that is
	// no change to commit (as docker commit and umoci repack do not).
	rootChangedXattr = privatePrefix + "root"
	// originXattr on an upper entry copied up from the lower tree holds the
	// lower inode number, so the entry keeps its inode number across copy-up
	// and rename, as overlayfs keeps them.
	originXattr = privatePrefix + "origin"
	// childOriginPrefix begins the name of the xattr, on an upper
	// directory, that holds the origin of one of its entries that cannot
	// carry originXattr itself (see childOriginKey).
	childOriginPrefix = originXattr + "/"
	// tempPrefix begins the temporary names of copies being made (an AUFS
	// metadata name: never shown, never written in a layer).
	tempPrefix = ".wh..wh.imgmount.tmp."
	// lowerXattr on the upper directory itself names the layers its edits
	// were made over (a digest of their diff_ids, lowerKey); over other
	// layers, the originXattr marks are dropped (View.checkLower).
	lowerXattr = privatePrefix + "lower"
)

// IsPrivateXattr tells whether name is imgmount's own bookkeeping xattr.
func IsPrivateXattr(name string) bool { return strings.HasPrefix(name, privatePrefix) }

// StatOverride is the decoded StatXattr.
type StatOverride struct {
	UID, GID uint32
	Mode     fs.FileMode // Go file mode: type bits and permissions (with ModeSetuid etc.)
	// Rdev is major/minor for devices.
	Major, Minor uint32
}

var overrideTypes = []struct {
	name string
	mode fs.FileMode
}{
	{"file", 0},
	{"dir", fs.ModeDir},
	{"symlink", fs.ModeSymlink},
	{"fifo", fs.ModeNamedPipe},
	{"socket", fs.ModeSocket},
	{"char", fs.ModeDevice | fs.ModeCharDevice},
	{"block", fs.ModeDevice},
}

// FormatStatOverride encodes o as the StatXattr value.
func FormatStatOverride(o StatOverride) string {
	s := fmt.Sprintf("%d:%d:%04o", o.UID, o.GID, permBits(o.Mode))
	typ := o.Mode.Type()
	for _, t := range overrideTypes {
		if t.mode == typ {
			s += ":" + t.name
			break
		}
	}
	if typ&fs.ModeDevice != 0 {
		s += fmt.Sprintf(":%d:%d", o.Major, o.Minor)
	}
	return s
}

// ParseStatOverride decodes a StatXattr value. fileType is the type of the
// file that carries it, used when the value names none.
func ParseStatOverride(v string, fileType fs.FileMode) (StatOverride, error) {
	f := strings.Split(v, ":")
	bad := func() (StatOverride, error) {
		return StatOverride{}, fmt.Errorf("malformed %s value %q (want UID:GID:MODE[:TYPE[:MAJOR:MINOR]])", StatXattr, v)
	}
	if len(f) < 3 {
		return bad()
	}
	var o StatOverride
	uid, err1 := strconv.ParseUint(f[0], 10, 32)
	gid, err2 := strconv.ParseUint(f[1], 10, 32)
	perm, err3 := strconv.ParseUint(f[2], 8, 32)
	if err1 != nil || err2 != nil || err3 != nil || perm > 0o7777 {
		return bad()
	}
	o.UID, o.GID = uint32(uid), uint32(gid)
	// perm holds no type bits (at most 0o7777): modeToGo gives only the
	// permissions and setuid, setgid, sticky.
	o.Mode = modeToGo(uint32(perm))
	typ := fileType.Type()
	if len(f) > 3 {
		found := false
		for _, t := range overrideTypes {
			if t.name == f[3] {
				typ, found = t.mode, true
			}
		}
		if !found {
			return bad()
		}
	}
	o.Mode |= typ
	if typ&fs.ModeDevice != 0 && len(f) > 3 {
		if len(f) != 6 {
			return bad()
		}
		ma, err1 := strconv.ParseUint(f[4], 10, 32)
		mi, err2 := strconv.ParseUint(f[5], 10, 32)
		if err1 != nil || err2 != nil {
			return bad()
		}
		o.Major, o.Minor = uint32(ma), uint32(mi)
	} else if len(f) > 4 {
		return bad()
	}
	return o, nil
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
