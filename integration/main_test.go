package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var (
	repoRoot string // the module's root
	dataDir  string // built test images and oracles, kept between runs
	runDir   string // this run's scratch: the binary, caches, mountpoints
	binPath  string // the imgmount binary built for this run
	buildErr error  // why the binary could not be built, if it could not

	sharedCache string // --cache-dir for tests that do not test caching
	xdgCache    string // XDG_CACHE_HOME given to the binary
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	repoRoot = filepath.Dir(wd)
	if _, err := os.Stat(filepath.Join(repoRoot, "go.mod")); err != nil {
		fmt.Fprintf(os.Stderr, "integration: run from the integration/ directory of the repository (%v)\n", err)
		return 1
	}
	// Go sits in /usr/local/go on our machines and PATH may lack it; sbin
	// holds setcap and debootstrap.
	os.Setenv("PATH", os.Getenv("PATH")+":/usr/local/go/bin:/usr/sbin:/sbin")

	if runDir, err = os.MkdirTemp("", "imgmount-it-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sharedCache = filepath.Join(runDir, "cache")
	xdgCache = filepath.Join(runDir, "xdg-cache")

	dataDir = os.Getenv("IMGMOUNT_TESTDATA")
	if dataDir == "" {
		dataDir = filepath.Join(repoRoot, "integration", "testdata", "out")
	}
	if dataDir, err = filepath.Abs(dataDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	if reason := prerequisites(); reason != "" {
		if os.Getenv("IMGMOUNT_REQUIRE_FUSE") == "1" {
			fmt.Fprintf(os.Stderr, "integration: %s (IMGMOUNT_REQUIRE_FUSE=1)\n", reason)
			return 1
		}
		fmt.Printf("integration: skipping everything: %s\n", reason)
		os.RemoveAll(runDir)
		return m.Run() // every test skips through requireFUSE
	}

	start := time.Now()
	binPath = filepath.Join(runDir, "imgmount")
	if v := os.Getenv("IMGMOUNT_BIN"); v != "" {
		binPath, _ = filepath.Abs(v)
	} else {
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/imgmount")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/imgmount: %v\n%s", err, out)
			fmt.Fprintf(os.Stderr, "integration: %v\n(tests that need the binary will fail; image and oracle tests still run)\n", buildErr)
		} else {
			fmt.Printf("built %s (%.1fs)\n", binPath, time.Since(start).Seconds())
		}
	}

	// One run at a time per data directory: runs share the built images
	// and oracles, and rebuild them in place.
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	lock, err := os.OpenFile(filepath.Join(dataDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		fmt.Printf("integration: another test run is using %s; waiting for it\n", dataDir)
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}

	if err := buildImages(dataDir); err != nil {
		fmt.Fprintf(os.Stderr, "integration: %v\n", err)
		return 1
	}

	code := m.Run()

	if leaks := leakCheck(); leaks != "" {
		fmt.Fprintf(os.Stderr, "integration: LEAKS after the tests:\n%s", leaks)
		code = 1
	}
	if code == 0 || os.Getenv("IMGMOUNT_KEEP") == "" {
		if err := os.RemoveAll(runDir); err != nil {
			fmt.Fprintf(os.Stderr, "integration: removing %s: %v\n", runDir, err)
		}
	}
	return code
}

// prerequisites says why the suite cannot run here, or "".
func prerequisites() string {
	if os.Geteuid() != 0 {
		return "not root (the tests unpack images with owners and devices, and chroot)"
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return "/dev/fuse is unavailable"
	}
	var missing []string
	for _, c := range []string{"fusermount3", "umoci", "skopeo", "debootstrap", "setfattr", "setcap", "tar", "gzip", "zstd", "busybox", "go", "fio"} {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return "missing tools: " + strings.Join(missing, " ") + " (run scripts/setup.sh)"
	}
	return ""
}

// requireFUSE skips the test when the suite cannot mount here (or fails
// it under IMGMOUNT_REQUIRE_FUSE=1), and fails it if the binary did not
// build.
func requireFUSE(t *testing.T) {
	t.Helper()
	if reason := prerequisites(); reason != "" {
		if os.Getenv("IMGMOUNT_REQUIRE_FUSE") == "1" {
			t.Fatalf("%s (IMGMOUNT_REQUIRE_FUSE=1)", reason)
		}
		t.Skip(reason)
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

// requireTools skips (or fails, as requireFUSE) when the image tools are
// missing; for tests that need no binary.
func requireTools(t *testing.T) {
	t.Helper()
	if reason := prerequisites(); reason != "" {
		if os.Getenv("IMGMOUNT_REQUIRE_FUSE") == "1" {
			t.Fatalf("%s (IMGMOUNT_REQUIRE_FUSE=1)", reason)
		}
		t.Skip(reason)
	}
}

// leakCheck reports mounts left under the run's directory (and unmounts
// them) and imgmount processes still running from this run's binary (and
// kills them).
func leakCheck() string {
	var b strings.Builder
	mounts, _ := readMountinfo()
	for _, mi := range mounts {
		if strings.HasPrefix(mi.mountpoint, runDir+"/") || strings.HasPrefix(mi.mountpoint, dataDir+"/") {
			fmt.Fprintf(&b, "  mount left: %s (%s)\n", mi.mountpoint, mi.fstype)
			_ = exec.Command("fusermount3", "-u", "-z", mi.mountpoint).Run()
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids := binaryProcesses()
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, p := range pids {
				fmt.Fprintf(&b, "  process left: pid %d: %s\n", p.pid, p.cmdline)
				if proc, err := os.FindProcess(p.pid); err == nil {
					_ = proc.Kill()
				}
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return b.String()
}

type procInfo struct {
	pid     int
	cmdline string
}

// binaryProcesses lists the running processes whose executable is this
// run's imgmount binary.
func binaryProcesses() []procInfo {
	if binPath == "" {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var out []procInfo
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || strings.TrimSuffix(exe, " (deleted)") != binPath {
			continue
		}
		cl, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		out = append(out, procInfo{pid: pid, cmdline: strings.ReplaceAll(strings.TrimRight(string(cl), "\x00"), "\x00", " ")})
	}
	return out
}

// errorsAs is errors.As for an *exec.ExitError.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
