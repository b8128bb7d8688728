package cow

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/imgmount/imgmount/overlay/union"
	"golang.org/x/sys/unix"
)

// WriteUpperLayer writes the upper directory dir (see upperdir.go) as one
// OCI layer tar to w and returns the number of entries written.
//
// The layer is what the mount shows over the lower layers:
//
//   - entries in a deterministic order: depth first, each directory's
//     whiteouts (the opaque marker first, then ".wh.NAME" by name, which
//     an opaque directory does not need) before its other entries, which
//     follow by name, a directory's subtree right after it; the upper
//     directory itself is the first entry, "./", only when the mount
//     changed the root's own attributes (rootChangedXattr);
//   - PAX headers (nanosecond mtimes, long names, xattrs), no user or group
//     names, no atime or ctime, so the same upper directory always gives
//     the same bytes;
//   - owner, mode and type as StatXattr overrides them (an empty regular
//     file whose override says char or block is that device);
//   - xattrs but imgmount's own (user.imgmount.*), with XattrPrefix+NAME
//     written as NAME, and without security.selinux (a label of the host's
//     upper directory, not of the image, as umoci leaves it out too);
//   - files sharing an inode as hardlinks to the first of their names.
//
// Sockets cannot be stored in a tar and are skipped, with a message to warn
// (if not nil). Symlinks are never followed. A file with more links than
// it has names in the upper directory, hard-linked to a file outside it,
// is an error: its content is not the upper directory's to give (whoever
// can write there could otherwise put a host file into the layer). Errors
// name the upper path.
func WriteUpperLayer(w io.Writer, dir string, warn func(string)) (int, error) {
	fi, err := os.Lstat(dir)
	if err != nil {
		return 0, fmt.Errorf("upper directory: %w", err)
	}
	if !fi.IsDir() {
		return 0, fmt.Errorf("upper directory %s: not a directory", dir)
	}
	uw := &upperWriter{
		tw:    tar.NewWriter(w),
		root:  dir,
		links: map[inodeKey]string{},
		names: map[inodeKey]*linkCount{},
		warn:  warn,
	}
	if err := uw.writeRoot(); err != nil {
		return uw.count, err
	}
	if err := uw.writeDir(""); err != nil {
		return uw.count, err
	}
	if err := uw.checkLinks(); err != nil {
		return uw.count, err
	}
	if err := uw.tw.Close(); err != nil {
		return uw.count, fmt.Errorf("upper directory %s: writing the layer: %w", dir, err)
	}
	return uw.count, nil
}

// inodeKey identifies a file of the upper directory for hardlink detection.
type inodeKey struct{ dev, ino uint64 }

type upperWriter struct {
	tw    *tar.Writer
	root  string
	links map[inodeKey]string // first layer name written for each multiply linked inode
	// names counts the names in the upper directory of each multiply
	// linked inode, whiteouts and names left out included (checkLinks).
	names map[inodeKey]*linkCount
	warn  func(string)
	count int
}

// linkCount is what checkLinks knows of a multiply linked inode.
type linkCount struct {
	first string // its first name in the walk
	nlink uint64 // its link count when first seen
	seen  uint64 // its names in the upper directory
}

// countLink counts the upper name rel of the non-directory st.
func (uw *upperWriter) countLink(rel string, st *unix.Stat_t) {
	if st.Nlink <= 1 || st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return
	}
	key := inodeKey{uint64(st.Dev), st.Ino}
	lc := uw.names[key]
	if lc == nil {
		lc = &linkCount{first: rel, nlink: uint64(st.Nlink)}
		uw.names[key] = lc
	}
	lc.seen++
}

// checkLinks refuses files hard-linked to files outside the upper
// directory: more links than names in it.
func (uw *upperWriter) checkLinks() error {
	var outside []string
	for _, lc := range uw.names {
		if lc.seen < lc.nlink {
			outside = append(outside, fmt.Sprintf("%s (%d links, %d in the upper directory)", lc.first, lc.nlink, lc.seen))
		}
	}
	if len(outside) == 0 {
		return nil
	}
	sort.Strings(outside)
	return fmt.Errorf("upper directory %s: hard-linked to files outside the upper directory, whose content is not its to put in a layer: %s; "+
		"replace each with a copy of its own (cp -p FILE FILE.new && mv FILE.new FILE) if that content belongs in the layer, "+
		"or commit again if links were being made or removed meanwhile",
		uw.root, strings.Join(outside, ", "))
}

// errorf names the upper path rel in an error.
func (uw *upperWriter) errorf(rel, format string, a ...any) error {
	return fmt.Errorf("upper directory %s: %s: %w", uw.root, rel, fmt.Errorf(format, a...))
}

