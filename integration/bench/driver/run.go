package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imgmount/imgmount/fusefs"
)

// sh runs a bash command line and returns its stdout; a failure carries the
// command and the tail of its output.
func sh(format string, a ...any) (string, error) {
	line := fmt.Sprintf(format, a...)
	cmd := exec.Command("bash", "-c", line)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s: %v: %s", line, err, tail(errb.String()+out.String(), 600))
	}
	return out.String(), nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

func q(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// dropCaches empties the page cache, dentries and inodes (cold rows).
func dropCaches() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		return fmt.Errorf("drop caches: %w", err)
	}
	return nil
}

// trial is one measured operation: setup and teardown are not timed.
type trial struct {
	setup    func() error
	run      func() error
	teardown func() error
}

// measure runs t n times and returns the median duration.
func measure(n int, t trial) (time.Duration, error) {
	var ds []time.Duration
	for i := 0; i < n; i++ {
		if t.setup != nil {
			if err := t.setup(); err != nil {
				return 0, fmt.Errorf("setup: %w", err)
			}
		}
		start := time.Now()
		err := t.run()
		d := time.Since(start)
		if t.teardown != nil {
			if terr := t.teardown(); terr != nil && err == nil {
				err = fmt.Errorf("teardown: %w", terr)
			}
		}
		if err != nil {
			return 0, err
		}
		ds = append(ds, d)
	}
	return median(ds), nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianF(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// isMounted tells whether something is mounted exactly at dir.
func isMounted(dir string) bool {
	ms, err := fusefs.Mounts()
	if err != nil {
		return false
	}
	for _, m := range ms {
		if m.Mountpoint == dir {
			return true
		}
	}
	return false
}

// unmount takes down whatever FUSE or kernel mount is at dir, waiting
// until it is gone.
func unmount(dir string) error {
	if !isMounted(dir) {
		return nil
	}
	var err error
	for i := 0; i < 50; i++ {
		if err = syscall.Unmount(dir, 0); err == nil || !isMounted(dir) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if isMounted(dir) {
		_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		return fmt.Errorf("unmount %s: %v (detached lazily)", dir, err)
	}
	return nil
}

// waitMounted polls until dir is a mountpoint or the deadline passes.
func waitMounted(dir string, d time.Duration) error {
	end := time.Now().Add(d)
	for !isMounted(dir) {
		if time.Now().After(end) {
			return fmt.Errorf("%s: not mounted after %s", dir, d)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return nil
}

// resetDir removes dir (after unmounting anything below it) and creates it
// empty.
func resetDir(dir string) error {
	if err := unmountBelow(dir); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.MkdirAll(dir, 0o755)
}

// unmountBelow unmounts every mount at or below dir, deepest first.
func unmountBelow(dir string) error {
	all, err := fusefs.Mounts()
	if err != nil {
		return err
	}
	var ms []string
	for _, m := range all {
		if m.Mountpoint == dir || strings.HasPrefix(m.Mountpoint, dir+"/") {
			ms = append(ms, m.Mountpoint)
		}
	}
	slices.SortFunc(ms, func(a, b string) int { return len(b) - len(a) })
	for _, m := range ms {
		if err := unmount(m); err != nil {
			return err
		}
	}
	return nil
}

// readAll reads every regular file below root and returns the bytes read.
func readAll(root string) (int64, error) {
	buf := make([]byte, 1<<20)
	var total int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		for {
			n, err := f.Read(buf)
			total += int64(n)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read %s: %w", p, err)
			}
		}
	})
	return total, err
}

// readFile reads one file sequentially in 1 MiB read(2)s.
func readFile(p string) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var total int64
	for {
		n, err := f.Read(buf)
		total += int64(n)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("read %s: %w", p, err)
		}
	}
}

// procStatus reads fields (in kB) from /proc/PID/status.
func procStatus(pid int, keys ...string) (map[string]int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !slices.Contains(keys, k) {
			continue
		}
		f := strings.Fields(v)
		if len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			out[k] = n
		}
	}
	for _, k := range keys {
		if _, ok := out[k]; !ok {
			return nil, fmt.Errorf("/proc/%d/status has no %s", pid, k)
		}
	}
	return out, nil
}

// bg is a process started in the background (a FUSE server in the
// foreground mode), ended by its pid only.
type bg struct {
	cmd  *exec.Cmd
	done chan error
	out  *bytes.Buffer
}

func startBG(name string, args ...string) (*bg, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	b := &bg{cmd: cmd, done: make(chan error, 1), out: &out}
	go func() { b.done <- cmd.Wait() }()
	return b, nil
}

// serveFG starts a FUSE server in the foreground (argv, the mountpoint mnt
// appended), waits until mnt is mounted and its root listed, and returns
// the server and the time that took; end unmounts mnt and stops the
// server.
func serveFG(mnt string, argv ...string) (p *bg, took time.Duration, end func(), err error) {
	start := time.Now()
	p, err = startBG(argv[0], append(append([]string{}, argv[1:]...), mnt)...)
	if err != nil {
		return nil, 0, nil, err
	}
	end = func() {
		_ = unmount(mnt)
		_ = p.stop()
	}
	if err := waitMounted(mnt, 10*time.Minute); err != nil {
		end()
		return nil, 0, nil, fmt.Errorf("%w: %s", err, tail(p.out.String(), 300))
	}
	if err := browse(mnt); err != nil {
		end()
		return nil, 0, nil, err
	}
	return p, time.Since(start), end, nil
}

// peakRSS is the process's peak resident memory so far (VmHWM), in bytes.
func (b *bg) peakRSS() (int64, error) {
	st, err := procStatus(b.cmd.Process.Pid, "VmHWM")
	if err != nil {
		return 0, err
	}
	return st["VmHWM"] << 10, nil
}

// stop waits for the process to exit after its mount went away, and kills
// it (by pid) if it does not.
func (b *bg) stop() error {
	select {
	case <-b.done:
		return nil
	case <-time.After(10 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
		return errors.New(b.cmd.Path + " did not exit after unmount; killed")
	}
}

func fmtDur(d time.Duration) string {
	s := d.Seconds()
	switch {
	case s >= 10:
		return fmt.Sprintf("%.1f s", s)
	case s >= 1:
		return fmt.Sprintf("%.2f s", s)
	case s >= 0.01:
		return fmt.Sprintf("%.0f ms", s*1000)
	default:
		return fmt.Sprintf("%.1f ms", s*1000)
	}
}

func fmtBytes(n float64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", n/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MiB", n/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", n/(1<<10))
	}
	return fmt.Sprintf("%.0f B", n)
}

// pct formats a/b as a percentage or a multiple.
func ratio(a, b float64) string {
	if b <= 0 {
		return "-"
	}
	r := a / b
	if r < 0.001 {
		return fmt.Sprintf("%.2g%%", r*100) // 0.014%, not 0.0%
	}
	if r < 0.1 {
		return fmt.Sprintf("%.1f%%", r*100)
	}
	if r < 1 {
		return fmt.Sprintf("%.0f%%", r*100)
	}
	return fmt.Sprintf("%.2f×", r)
}
