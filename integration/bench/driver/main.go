// Command driver runs imgmount's end-to-end benchmarks against the
// alternatives (tar -x, umoci, podman, gzip, archivemount, fuse-overlayfs,
// kernel overlayfs, fio; ratarmount when $RATARMOUNT names it) in one run,
// and writes one markdown table of medians and ratios.
//
//	go run ./integration/bench/driver [-quick] [-out BENCHMARKS.md] [-readme README.md]
//
// It must run as root (mounts, dropping the page cache, podman). The
// Debian images come from integration/testdata/debian.sh (shared with the
// integration tests, in integration/testdata/out or $IMGMOUNT_TESTDATA);
// the synthetic ones are written by package bench into $BENCH_DIR
// (default /var/tmp/imgmount-bench), with the scratch space of the runs.
// `make bench` and `make bench-quick` run it.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

type config struct {
	repo   string // the module root
	data   string // Debian images (shared with the integration tests)
	out    string // synthetic images and scratch
	bin    string // the imgmount binary under test
	quick  bool
	runs   int // runs of fast measurements
	slow   int // runs of slow ones (podman, tar -x, umoci)
	only   map[string]bool
	ratar  string // $RATARMOUNT
	shared bool   // the machine is shared with other work
	memo   map[string]any
}

// result is one row of the table.
type result struct {
	row      string
	imgmount string
	alts     []string
	target   string
	met      string
	notes    []string
}

func main() {
	var c config
	var outMD, readme, only string
	flag.BoolVar(&c.quick, "quick", false, "the smaller set (make bench-quick)")
	flag.StringVar(&outMD, "out", "", "write the table into this markdown file (between the bench markers)")
	flag.StringVar(&readme, "readme", "", "also write the table into this file's bench markers")
	flag.StringVar(&c.bin, "bin", "", "imgmount binary (default: build it)")
	flag.StringVar(&only, "only", "", "comma-separated row keys to run (default all): "+strings.Join(rowKeys(), ","))
	flag.BoolVar(&c.shared, "shared", os.Getenv("BENCH_SHARED") != "", "say that the machine was shared with other work")
	flag.Parse()
	if err := run(&c, outMD, readme, only); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func run(c *config, outMD, readme, only string) error {
	start := time.Now()
	if os.Geteuid() != 0 {
		return fmt.Errorf("the benchmarks need root (mounts, drop_caches, podman)")
	}
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	c.repo = wd
	for !exists(filepath.Join(c.repo, "go.mod")) {
		if c.repo == "/" {
			return fmt.Errorf("run from inside the imgmount repository")
		}
		c.repo = filepath.Dir(c.repo)
	}
	c.data = os.Getenv("IMGMOUNT_TESTDATA")
	if c.data == "" {
		c.data = filepath.Join(c.repo, "integration", "testdata", "out")
	}
	// Outside the module: the scratch space holds extracted Go sources
	// (the writable-mount row), which go build ./... and gofmt must not see.
	c.out = os.Getenv("BENCH_DIR")
	if c.out == "" {
		c.out = "/var/tmp/imgmount-bench"
	}
	c.runs, c.slow = 5, 3
	if c.quick {
		c.runs, c.slow = 3, 1
	}
	c.ratar = os.Getenv("RATARMOUNT")
	if c.ratar == "" {
		// Where a developer keeps ratarmount run from its source tree
		// (integration/bench/tools.sh says how to set it up).
		if home, err := os.UserHomeDir(); err == nil {
			if p := filepath.Join(home, ".cache", "imgmount-dev", "ratarmount.sh"); exists(p) {
				c.ratar = q(p)
			}
		}
	}
	if only != "" {
		c.only = map[string]bool{}
		for _, k := range strings.Split(only, ",") {
			c.only[strings.TrimSpace(k)] = true
		}
	}
	os.Setenv("PATH", os.Getenv("PATH")+":/usr/local/go/bin:/usr/sbin:/sbin")
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return err
	}
	if c.bin == "" {
		c.bin = filepath.Join(c.out, "imgmount")
		cmd := exec.Command("go", "build", "-o", c.bin, "./cmd/imgmount")
		cmd.Dir = c.repo
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/imgmount: %v\n%s", err, b)
		}
	}
	if err := prepareImages(c); err != nil {
		return err
	}
	load1 := loadavg()
	var results []result
	for _, r := range rows {
		if !c.runsRow(r.key) {
			if c.quick && r.full && c.only[r.key] {
				fmt.Printf("== %s: full set only, not run with -quick\n", r.key)
			}
			continue
		}
		t0 := time.Now()
		name := strings.NewReplacer("{big}", fmtBytes(float64(c.sizes().bigFile)), "{many}", groupDigits(c.sizes().manyFiles), "{untar}", goTree(c.sizes().untarSource)).Replace(r.name)
		fmt.Printf("== %s\n", name)
		res := r.fn(c)
		res.row = name
		if res.target == "" {
			res.target = r.target
		}
		fmt.Printf("   imgmount: %s\n", res.imgmount)
		for _, a := range res.alts {
			fmt.Printf("   %s\n", a)
		}
		fmt.Printf("   target %s: %s (%.0fs)\n", res.target, res.met, time.Since(t0).Seconds())
		results = append(results, res)
	}
	md := render(c, results, load1, loadavg(), time.Since(start))
	fmt.Println()
	fmt.Print(md)
	if c.quick && outMD == "" {
		outMD = filepath.Join(c.out, "quick.md")
	}
	for _, p := range []string{outMD, readme} {
		if p == "" {
			continue
		}
		if err := writeBetweenMarkers(p, md); err != nil {
			return err
		}
		fmt.Printf("wrote the table into %s\n", p)
	}
	fmt.Printf("bench: done in %s\n", time.Since(start).Round(time.Second))
	return nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