// writeRoot writes the root as "./" when its own attributes were changed
// in the mount (rootChangedXattr); otherwise they are the image's and the
// layer leaves them alone.
func (uw *upperWriter) writeRoot() error {
	if _, err := getxattrPath(uw.root, rootChangedXattr); err != nil {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(uw.root, &st); err != nil {
		return uw.errorf(".", "%w", err)
	}
	hdr, err := uw.header(".", uw.root, &st)
	if err != nil {
		return err
	}
	return uw.writeHeader(".", hdr)
}

// writeDir writes the entries of the upper directory at rel ("" for the
// root), recursively.
func (uw *upperWriter) writeDir(rel string) error {
	names, err := readDirNames(filepath.Join(uw.root, rel))
	if err != nil {
		return fmt.Errorf("upper directory %s: listing %s: %w", uw.root, orRoot(rel), err)
	}
	whiteouts, others, dropped := splitWhiteouts(names)
	for _, name := range dropped {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(uw.root, rel, name), &st); err == nil {
			uw.countLink(union.Join(rel, name), &st)
		}
	}
	for _, name := range whiteouts {
		if err := uw.writeWhiteout(rel, name); err != nil {
			return err
		}
	}
	for _, name := range others {
		if err := uw.writeEntry(union.Join(rel, name)); err != nil {
			return err
		}
	}
	return nil
}

func orRoot(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
}

// readDirNames lists a directory's names sorted bytewise.
func readDirNames(dir string) ([]string, error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

// splitWhiteouts separates a directory's whiteout names (the opaque marker
// first) from its other names, each part in the order given. Dropped are
// the AUFS metadata names (".wh..wh.*" but the opaque marker), which mean
// nothing in an OCI layer (imgmount's temporary names are among them), and
// in an opaque directory the ".wh.NAME" whiteouts: the marker hides all
// the lower children, and a whiteout applies only to lower ones (image-spec
// layer.md), so they would hide nothing.
func splitWhiteouts(names []string) (whiteouts, others, dropped []string) {
	opaque := false
	for _, n := range names {
		switch {
		case n == union.OpaqueMarker:
			opaque = true
		case strings.HasPrefix(n, union.WhiteoutMeta):
			dropped = append(dropped, n)
		case strings.HasPrefix(n, union.WhiteoutPrefix):
			whiteouts = append(whiteouts, n)
		default:
			others = append(others, n)
		}
	}
	if opaque {
		dropped = append(dropped, whiteouts...)
		whiteouts = []string{union.OpaqueMarker}
	}
	return whiteouts, others, dropped
}

// writeWhiteout writes the whiteout name of the directory rel as the empty
// regular file the image spec wants, whatever the upper holds under that
// name (its mtime is kept: the time of the deletion).
func (uw *upperWriter) writeWhiteout(rel, name string) error {
	p := union.Join(rel, name)
	if target := strings.TrimPrefix(name, union.WhiteoutPrefix); name != union.OpaqueMarker && (target == "" || target == "." || target == "..") {
		return uw.errorf(p, "not a valid whiteout name")
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(uw.root, p), &st); err != nil {
		return uw.errorf(p, "%w", err)
	}
	uw.countLink(p, &st)
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     p,
		Mode:     0o644,
		ModTime:  time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		Format:   tar.FormatPAX,
	}
	return uw.writeHeader(p, hdr)
}

func (uw *upperWriter) writeHeader(rel string, hdr *tar.Header) error {
	if err := uw.tw.WriteHeader(hdr); err != nil {
		return uw.errorf(rel, "writing its tar header: %w", err)
	}
	uw.count++
	return nil
}

// writeEntry writes the upper entry at rel (and, for a directory, its
// subtree).
func (uw *upperWriter) writeEntry(rel string) error {
	full := filepath.Join(uw.root, rel)
	var st unix.Stat_t
	if err := unix.Lstat(full, &st); err != nil {
		return uw.errorf(rel, "%w", err)
	}
	uw.countLink(rel, &st)
	if st.Mode&unix.S_IFMT == unix.S_IFSOCK {
		if uw.warn != nil {
			uw.warn(fmt.Sprintf("upper directory %s: %s: a socket; sockets cannot be stored in a layer, skipped", uw.root, rel))
		}
		return nil
	}
	hdr, err := uw.header(rel, full, &st)
	if err != nil {
		return err
	}
	isDir := hdr.Typeflag == tar.TypeDir
	if !isDir && st.Nlink > 1 {
		key := inodeKey{uint64(st.Dev), st.Ino}
		if first, ok := uw.links[key]; ok {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			return uw.writeHeader(rel, hdr)
		}
		uw.links[key] = rel
	}
	if err := uw.writeHeader(rel, hdr); err != nil {
		return err
	}
	switch {
	case isDir:
		return uw.writeDir(rel)
	case hdr.Typeflag == tar.TypeReg && hdr.Size > 0:
		return uw.copyContent(rel, full, &st)
	}
	return nil
}

