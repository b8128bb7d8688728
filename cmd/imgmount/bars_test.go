package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imgmount/imgmount/internal/progress"
	"github.com/stretchr/testify/require"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func plainTasks(out *bytes.Buffer, clk *fakeClock, quiet time.Duration) *cliTasks {
	return &cliTasks{out: out, now: clk.now, quiet: quiet, every: 5 * time.Second}
}

func TestPlainLines(t *testing.T) {
	var out bytes.Buffer
	clk := &fakeClock{t: time.Unix(1700000000, 0)}
	c := plainTasks(&out, clk, 0)
	task := c.Start("layer 1 (sha256:0123abcd, 50 MB gzip)", 50_000_000)
	for range 10 { // 10 MB a second for 4 s: one line at 5 s at most
		clk.advance(time.Second)
		task.Add(10_000_000 / 1)
		if clk.now().Unix() == 1700000004 {
			break
		}
	}
	clk.advance(time.Second)
	task.Add(10_000_000)
	clk.advance(500 * time.Millisecond)
	task.Done(nil)
	require.Equal(t, `imgmount: layer 1 (sha256:0123abcd, 50 MB gzip): started, 50.0 MB
imgmount: layer 1 (sha256:0123abcd, 50 MB gzip): 50.0 MB of 50.0 MB (100%), 10.0 MB/s
imgmount: layer 1 (sha256:0123abcd, 50 MB gzip): done, 50.0 MB in 5.5s (9.09 MB/s)
`, out.String())
	require.NotContains(t, out.String(), "\x1b", "no control characters")
	require.NotContains(t, out.String(), "\r")
}

func TestPlainLinesThrottled(t *testing.T) {
	var out bytes.Buffer
	clk := &fakeClock{t: time.Unix(0, 0)}
	c := plainTasks(&out, clk, 0)
	task := c.Start("writing the image", 0)
	for range 100 { // 20 s in steps of 200 ms
		clk.advance(200 * time.Millisecond)
		task.Add(1000)
	}
	task.Done(errors.New("no space left\non device"))
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	require.Len(t, lines, 1+4+1, "%s", out.String())
	require.Equal(t, "imgmount: writing the image: started", lines[0])
	require.Equal(t, "imgmount: writing the image: 25.0 kB, 5.00 kB/s", lines[1], "no total: bytes and rate")
	require.Equal(t, "imgmount: writing the image: failed after 100 kB, 20s: no space left on device", lines[5])
}

// Off a terminal, quick tasks print nothing, as other progress does; a
// long one starts printing once it is past the quiet time.
func TestPlainLinesQuiet(t *testing.T) {
	var out bytes.Buffer
	clk := &fakeClock{t: time.Unix(0, 0)}
	c := plainTasks(&out, clk, 2*time.Second)
	quick := c.Start("quick", 100)
	clk.advance(time.Second)
	quick.Add(100)
	quick.Done(nil)
	quickFail := c.Start("quick failure", 100)
	quickFail.Done(errors.New("bad"))
	require.Empty(t, out.String())

	slow := c.Start("slow", 0)
	clk.advance(3 * time.Second)
	slow.Add(3000)
	require.Equal(t, "imgmount: slow: started\n", out.String())
	clk.advance(time.Second)
	slow.Done(nil)
	require.Equal(t, "imgmount: slow: started\nimgmount: slow: done, 3.00 kB in 4.0s (750 B/s)\n", out.String())

	silent := c.Start("no adds", 0) // never added to: its start line comes with its end
	clk.advance(3 * time.Second)
	silent.Done(nil)
	require.Contains(t, out.String(), "imgmount: no adds: started\nimgmount: no adds: done, 0 B in 3.0s (0 B/s)\n")
}

func TestNilAndEmptyTotals(t *testing.T) {
	task := progress.Start(nil, "nothing", 0) // nil Tasks reports nothing
	task.Add(5)
	task.Done(nil)

	var out bytes.Buffer
	clk := &fakeClock{t: time.Unix(0, 0)}
	c := plainTasks(&out, clk, 0)
	neg := c.Start("negative", -1) // an unknown total however spelt
	neg.Add(0)
	neg.Add(-3)
	neg.Done(nil)
	require.Equal(t, "imgmount: negative: started\nimgmount: negative: done, 0 B in 0.0s\n", out.String())

	var nothing bytes.Buffer
	c = &cliTasks{out: &nothing, tty: true, now: time.Now} // no terminal behind: mpb draws nothing
	empty := c.Start("empty", 0)
	empty.Done(nil)
	require.Nil(t, c.p, "the container goes with the last bar")
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		400 * time.Millisecond:        "0.4s",
		12 * time.Second:              "12s",
		3*time.Minute + 5*time.Second: "3m05s",
		62 * time.Minute:              "1h02m",
	} {
		require.Equal(t, want, shortDuration(d))
	}
	require.Equal(t, "a b c", oneLine("a\nb\x1bc"))
	require.Equal(t, "abc…", shorten("abcdef", 4))
}

