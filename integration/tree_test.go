package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// node is what the comparison knows of one path. Every field is compared.
type node struct {
	Type   string // reg dir symlink fifo char block sock
	Perm   uint32 // st_mode & 07777: setuid, setgid and sticky included
	UID    uint32
	GID    uint32
	Size   int64  // regular files only
	SHA256 string // regular files only
	Target string // symlinks only
	Mtime  string // seconds.nanoseconds
	Rdev   string // devices only: major,minor
	Xattrs string // name=hex(value), sorted; security.selinux left out
	Nlink  uint64 // regular files only
	Links  string // regular files only: every path of the tree sharing this inode

	ino uint64
}

func (n *node) fields() map[string]string {
	return map[string]string{
		"type":   n.Type,
		"perm":   fmt.Sprintf("%#o", n.Perm),
		"uid":    fmt.Sprint(n.UID),
		"gid":    fmt.Sprint(n.GID),
		"size":   fmt.Sprint(n.Size),
		"sha256": n.SHA256,
		"target": n.Target,
		"mtime":  n.Mtime,
		"rdev":   n.Rdev,
		"xattrs": n.Xattrs,
		"nlink":  fmt.Sprint(n.Nlink),
		"links":  n.Links,
	}
}

var fieldOrder = []string{"type", "perm", "uid", "gid", "size", "sha256", "target", "mtime", "rdev", "xattrs", "nlink", "links"}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "reg"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		return "char"
	case unix.S_IFBLK:
		return "block"
	case unix.S_IFSOCK:
		return "sock"
	}
	return fmt.Sprintf("unknown(%#o)", mode&unix.S_IFMT)
}

// walkTree describes every path under root ("." is root itself), by
// lstat: symlinks are never followed.
func walkTree(root string) (map[string]*node, error) {
	nodes := map[string]*node{}
	var errs []error
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		rel, rerr := filepath.Rel(root, p)
		if rerr != nil {
			return rerr
		}
		if err != nil {
			// Record and go on: a directory that cannot be read is a
			// difference, not the end of the comparison.
			errs = append(errs, fmt.Errorf("%s: %w", rel, err))
			if d != nil && d.IsDir() && p != root {
				return fs.SkipDir
			}
			if p == root {
				return err
			}
			return nil
		}
		n, err := describe(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", rel, err))
			return nil
		}
		nodes[filepath.ToSlash(rel)] = n
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Hardlink groups: the paths sharing an inode.
	byIno := map[uint64][]string{}
	for p, n := range nodes {
		if n.Type == "reg" {
			byIno[n.ino] = append(byIno[n.ino], p)
		}
	}
	for _, ps := range byIno {
		sort.Strings(ps)
		g := strings.Join(ps, "|")
		for _, p := range ps {
			nodes[p].Links = g
		}
	}
	return nodes, errors.Join(errs...)
}

func describe(p string) (*node, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil, err
	}
	n := &node{
		Type:  fileType(st.Mode),
		Perm:  st.Mode & 07777,
		UID:   st.Uid,
		GID:   st.Gid,
		Mtime: fmt.Sprintf("%d.%09d", st.Mtim.Sec, st.Mtim.Nsec),
		ino:   st.Ino,
	}
	switch n.Type {
	case "reg":
		n.Size = st.Size
		n.Nlink = uint64(st.Nlink)
		h, err := hashFile(p)
		if err != nil {
			n.SHA256 = "read error: " + err.Error()
		} else {
			n.SHA256 = h
		}
	case "symlink":
		t, err := os.Readlink(p)
		if err != nil {
			t = "readlink error: " + err.Error()
		}
		n.Target = t
	case "char", "block":
		n.Rdev = fmt.Sprintf("%d,%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	x, err := listXattrs(p)
	if err != nil {
		x = "xattr error: " + err.Error()
	}
	n.Xattrs = x
	return n, nil
}

func hashFile(p string) (string, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// listXattrs returns "name=hexvalue" pairs, sorted, comma-separated.
func listXattrs(p string) (string, error) {
	size, err := unix.Llistxattr(p, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return "", nil
		}
		return "", err
	}
	if size == 0 {
		return "", nil
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(p, buf)
	if err != nil {
		return "", err
	}
	var pairs []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if name == "" || name == "security.selinux" {
			continue
		}
		vs, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			pairs = append(pairs, name+"=error:"+err.Error())
			continue
		}
		v := make([]byte, vs)
		if vs > 0 {
			if vs, err = unix.Lgetxattr(p, name, v); err != nil {
				pairs = append(pairs, name+"=error:"+err.Error())
				continue
			}
		}
		pairs = append(pairs, name+"="+hex.EncodeToString(v[:vs]))
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ","), nil
}

// diffTrees compares the mount with the oracle path by path and returns
// one line per difference (at most max, then a count of the rest).
func diffTrees(mount, oracle map[string]*node, max int) []string {
	diffs := diffList{max: max}
	add := diffs.add
	sorted := allPaths(mount, oracle)
	for _, p := range sorted {
		m, o := mount[p], oracle[p]
		switch {
		case m == nil:
			add(fmt.Sprintf("%s: missing from the mount (umoci: %s)", p, o.Type))
		case o == nil:
			add(fmt.Sprintf("%s: in the mount (%s) but not in umoci's unpack", p, m.Type))
		default:
			mf, of := m.fields(), o.fields()
			for _, f := range fieldOrder {
				if mf[f] != of[f] {
					add(fmt.Sprintf("%s: %s: mount %q, umoci %q", p, f, mf[f], of[f]))
				}
			}
		}
	}
	return diffs.lines()
}

// allPaths returns every path present in either tree, sorted.
func allPaths(a, b map[string]*node) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range []map[string]*node{a, b} {
		for p := range m {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	sort.Strings(out)
	return out
}

// diffList keeps the first max differences and counts the rest.
type diffList struct {
	max, total int
	out        []string
}

func (d *diffList) add(s string) {
	d.total++
	if len(d.out) < d.max {
		d.out = append(d.out, s)
	}
}

func (d *diffList) lines() []string {
	if d.total > len(d.out) {
		return append(d.out, fmt.Sprintf("... and %d more differences", d.total-len(d.out)))
	}
	return d.out
}
