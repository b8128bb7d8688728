package fusefs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/imgmount/imgmount/overlay/cow"
	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/overlay/union"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The writable mount loses setuid, setgid and security.capability on
// write, truncate and chown exactly as the kernel does on a local
// filesystem, however the file was opened: with passthrough (root) the
// kernel writes the upper file itself, so these cases guard every lever
// that could let a write bypass the clearing (handle_killpriv, attribute
// caching, operations by an open file's descriptor).
func TestWritableKillPriv(t *testing.T) {
	requireFUSE(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a writer as another user")
	}
	tree, err := union.BuildUnion(imagetest.Layers(t, rwImage(t)...))
	require.NoError(t, err)
	view, err := cow.New(tree, filepath.Join(t.TempDir(), "upper"))
	require.NoError(t, err)
	t.Cleanup(func() { view.Close() })
	mnt, _ := mountTree(t, tree, Options{Writable: view, AllowOther: true})
	// The parents of t.TempDir are private: let the other user through.
	for d := filepath.Dir(mnt); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		require.NoError(t, os.Chmod(d, 0o755))
	}
	dir := filepath.Join(mnt, "tmp")
	require.NoError(t, os.Mkdir(dir, 0o777))
	require.NoError(t, os.Chmod(dir, 0o777))

	// nobodyFile makes a file owned by nobody with the given mode.
	seq := 0
	nobodyFile := func(mode uint32) string {
		seq++
		p := filepath.Join(dir, fmt.Sprintf("f%d", seq))
		require.NoError(t, os.WriteFile(p, []byte("0123456789"), 0o600))
		require.NoError(t, os.Chown(p, 65534, 65534))
		require.NoError(t, unix.Chmod(p, mode)) // os.Chmod takes setuid as os.ModeSetuid
		require.Equal(t, mode, lstat(t, p).Mode&0o7777)
		return p
	}
	// asNobody runs a shell script as nobody with $F the file.
	asNobody := func(p, script string) {
		t.Helper()
		cmd := exec.Command("/bin/sh", "-c", script)
		cmd.Env = []string{"F=" + p, "PATH=/usr/bin:/bin"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s: %s", script, out)
	}
	mode := func(p string) uint32 { return lstat(t, p).Mode & 0o7777 }

	t.Run("write through a descriptor opened before chmod u+s", func(t *testing.T) {
		p := nobodyFile(0o755)
		asNobody(p, `exec 3>>"$F"; chmod u+s,g+s "$F"; printf x >&3`)
		require.EqualValues(t, 0o755, mode(p), "setuid and setgid (group-executable) cleared")
	})
	t.Run("write through a descriptor opened before fchmod", func(t *testing.T) {
		p := nobodyFile(0o644)
		// chmod through /proc/self/fd/3 reaches the open file.
		asNobody(p, `exec 3>>"$F"; chmod 4755 /proc/self/fd/3; printf x >&3`)
		require.EqualValues(t, 0o755, mode(p))
	})
	t.Run("setgid without group execute stays", func(t *testing.T) {
		p := nobodyFile(0o2644)
		asNobody(p, `printf x >>"$F"`)
		require.EqualValues(t, 0o2644, mode(p), "no group execute: not a setgid program")
	})
	t.Run("truncate", func(t *testing.T) {
		p := nobodyFile(0o4755)
		asNobody(p, `truncate -s 3 "$F"`)
		require.EqualValues(t, 0o755, mode(p))
		require.EqualValues(t, 3, lstat(t, p).Size)
	})
	t.Run("root's write keeps them", func(t *testing.T) {
		p := nobodyFile(0o6755)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		require.NoError(t, err)
		_, err = f.WriteString("x")
		require.NoError(t, err)
		require.NoError(t, f.Close())
		require.EqualValues(t, 0o6755, mode(p), "CAP_FSETID keeps them")
	})
	t.Run("chown", func(t *testing.T) {
		p := nobodyFile(0o6755)
		require.NoError(t, os.Chown(p, 65534, 0))
		require.EqualValues(t, 0o755, mode(p), "chown clears them even for root")
	})
	t.Run("security.capability goes on write", func(t *testing.T) {
		p := nobodyFile(0o755)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		require.NoError(t, err)
		defer f.Close()
		require.NoError(t, unix.Setxattr(p, "security.capability", []byte(capability), 0))
		_, err = f.WriteString("x")
		require.NoError(t, err)
		_, err = unix.Getxattr(p, "security.capability", make([]byte, 64))
		require.ErrorIs(t, err, unix.ENODATA, "a write removes the capability, root's too")
	})
}

// Operations by path on a file that is open go by its open descriptor
// (openFile); one that races with the file's close must never reach
// another file that reused the descriptor's number.
func TestWritableBorrowedHandleRelease(t *testing.T) {
	mnt, _ := mountRW(t, rwImage(t))
	p := filepath.Join(mnt, "etc", "raced")
	require.NoError(t, os.WriteFile(p, nil, 0o600))
	stop := make(chan struct{})
	errc := make(chan error, 2)
	loop := func(step func(i int) error) {
		for i := 0; ; i++ {
			select {
			case <-stop:
				errc <- nil
				return
			default:
			}
			if err := step(i); err != nil {
				errc <- err
				return
			}
		}
	}
	go loop(func(int) error { // open and close p, over and over
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err == nil {
			err = f.Close()
		}
		return err
	})
	go loop(func(i int) error { return unix.Chmod(p, uint32(0o600|i&0o22)) }) // change p by its name
	var errs []error
	halt := func() {
		if errs == nil {
			close(stop)
			errs = []error{<-errc, <-errc}
		}
	}
	t.Cleanup(halt) // before the unmount: nothing may hold the mount busy
	// Meanwhile new files, with descriptors that may take the numbers
	// the closes free: none of them may change mode.
	var others []string
	for i := range 300 {
		o := filepath.Join(mnt, "etc", fmt.Sprintf("other%d", i))
		require.NoError(t, os.WriteFile(o, []byte("x"), 0o640))
		others = append(others, o)
	}
	halt()
	require.NoError(t, errors.Join(errs...))
	for _, o := range others {
		require.EqualValues(t, 0o640, lstat(t, o).Mode&0o7777, o)
	}
}
