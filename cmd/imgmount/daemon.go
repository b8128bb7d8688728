package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imgmount/imgmount/internal/progress"
	"golang.org/x/sys/unix"
)

// Daemonizing, as sshfs and ratarmount do: the command the user runs (the
// parent) starts itself again (the child) with the same arguments, in a
// new session, with stdin and stdout on /dev/null, its stderr until the
// mount is ready, an environment variable saying it is the child, and the
// write end of a pipe as fd 3. The child does all the work of a foreground
// mount and reports through the pipe, one line each:
//
//	progress: <text>   long work under way (the parent shows it on a terminal)
//	task: <id> start <total> <name>
//	                   a task began (progress.Tasks): <id> a number the
//	                   child chose, <total> its bytes (0: unknown)
//	task: <id> add <n> n more bytes of the task done; sent at most every
//	                   taskAddEvery per task (Done sends what is left)
//	task: <id> done [<error>]
//	                   the task ended, with the error if it failed
//	ok                 the mount is ready; the child closes the pipe and
//	                   moves its stderr to /dev/null
//	error: <text>      the mount failed (text to EOF); the child exits with
//	                   the error's status (exitStatus)
//
// The parent replays the tasks into its own bars (or lines, off a
// terminal: see bars.go), and ends what is left of them when the child
// is ready, fails or dies. Lines it does not know are ignored.
//
// The parent exits 0 on ok, with the child's status on an error, and 1
// when the pipe closes without either (the child died). SIGINT and SIGTERM
// to the parent while it waits are passed on to the child, which gives up
// without leaving a mount.
const (
	childEnv    = "IMGMOUNT_DAEMON_CHILD"
	statusFD    = 3
	msgOK       = "ok"
	msgProgress = "progress: "
	// warningPrefix starts progress lines that are warnings.
	warningPrefix = "warning: "
	msgError      = "error: "
	msgTask       = "task: "
	// taskAddEvery is the least time between two add lines of a task.
	taskAddEvery = 200 * time.Millisecond
	childEnvTrue = "1"
)

func isDaemonChild() bool { return os.Getenv(childEnv) == childEnvTrue }

// daemonize is the parent's side.
func daemonize(args []string, stderr io.Writer) int {
	exe, err := os.Executable()
	if err != nil {
		return fail(stderr, fmt.Errorf("cannot start the background process: %w", err))
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fail(stderr, fmt.Errorf("cannot start the background process: %w", err))
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return fail(stderr, fmt.Errorf("cannot start the background process: %w", err))
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), childEnv+"="+childEnvTrue)
	cmd.Stdin, cmd.Stdout = devnull, devnull
	if f, ok := stderr.(*os.File); ok {
		cmd.Stderr = f // the child's panics before readiness stay visible
	} else {
		cmd.Stderr = devnull
	}
	cmd.ExtraFiles = []*os.File{w} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}

	// Catch signals before the child exists, so none is lost.
	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigc)

	err = cmd.Start()
	w.Close()
	devnull.Close()
	if err != nil {
		r.Close()
		return fail(stderr, fmt.Errorf("cannot start the background process: %w", err))
	}
	stopForwarding := make(chan struct{})
	var fwd sync.WaitGroup
	fwd.Add(1)
	go func() {
		defer fwd.Done()
		for {
			select {
			case s := <-sigc:
				_ = cmd.Process.Signal(s)
			case <-stopForwarding:
				return
			}
		}
	}()
	defer func() { close(stopForwarding); fwd.Wait() }()

	tty := isTerminal(stderr)
	bars := newCLITasks(stderr)
	status, msg := readStatusTasks(r, bars.wrap(func(p string) {
		if tty || strings.HasPrefix(p, warningPrefix) {
			fmt.Fprintf(stderr, "imgmount: %s\n", p)
		}
	}), bars)
	r.Close()
	switch status {
	case statusOK:
		// The child serves on; it is not ours to wait for.
		_ = cmd.Process.Release()
		return exitOK
	case statusError:
		return fail(stderr, withStatus(childExitStatus(cmd.Wait()), errors.New(msg)))
	}
	werr := cmd.Wait()
	if werr == nil {
		werr = errors.New("exit status 0")
	}
	return fail(stderr, fmt.Errorf("the background process ended without mounting (%v); run with -f to see what happens", werr))
}

// childExitStatus is the exit status of a child that reported an error:
// exitError if it did not exit with a status of its own.
func childExitStatus(waitErr error) int {
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) && ee.ExitCode() > 0 {
		return ee.ExitCode()
	}
	return exitError
}

type childStatus int

const (
	statusGone childStatus = iota
	statusOK
	statusError
)

// readStatus reads the child's report until ok, an error or EOF.
func readStatus(r io.Reader, progress func(string)) (childStatus, string) {
	return readStatusTasks(r, progress, nil)
}

// readStatusTasks is readStatus replaying the child's tasks into tasks
// (nil: dropped). Tasks the child left running are ended on return.
func readStatusTasks(r io.Reader, message func(string), tasks progress.Tasks) (childStatus, string) {
	rt := &replayedTasks{tasks: tasks, running: map[string]progress.Task{}}
	defer rt.endAll()
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if rest, ok := strings.CutPrefix(line, msgError); ok {
			tail, _ := io.ReadAll(br)
			return statusError, strings.TrimRight(rest+string(tail), "\n")
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == msgOK:
			return statusOK, ""
		case strings.HasPrefix(line, msgProgress):
			message(strings.TrimPrefix(line, msgProgress))
		case strings.HasPrefix(line, msgTask):
			rt.replay(strings.TrimPrefix(line, msgTask))
		}
		if err != nil {
			return statusGone, ""
		}
	}
}