// Tasks run in parallel (layers are indexed so): go test -race.
func TestConcurrentTasks(t *testing.T) {
	var out bytes.Buffer
	for _, c := range []*cliTasks{
		{out: &out, now: time.Now, every: time.Millisecond},
		{out: &out, tty: true, now: time.Now}, // bars, drawn nowhere
	} {
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				task := c.Start(fmt.Sprintf("layer %d", i), 1000)
				for range 100 {
					task.Add(10)
				}
				task.Done(nil)
			})
			wg.Go(func() { c.wrap(func(string) {})("a message") })
		}
		wg.Wait()
		require.Zero(t, c.active)
		require.Nil(t, c.p)
	}
	require.Equal(t, 8, strings.Count(out.String(), ": done, 1.00 kB in "))
}

// recTasks records what it is told, as the parent's bars would draw it.
type recTasks struct {
	mu     sync.Mutex
	events []string
}

type recTask struct {
	r    *recTasks
	name string
}

func (r *recTasks) Start(name string, total int64) progress.Task {
	r.log(fmt.Sprintf("start %q %d", name, total))
	return &recTask{r: r, name: name}
}

func (r *recTasks) log(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, s)
}

func (t *recTask) Add(n int64) { t.r.log(fmt.Sprintf("add %q %d", t.name, n)) }
func (t *recTask) Done(err error) {
	if err != nil {
		t.r.log(fmt.Sprintf("done %q %v", t.name, err))
		return
	}
	t.r.log(fmt.Sprintf("done %q", t.name))
}

// The child's tasks cross the status pipe and are replayed by the parent;
// add lines are throttled, and nothing is lost.
func TestDaemonTaskProtocol(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	clk := &fakeClock{t: time.Unix(0, 0)}
	rep := &pipeReporter{w: w}
	child := &pipeTasks{rep: rep, now: clk.now}

	var rec recTasks
	var msgs []string
	type result struct {
		st  childStatus
		msg string
	}
	res := make(chan result)
	go func() {
		st, msg := readStatusTasks(r, func(s string) { msgs = append(msgs, s) }, &rec)
		res <- result{st, msg}
	}()

	a := child.Start("layer 1 (sha256:0123abcd,\n52 MB gzip)", 52_000_000)
	rep.progress("decompressing layer 1")
	for range 10 { // 10 adds in 1 s: 5 add lines at most
		clk.advance(100 * time.Millisecond)
		a.Add(1000)
	}
	b := child.Start("layer 2", 0)
	b.Add(7)
	b.Done(errors.New("corrupt gzip\nstream"))
	a.Done(nil)
	c := child.Start("left running", 10) // the parent ends it
	c.Add(3)
	rep.ready()
	got := <-res
	r.Close()
	require.Equal(t, statusOK, got.st)
	require.Equal(t, []string{"decompressing layer 1"}, msgs)

	var added int64
	var adds int
	for _, e := range rec.events {
		var n int64
		if _, err := fmt.Sscanf(e, `add "layer 1 (sha256:0123abcd, 52 MB gzip)" %d`, &n); err == nil {
			added += n
			adds++
		}
	}
	require.Equal(t, int64(10_000), added, "%q", rec.events)
	require.LessOrEqual(t, adds, 5, "%q", rec.events)
	require.Equal(t, []string{
		`start "layer 1 (sha256:0123abcd, 52 MB gzip)" 52000000`,
	}, rec.events[:1])
	require.Equal(t, []string{
		`start "layer 2" 0`,
		`add "layer 2" 7`,
		`done "layer 2" corrupt gzip stream`,
	}, rec.events[1+adds:4+adds])
	require.Equal(t, []string{
		`done "layer 1 (sha256:0123abcd, 52 MB gzip)"`,
		`start "left running" 10`,
		`done "left running" the background process stopped reporting`,
	}, rec.events[4+adds:], "an unsent add of a task left running is lost; the task is ended")
}

// Lines the parent does not know, or that name no task, are ignored;
// readStatus without tasks drops task lines.
func TestDaemonTaskLinesTolerated(t *testing.T) {
	var rec recTasks
	in := "task: 1 start x y\ntask: 2 add 5\ntask: 3 done\ntask: 1 start 10 a b\ntask: 1 add nine\ntask: 1 add 9\nbogus\ntask: 1 frobnicate\ntask: 1 done\nok\n"
	st, _ := readStatusTasks(strings.NewReader(in), func(string) {}, &rec)
	require.Equal(t, statusOK, st)
	require.Equal(t, []string{`start "a b" 10`, `add "a b" 9`, `done "a b"`}, rec.events)

	st, msg := readStatus(strings.NewReader("task: 1 start 10 a\nerror: it broke\n"), func(string) {})
	require.Equal(t, statusError, st)
	require.Equal(t, "it broke", msg)
}
