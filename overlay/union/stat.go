package union

import (
	"github.com/imgmount/imgmount/tarindex"
	"golang.org/x/sys/unix"
)

// NodeStat gives the attributes of a lower tree node. Directories no layer
// stores are 0755 root:root with time 0.
func NodeStat(n *Node) unix.Stat_t {
	st := unix.Stat_t{Ino: n.Ino, Nlink: uint64(max(n.Nlink, 1)), Blksize: 4096, Mode: NodeType(n)}
	e := n.Entry
	if e == nil {
		st.Mode |= 0o755
		return st
	}
	if e.Type == tarindex.TypeSymlink {
		st.Mode |= 0o777 // Linux shows every symlink so, whatever the tar stored
	} else {
		st.Mode |= e.Mode & 0o7777
	}
	st.Uid, st.Gid = e.UID, e.GID
	t := unix.Timespec{Sec: e.MtimeSec, Nsec: int64(e.Mtime)}
	st.Mtim, st.Atim, st.Ctim = t, t, t
	switch e.Type {
	case tarindex.TypeReg, tarindex.TypeHardlink:
		st.Size = e.Size
		st.Blocks = (storedSize(e) + 511) / 512
	case tarindex.TypeSymlink:
		st.Size = int64(len(e.Linkname))
	case tarindex.TypeChar, tarindex.TypeBlock:
		st.Rdev = unix.Mkdev(e.Devmajor, e.Devminor)
	}
	return st
}

// NodeType gives the S_IF* bits of a tree node.
func NodeType(n *Node) uint32 {
	if n.Entry == nil {
		return unix.S_IFDIR
	}
	switch n.Entry.Type {
	case tarindex.TypeDir:
		return unix.S_IFDIR
	case tarindex.TypeSymlink:
		return unix.S_IFLNK
	case tarindex.TypeChar:
		return unix.S_IFCHR
	case tarindex.TypeBlock:
		return unix.S_IFBLK
	case tarindex.TypeFifo:
		return unix.S_IFIFO
	}
	return unix.S_IFREG
}

// SeekSparse answers SEEK_DATA and SEEK_HOLE for a lower file from its
// sparse map (a file that is not sparse is all data).
func SeekSparse(n *Node, off int64, whence int) (int64, error) {
	e := n.Entry
	if e == nil || e.Type == tarindex.TypeDir {
		return 0, unix.EISDIR
	}
	size := max(e.Size, 0)
	if off >= size || off < 0 {
		return 0, unix.ENXIO
	}
	switch whence {
	case unix.SEEK_DATA:
		if e.Sparse == nil {
			return off, nil
		}
		best := int64(-1)
		for _, fr := range e.Sparse {
			if fr.Length <= 0 || fr.Logical+fr.Length <= off {
				continue
			}
			if s := max(fr.Logical, off); best < 0 || s < best {
				best = s
			}
		}
		if best < 0 || best >= size {
			return 0, unix.ENXIO
		}
		return best, nil
	case unix.SEEK_HOLE:
		if e.Sparse == nil {
			return size, nil
		}
		pos := off
		for moved := true; moved && pos < size; {
			moved = false
			for _, fr := range e.Sparse {
				if fr.Length > 0 && fr.Logical <= pos && pos < fr.Logical+fr.Length {
					pos, moved = fr.Logical+fr.Length, true
				}
			}
		}
		return min(pos, size), nil
	}
	return 0, unix.EINVAL
}