// replayedTasks are the child's tasks as the parent replays them.
type replayedTasks struct {
	tasks   progress.Tasks
	running map[string]progress.Task // by the child's id
}

// errChildGone ends the tasks a child left running.
var errChildGone = errors.New("the background process stopped reporting")

// replay acts on one task line (without "task: ").
func (rt *replayedTasks) replay(line string) {
	if rt.tasks == nil {
		return
	}
	id, rest, _ := strings.Cut(line, " ")
	verb, arg, _ := strings.Cut(rest, " ")
	switch verb {
	case "start":
		ts, name, _ := strings.Cut(arg, " ")
		total, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return
		}
		if t, ok := rt.running[id]; ok { // an id used twice: end the first
			t.Done(errChildGone)
		}
		rt.running[id] = rt.tasks.Start(name, total)
	case "add":
		n, err := strconv.ParseInt(arg, 10, 64)
		if t, ok := rt.running[id]; ok && err == nil {
			t.Add(n)
		}
	case "done":
		t, ok := rt.running[id]
		if !ok {
			return
		}
		delete(rt.running, id)
		if arg != "" {
			t.Done(errors.New(arg))
		} else {
			t.Done(nil)
		}
	}
}

// endAll ends the tasks still running.
func (rt *replayedTasks) endAll() {
	for id, t := range rt.running {
		t.Done(errChildGone)
		delete(rt.running, id)
	}
}

// pipeReporter is the child's side of the status pipe.
type pipeReporter struct {
	mu sync.Mutex
	w  *os.File // nil once ready or failed
}

func (p *pipeReporter) send(s string) {
	if p.w == nil {
		return
	}
	_, _ = io.WriteString(p.w, s)
}

func (p *pipeReporter) progress(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.send(msgProgress + strings.ReplaceAll(msg, "\n", " ") + "\n")
}

// ready detaches from the caller's stderr, then tells the parent, which
// exits: whoever waits on that stderr (out=$(imgmount ...)) is released.
func (p *pipeReporter) ready() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0); err == nil {
		_ = unix.Dup2(int(devnull.Fd()), 2)
		devnull.Close()
	}
	p.send(msgOK + "\n")
	p.closeLocked()
}

// fatal reports the error that ends the child; it exits next.
func (p *pipeReporter) fatal(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.send(msgError + strings.TrimRight(err.Error(), "\n") + "\n")
	p.closeLocked()
}

func (p *pipeReporter) notice(string) {}

// warn goes to the parent as a progress line it prints even when its
// stderr is no terminal.
func (p *pipeReporter) warn(msg string) { p.progress(warningPrefix + msg) }

// pipeTasks sends the child's tasks through the status pipe.
type pipeTasks struct {
	rep  *pipeReporter
	next atomic.Int64
	now  func() time.Time
}

type pipeTask struct {
	pt       *pipeTasks
	id       int64
	pending  int64 // added since the last add line
	lastSent time.Time
}

func (p *pipeReporter) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.send(s)
}

// Start sends a start line.
func (pt *pipeTasks) Start(name string, total int64) progress.Task {
	t := &pipeTask{pt: pt, id: pt.next.Add(1), lastSent: pt.now()}
	pt.rep.line(fmt.Sprintf("%s%d start %d %s\n", msgTask, t.id, max(total, 0), oneLine(name)))
	return t
}

// wrap is print: messages go through the pipe as they are.
func (pt *pipeTasks) wrap(print func(string)) func(string) { return print }

// Add sends an add line if the last was taskAddEvery ago.
func (t *pipeTask) Add(n int64) {
	t.pending += n
	if now := t.pt.now(); t.pending > 0 && now.Sub(t.lastSent) >= taskAddEvery {
		t.flush(now)
	}
}

func (t *pipeTask) flush(now time.Time) {
	t.pt.rep.line(fmt.Sprintf("%s%d add %d\n", msgTask, t.id, t.pending))
	t.pending, t.lastSent = 0, now
}

// Done sends what is left to add, then a done line.
func (t *pipeTask) Done(err error) {
	if t.pending > 0 {
		t.flush(t.pt.now())
	}
	msg := ""
	if err != nil {
		msg = " " + oneLine(err.Error())
		if strings.TrimSpace(msg) == "" {
			msg = " failed"
		}
	}
	t.pt.rep.line(fmt.Sprintf("%s%d done%s\n", msgTask, t.id, msg))
}

func (p *pipeReporter) closeLocked() {
	if p.w != nil {
		p.w.Close()
		p.w = nil
	}
}

// runDaemonChild is the child's side: the foreground mount, reporting
// through fd 3.
func runDaemonChild(cfg *config) int {
	os.Unsetenv(childEnv)
	syscall.CloseOnExec(statusFD) // fusermount3 and friends must not hold it
	rep := &pipeReporter{w: os.NewFile(statusFD, "imgmount-status")}
	cfg.tasks = &pipeTasks{rep: rep, now: time.Now}
	// Paths in cfg are absolute: leave the caller's directory, so that the
	// daemon keeps no other filesystem busy.
	_ = os.Chdir("/")
	if err := runMount(cfg, rep); err != nil {
		rep.fatal(err)
		return exitStatus(err)
	}
	return exitOK
}
