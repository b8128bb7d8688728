package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type mountInfo struct {
	mountpoint string
	fstype     string
	source     string
	options    string // per-mount options
	super      string // super options
}

// readMountinfo parses /proc/self/mountinfo.
func readMountinfo() ([]mountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountInfo
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source super
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a := strings.Fields(pre)
		b := strings.Fields(post)
		if len(a) < 6 || len(b) < 2 {
			continue
		}
		mi := mountInfo{mountpoint: unescapeMountinfo(a[4]), options: a[5], fstype: b[0], source: b[1]}
		if len(b) > 2 {
			mi.super = b[2]
		}
		out = append(out, mi)
	}
	return out, sc.Err()
}

// unescapeMountinfo undoes the octal escapes (\040 for space...) of mountinfo.
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

// mountAt returns the mount whose mountpoint is mnt, if any.
func mountAt(mnt string) (mountInfo, bool) {
	ms, _ := readMountinfo()
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].mountpoint == mnt {
			return ms[i], true
		}
	}
	return mountInfo{}, false
}

func isMounted(mnt string) bool {
	_, ok := mountAt(mnt)
	return ok
}

var mountSeq atomic.Int64

// newMountpoint makes an empty directory for a mount, under the run's
// directory (so the leak check finds what a test leaves).
func newMountpoint(t *testing.T) string {
	t.Helper()
	p := filepath.Join(runDir, "mnt", fmt.Sprintf("%03d-%s", mountSeq.Add(1), sanitize(t.Name())))
	require.NoError(t, os.MkdirAll(p, 0o755))
	return p
}

func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' || r == ':' {
			return '_'
		}
		return r
	}, s)
	if len(s) > 60 {
		s = s[len(s)-60:]
	}
	return s
}

// result is what one run of the binary did.
type result struct {
	args   []string
	stdout string
	stderr string
	code   int
	err    error
	// pipesHeld: the process exited but a child kept its stdout or stderr
	// open, so that `out=$(imgmount ...)` would hang.
	pipesHeld bool
}

func (r result) String() string {
	return fmt.Sprintf("imgmount %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// binEnv is the environment of every run of the binary: the user's cache
// is never touched.
func binEnv() []string {
	return append(os.Environ(), "XDG_CACHE_HOME="+xdgCache)
}

// run runs the binary to completion (at most timeout).
func run(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = binEnv()
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	// A daemonizing child may keep our pipes open: do not wait for them
	// longer than this once the main process has exited.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r := result{args: args, stdout: so.String(), stderr: se.String(), code: exitCode(err), err: err}
	if errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil {
		// The command exited, but something it started kept our
		// stdout/stderr open: a daemon that did not detach from them.
		r.code = cmd.ProcessState.ExitCode()
		r.pipesHeld = true
		r.err = nil
	}
	if ctx.Err() != nil {
		r.err = fmt.Errorf("timed out after %s: %w", timeout, err)
	}
	return r
}

// mountImage mounts image at a new mountpoint with the real binary in
// daemon mode, requires that it is mounted when the command returns, and
// unmounts it when the test ends. extra flags come before the arguments.
func mountImage(t *testing.T, image string, extra ...string) string {
	t.Helper()
	mnt := newMountpoint(t)
	var args []string
	if !slices.Contains(extra, "--cache-dir") {
		args = append(args, "--cache-dir", sharedCache)
	}
	args = append(append(args, extra...), image, mnt)
	r := run(t, 5*time.Minute, args...)
	t.Cleanup(func() { unmount(t, mnt) })
	require.Equal(t, 0, r.code, "mount failed: %s", r)
	require.True(t, isMounted(mnt), "imgmount returned 0 but %s is not mounted when it returns: %s", mnt, r)
	require.False(t, r.pipesHeld, "the daemon keeps the caller's stdout/stderr open (out=$(imgmount ...) would hang): %s", r)
	return mnt
}

// unmount unmounts mnt if it is mounted: `imgmount -u` first, then
// fusermount3 -u, then a lazy fusermount3 -u -z as the last resort (which
// fails the test: it should never be needed).
func unmount(t *testing.T, mnt string) {
	t.Helper()
	if !isMounted(mnt) {
		return
	}
	if binPath != "" {
		r := run(t, time.Minute, "-u", mnt)
		if r.code == 0 && waitUnmounted(mnt, 10*time.Second) {
			return
		}
		t.Logf("imgmount -u %s did not unmount: %s", mnt, r)
	}
	if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err == nil && waitUnmounted(mnt, 10*time.Second) {
		return
	} else {
		t.Logf("fusermount3 -u %s: %v %s", mnt, err, out)
	}
	out, err := exec.Command("fusermount3", "-u", "-z", mnt).CombinedOutput()
	t.Errorf("%s needed a lazy unmount (fusermount3 -u -z): %v %s", mnt, err, out)
}

func waitUnmounted(mnt string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for isMounted(mnt) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// servers lists this run's imgmount processes serving mnt.
func servers(mnt string) []procInfo {
	var out []procInfo
	for _, p := range binaryProcesses() {
		if strings.Contains(p.cmdline, mnt) {
			out = append(out, p)
		}
	}
	return out
}

// waitNoServer requires that no imgmount process serves mnt within d.
func waitNoServer(t *testing.T, mnt string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ps := servers(mnt)
		if len(ps) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("imgmount still running for %s after unmount: %v", mnt, ps)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// chroot runs argv inside the mount.
func chroot(t *testing.T, mnt string, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "chroot", append([]string{mnt}, argv...)...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C"}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "chroot %s %s:\n%s", mnt, strings.Join(argv, " "), out)
	return string(out)
}
