package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"

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
//	ok                 the mount is ready; the child closes the pipe and
//	                   moves its stderr to /dev/null
//	error: <text>      the mount failed (text to EOF); the child exits with
//	                   the error's status (exitStatus)
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
	childEnvTrue  = "1"
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
	status, msg := readStatus(r, func(p string) {
		if tty || strings.HasPrefix(p, warningPrefix) {
			fmt.Fprintf(stderr, "imgmount: %s\n", p)
		}
	})
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
			progress(strings.TrimPrefix(line, msgProgress))
		}
		if err != nil {
			return statusGone, ""
		}
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
	// Paths in cfg are absolute: leave the caller's directory, so that the
	// daemon keeps no other filesystem busy.
	_ = os.Chdir("/")
	if err := runMount(cfg, rep); err != nil {
		rep.fatal(err)
		return exitStatus(err)
	}
	return exitOK
}