// header builds the tar header of an upper entry from its lstat, its
// StatXattr override and its xattrs.
func (uw *upperWriter) header(rel, full string, st *unix.Stat_t) (*tar.Header, error) {
	xattrs, override, err := readUpperXattrs(full)
	if err != nil {
		return nil, uw.errorf(rel, "reading its xattrs: %w", err)
	}
	realType := modeToGo(st.Mode).Type()
	mode, uid, gid := modeToGo(st.Mode), st.Uid, st.Gid
	var major, minor uint32
	if override != "" {
		o, err := ParseStatOverride(override, realType)
		if err != nil {
			return nil, uw.errorf(rel, "%w", err)
		}
		if err := checkOverrideType(realType, o.Mode.Type(), st.Size); err != nil {
			return nil, uw.errorf(rel, "%s %q: %w", StatXattr, override, err)
		}
		mode, uid, gid, major, minor = o.Mode, o.UID, o.GID, o.Major, o.Minor
	} else if realType&fs.ModeDevice != 0 {
		major, minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
	}
	name := rel
	if mode.IsDir() {
		name += "/"
	}
	hdr := &tar.Header{
		Name:     name,
		Mode:     permBits(mode),
		Uid:      int(uid),
		Gid:      int(gid),
		ModTime:  time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		Devmajor: int64(major),
		Devminor: int64(minor),
		Format:   tar.FormatPAX,
	}
	switch mode.Type() {
	case 0:
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
	case fs.ModeDir:
		hdr.Typeflag = tar.TypeDir
	case fs.ModeSymlink:
		hdr.Typeflag = tar.TypeSymlink
		if hdr.Linkname, err = os.Readlink(full); err != nil {
			return nil, uw.errorf(rel, "%w", err)
		}
	case fs.ModeNamedPipe:
		hdr.Typeflag = tar.TypeFifo
	case fs.ModeDevice | fs.ModeCharDevice:
		hdr.Typeflag = tar.TypeChar
	case fs.ModeDevice:
		hdr.Typeflag = tar.TypeBlock
	default:
		return nil, uw.errorf(rel, "a %v cannot be stored in a layer", mode.Type())
	}
	if len(xattrs) > 0 {
		hdr.PAXRecords = map[string]string{}
		for k, v := range xattrs {
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	return hdr, nil
}

// checkOverrideType accepts an override type that the upper entry can
// stand for: its own type, or, for an empty regular file, a device or fifo
// the mount could not create.
func checkOverrideType(real, want fs.FileMode, size int64) error {
	if real == want {
		return nil
	}
	if real == 0 && size == 0 && (want&fs.ModeDevice != 0 || want == fs.ModeNamedPipe) {
		return nil
	}
	return fmt.Errorf("says the entry is a %s, but it is a %s in the upper directory", typeName(want), typeName(real))
}

func typeName(t fs.FileMode) string {
	for _, ot := range overrideTypes {
		if ot.mode == t.Type() {
			return ot.name
		}
	}
	return t.Type().String()
}

// readUpperXattrs returns the xattrs a layer entry gets from the upper
// entry at p (see WriteUpperLayer) and the raw StatXattr value ("" if
// none). A name kept under XattrPrefix stands for the real name; when both
// are present, the real one wins (it is what the filesystem has).
func readUpperXattrs(p string) (map[string]string, string, error) {
	names, err := listxattrPath(p)
	if errors.Is(err, unix.ENOTSUP) {
		names, err = nil, nil // a filesystem without xattrs has none
	}
	if err != nil {
		return nil, "", err
	}
	sort.Strings(names)
	out := map[string]string{}
	override := ""
	kept := map[string]string{}
	for _, name := range names {
		v, err := getxattrPath(p, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", name, err)
		}
		switch {
		case name == StatXattr:
			override = string(v)
		case strings.HasPrefix(name, XattrPrefix):
			if real := name[len(XattrPrefix):]; real != "" && !IsPrivateXattr(real) {
				kept[real] = string(v)
			}
		case IsPrivateXattr(name), name == "security.selinux":
		default:
			out[name] = string(v)
		}
	}
	for k, v := range kept {
		if _, ok := out[k]; !ok {
			out[k] = v
		}
	}
	return out, override, nil
}

// copyContent writes the content of the regular file at full, of the size
// its header says. The file is opened without following symlinks and must
// still be the file that was stat'ed and no shorter: a file changed under
// the commit is an error, not a silently wrong layer.
func (uw *upperWriter) copyContent(rel, full string, st *unix.Stat_t) error {
	f, err := os.OpenFile(full, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return uw.errorf(rel, "%w", err)
	}
	defer f.Close()
	var now unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &now); err != nil {
		return uw.errorf(rel, "%w", err)
	}
	if now.Ino != st.Ino || now.Dev != st.Dev {
		return uw.errorf(rel, "replaced while being committed; commit again once nothing writes to it")
	}
	n, err := io.CopyN(uw.tw, f, st.Size)
	if errors.Is(err, io.EOF) {
		return uw.errorf(rel, "shrank from %d to %d bytes while being committed; commit again once nothing writes to it", st.Size, n)
	}
	if err != nil {
		return uw.errorf(rel, "copying its content: %w", err)
	}
	return nil
}
