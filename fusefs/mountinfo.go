package fusefs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// MountInfo is one line of /proc/self/mountinfo.
type MountInfo struct {
	Mountpoint string
	FSType     string // e.g. "fuse.imgmount"
	Source     string // e.g. "imgmount:/path/app.tar"
	Options    string // per-mount options
}

// IsImgmount tells whether the mount is one of ours.
func (m MountInfo) IsImgmount() bool { return m.FSType == "fuse."+fsType }

// IsFUSE tells whether the mount is a FUSE mount.
func (m MountInfo) IsFUSE() bool {
	return m.FSType == "fuse" || strings.HasPrefix(m.FSType, "fuse.") || m.FSType == "fuseblk" || strings.HasPrefix(m.FSType, "fuseblk.")
}

// Mounts reads /proc/self/mountinfo. It never touches the mountpoints.
func Mounts() ([]MountInfo, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return parseMountinfo(b), nil
}

func parseMountinfo(b []byte) []MountInfo {
	var out []MountInfo
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source super
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, p := strings.Fields(pre), strings.Fields(post)
		if len(a) < 6 || len(p) < 2 {
			continue
		}
		out = append(out, MountInfo{
			Mountpoint: unescapeMountinfo(a[4]),
			Options:    a[5],
			FSType:     p[0],
			Source:     unescapeMountinfo(p[1]),
		})
	}
	return out
}

// unescapeMountinfo undoes the octal escapes (\040 for a space...).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// MountedAt returns the topmost mount at path (an absolute, cleaned path
// with symlinks resolved), if any.
func MountedAt(path string) (MountInfo, bool, error) {
	ms, err := Mounts()
	if err != nil {
		return MountInfo{}, false, err
	}
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Mountpoint == path {
			return ms[i], true, nil
		}
	}
	return MountInfo{}, false, nil
}

// ErrBusy says that an unmount failed because the mount is in use.
var ErrBusy = errors.New("busy")

// Unmount unmounts the FUSE mount at path: umount(2) as root, else
// fusermount3 -u. A mount in use fails with an error wrapping ErrBusy.
func Unmount(path string) error {
	if os.Geteuid() == 0 {
		err := syscall.Unmount(path, 0)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EBUSY):
			return fmt.Errorf("%w: %w", ErrBusy, err)
		case !errors.Is(err, syscall.EPERM):
			return err
		}
		// EPERM as root (a user namespace?): let fusermount3 try.
	}
	return fusermount(path, "-u")
}

// UnmountLazy detaches the mount at path now; the kernel finishes the
// unmount once nothing uses it any more.
func UnmountLazy(path string) error {
	if os.Geteuid() == 0 {
		if err := syscall.Unmount(path, syscall.MNT_DETACH); err == nil {
			return nil
		}
	}
	return fusermount(path, "-u", "-z")
}

func fusermount(path string, args ...string) error {
	bin, err := exec.LookPath("fusermount3")
	if err != nil {
		if bin, err = exec.LookPath("fusermount"); err != nil {
			return errors.New("neither fusermount3 nor fusermount is installed (the fuse3 package has it)")
		}
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, append(args, path)...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		// fusermount3: failed to unmount /mnt: Device or resource busy
		if strings.Contains(msg, "busy") {
			return fmt.Errorf("%w: %s", ErrBusy, msg)
		}
		return errors.New(msg)
	}
	return nil
}
