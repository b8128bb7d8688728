package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/imgmount/imgmount/internal/progress"
	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/sys/unix"
)

// Progress of long work (indexing a layer, writing a commit, a squash or
// an export) on the command line. Work reports byte counts through
// progress.Tasks; a progressSink turns them into
//
//   - on a terminal, a live bar per task (name, bytes done of the total,
//     rate, time left), drawn with mpb; a finished bar stays as a line
//     saying how much, how long and how fast; messages are printed above
//     the bars (see wrap), never through them;
//   - elsewhere, plain lines: one when a task starts, at most one every
//     plainEvery while it runs, one when it ends, and no control
//     characters. A task that ends within plainQuiet prints nothing, as
//     imgmount prints no progress off a terminal for quick work (scripts
//     read its stderr for errors and warnings);
//   - in a daemonized mount's child, lines on the status pipe that the
//     parent replays into its own sink (daemon.go).
const (
	plainQuiet = 2 * time.Second
	plainEvery = 5 * time.Second
	// barPush is how often a bar hears of Add: a tar writer adds a header
	// of 512 bytes at a time, and mpb takes a channel operation per update.
	barPush = 100 * time.Millisecond
	// barRest is about the width of a bar and its text right of it; the
	// name takes what is left of the terminal's width, within
	// barNameMin and barNameMax.
	barRest    = 64
	barNameMin = 20
	barNameMax = 72
)

// progressSink is what the command line reports long work through.
type progressSink interface {
	progress.Tasks
	// wrap returns print (which prints "imgmount: MSG" on a terminal)
	// made safe to call while bars are drawn.
	wrap(print func(msg string)) func(msg string)
}

// sinkMu guards config.tasks, set on first use.
var sinkMu sync.Mutex

// progressSink is where cfg's long work reports: what the run set (the
// daemon child's pipe, a commit's own), else bars or lines on stderr.
func (cfg *config) progressSink() progressSink {
	sinkMu.Lock()
	defer sinkMu.Unlock()
	if cfg.tasks == nil {
		cfg.tasks = newCLITasks(os.Stderr)
	}
	return cfg.tasks
}

// cliTasks draws tasks on out: bars when it is a terminal, else lines.
type cliTasks struct {
	out   io.Writer
	tty   bool
	cols  int // the terminal's width, for bars
	now   func() time.Time
	quiet time.Duration // lines only: tasks shorter than this print nothing
	every time.Duration // lines only: the least time between two lines of a task

	mu     sync.Mutex // orders writes to out; guards the fields below
	p      *mpb.Progress
	active int  // tasks started and not done
	halted bool // halt was called: nothing more is drawn
}

func newCLITasks(out io.Writer) *cliTasks {
	cols := drawable(out)
	return &cliTasks{out: out, tty: cols > 0, cols: cols, now: time.Now, quiet: plainQuiet, every: plainEvery}
}