const (
	beginMarker = "<!-- bench:begin (written by make bench; edit outside these markers) -->"
	endMarker   = "<!-- bench:end -->"
)

// writeBetweenMarkers replaces what stands between the markers in p (or
// appends the markers and md if p lacks them, creating p if needed).
func writeBetweenMarkers(p, md string) error {
	old, err := os.ReadFile(p)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	block := beginMarker + "\n" + md + endMarker
	i, j := strings.Index(s, beginMarker), strings.Index(s, endMarker)
	if i >= 0 && j > i {
		s = s[:i] + block + s[j+len(endMarker):]
	} else {
		if s != "" && !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		s += block + "\n"
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

func render(c *config, rs []result, load1, load2 string, took time.Duration) string {
	var b strings.Builder
	set := "full set (`make bench`)"
	if c.quick {
		set = "quick set (`make bench-quick`)"
	}
	fmt.Fprintf(&b, "Measured %s, %s, in %s. Medians of %d runs (%d for the slow alternatives marked ×1 or ×%d); page cache warm unless the row says cold.\n\n",
		time.Now().UTC().Format("2006-01-02"), set, took.Round(time.Second), c.runs, c.slow, c.slow)
	fmt.Fprintf(&b, "Machine: %s.", machine())
	fmt.Fprintf(&b, " Load average %s at the start, %s at the end", load1, load2)
	if c.shared {
		b.WriteString(" (a shared machine: other work ran at the same time, so timings are noisy)")
	}
	b.WriteString(".\n\n")
	b.WriteString("| row | imgmount | alternatives, same run (imgmount's time as a share of theirs) | target | met |\n")
	b.WriteString("|---|---|---|---|---|\n")
	for _, r := range rs {
		alts := strings.Join(r.alts, "<br>")
		if alts == "" {
			alts = "-"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.row, r.imgmount, alts, r.target, r.met)
	}
	var notes []string
	for _, r := range rs {
		for _, n := range r.notes {
			notes = append(notes, fmt.Sprintf("- %s: %s", r.row, n))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n" + strings.Join(notes, "\n") + "\n")
	}
	return b.String()
}

// machine describes the CPU, memory, kernel and the disk under the
// benchmark's files.
func machine() string {
	cpu := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	var si syscall.Sysinfo_t
	mem := ""
	if syscall.Sysinfo(&si) == nil {
		mem = fmt.Sprintf(", %.0f GiB RAM", float64(si.Totalram)*float64(si.Unit)/(1<<30))
	}
	var u syscall.Utsname
	kernel := ""
	if syscall.Uname(&u) == nil {
		var s []byte
		for _, ch := range u.Release {
			if ch == 0 {
				break
			}
			s = append(s, byte(ch))
		}
		kernel = ", Linux " + string(s)
	}
	return fmt.Sprintf("%s, %d cores%s%s, %s", cpu, runtime.NumCPU(), mem, kernel, runtime.Version())
}

// groupDigits writes n with thousands separators: 1,000,000.
func groupDigits(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
