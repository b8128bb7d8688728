package overlay

import (
	"io/fs"
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