// drawable is the width of w if bars can be drawn on it, else 0: it must
// be a terminal that says its size (mpb draws nothing on one of 0 rows,
// as a pseudo-terminal nobody sized reports).
func drawable(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok || !isTerminal(w) {
		return 0
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil || ws.Row == 0 {
		return 0
	}
	return int(ws.Col)
}

// cliTask is one task of a cliTasks. Add and Done come from one goroutine
// at a time; the bar's decorator reads done and final from mpb's.
type cliTask struct {
	c     *cliTasks
	name  string
	total int64
	start time.Time
	done  atomic.Int64
	final atomic.Pointer[string] // the bar's text once done

	bar      *mpb.Bar // nil for lines, and until the first Add
	barTried bool
	pushed   int64 // what the bar was last told
	lastPush time.Time
	shown    bool      // lines: the start line was printed
	lastLine time.Time // lines: when the last line was printed
}

// Start begins a task.
func (c *cliTasks) Start(name string, total int64) progress.Task {
	name = oneLine(name)
	t := &cliTask{c: c, name: name, total: max(total, 0), start: c.now()}
	t.lastPush = t.start
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.halted {
		return t
	}
	if !c.tty && c.quiet <= 0 {
		t.startLineLocked()
	}
	return t
}

// addBar gives t its bar, on its first bytes: a task that ends having
// done nothing (an index loaded from the cache) never shows one.
func (t *cliTask) addBar() {
	c := t.c
	t.barTried = true
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.halted {
		return
	}
	if c.p == nil {
		c.p = mpb.New(mpb.WithOutput(c.out), mpb.WithWidth(24), mpb.PopCompletedMode(),
			mpb.WithRefreshRate(150*time.Millisecond))
	}
	var style mpb.BarFillerBuilder = mpb.BarStyle().Lbound("[").Rbound("]")
	if t.total == 0 { // no bar to fill: a spinner while it runs
		style = mpb.SpinnerStyle().PositionLeft()
	}
	// Created with no total and given it after: completion then waits for
	// Done (SetTotal with forceComplete), so the last text is Done's.
	bar, err := c.p.Add(0, style.Build(),
		mpb.PrependDecorators(decor.Name(shorten(t.name, min(max(c.cols-barRest, barNameMin), barNameMax)), decor.WC{C: decor.DindentRight | decor.DextraSpace | decor.DSyncWidth})),
		mpb.AppendDecorators(decor.Any(t.barText, decor.WC{C: decor.DextraSpace})),
		mpb.BarOptional(mpb.BarFillerClearOnComplete(), t.total == 0),
		mpb.BarOptional(mpb.BarFillerClearOnAbort(), t.total == 0),
	)
	if err != nil {
		return // the container is shutting down: the task draws nothing
	}
	if t.total > 0 {
		bar.SetTotal(t.total, false)
	}
	t.bar = bar
	c.active++
}

// Add records n more bytes.
func (t *cliTask) Add(n int64) {
	if n <= 0 {
		return
	}
	done := t.done.Add(n)
	c := t.c
	if c.tty && !t.barTried {
		t.addBar()
	}
	if t.bar != nil {
		if now := c.now(); now.Sub(t.lastPush) >= barPush {
			t.bar.SetCurrent(done)
			t.pushed, t.lastPush = done, now
		}
		return
	}
	if c.tty {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.halted {
		return
	}
	switch {
	case !t.shown && now.Sub(t.start) >= c.quiet:
		t.startLineLocked()
	case t.shown && now.Sub(t.lastLine) >= c.every:
		t.lastLine = now
		fmt.Fprintf(c.out, "imgmount: %s: %s\n", t.name, t.running(done, now))
	}
}

// Done ends the task.
func (t *cliTask) Done(err error) {
	c := t.c
	now := c.now()
	done := t.done.Load()
	text := finalText(done, now.Sub(t.start), err)
	if t.bar != nil {
		t.final.Store(&text)
		switch {
		case err != nil:
			t.bar.Abort(false)
		default:
			t.bar.SetCurrent(done)
			t.bar.SetTotal(-1, true)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.active--
		if c.active == 0 && c.p != nil {
			c.p.Wait() // every bar is complete: the last frame is drawn
			c.p = nil
		}
		return
	}
	if c.tty {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.halted || !t.shown && now.Sub(t.start) < c.quiet {
		return
	}
	if !t.shown {
		t.startLineLocked()
	}
	fmt.Fprintf(c.out, "imgmount: %s: %s\n", t.name, text)
}

func (t *cliTask) startLineLocked() {
	t.shown, t.lastLine = true, t.c.now()
	if t.total > 0 {
		fmt.Fprintf(t.c.out, "imgmount: %s: started, %s\n", t.name, archive.HumanSize(t.total))
	} else {
		fmt.Fprintf(t.c.out, "imgmount: %s: started\n", t.name)
	}
}

// running is how far the task has got: "12.3 MB of 52.0 MB (23%),
// 4.10 MB/s".
func (t *cliTask) running(done int64, now time.Time) string {
	s := archive.HumanSize(done)
	if t.total > 0 {
		s += fmt.Sprintf(" of %s (%d%%)", archive.HumanSize(t.total), min(100, done*100/t.total))
	}
	if r := rate(done, now.Sub(t.start)); r != "" {
		s += ", " + r
	}
	return s
}

// barText is what a bar shows right of it: bytes, rate, time left; once
// done, what Done said.
func (t *cliTask) barText(decor.Statistics) string {
	if f := t.final.Load(); f != nil {
		return *f
	}
	done := t.done.Load()
	el := t.c.now().Sub(t.start)
	s := archive.HumanSize(done)
	if t.total > 0 {
		s += " / " + archive.HumanSize(t.total)
	}
	if r := rate(done, el); r != "" {
		s += "  " + r
		if t.total > done && done > 0 {
			left := time.Duration(float64(el) * float64(t.total-done) / float64(done))
			s += "  ETA " + shortDuration(left)
		}
	}
	return s
}

// finalText says how a task ended: "done, 52.0 MB in 3.1s (16.8 MB/s)".
func finalText(done int64, el time.Duration, err error) string {
	if err != nil {
		return fmt.Sprintf("failed after %s, %s: %s", archive.HumanSize(done), shortDuration(el), oneLine(err.Error()))
	}
	s := fmt.Sprintf("done, %s in %s", archive.HumanSize(done), shortDuration(el))
	if r := rate(done, el); r != "" {
		s += " (" + r + ")"
	}
	return s
}

// rate is done bytes over el, "" when too early to say.
func rate(done int64, el time.Duration) string {
	if el < 50*time.Millisecond {
		return ""
	}
	return archive.HumanSize(int64(float64(done)/el.Seconds())) + "/s"
}

// shortDuration is d for people: "0.4s", "12s", "3m05s", "1h02m".
func shortDuration(d time.Duration) string {
	switch {
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second).Seconds()))
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	}
	d = d.Round(time.Minute)
	return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
}

// wrap prints through the bars while they are drawn (where print would
// have printed "imgmount: MSG": the bars are only drawn on a terminal).
func (c *cliTasks) wrap(print func(string)) func(string) {
	if print == nil {
		return nil
	}
	return func(msg string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.p != nil {
			_, _ = c.p.Write([]byte("imgmount: " + oneLine(msg) + "\n"))
			return
		}
		print(msg)
	}
}

// println prints line on out, above the bars if they are drawn.
func (c *cliTasks) println(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.p != nil {
		_, _ = c.p.Write([]byte(line + "\n"))
		return
	}
	fmt.Fprintln(c.out, line)
}

// halt stops drawing for good (the run is about to exit): the bars stop
// where they are, and what is printed next starts on a line of its own.
func (c *cliTasks) halt() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.halted = true
	if c.p != nil {
		c.p.Shutdown()
		c.p = nil
	}
}

// oneLine is s with its line breaks and other control characters made
// spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// shorten cuts s to n runes, marking the cut.
func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
