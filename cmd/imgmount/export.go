package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/imgmount/imgmount/overlay/repack"
	"golang.org/x/sys/unix"
)

// parseExport parses the arguments of `imgmount export`.
func parseExport(args []string, getenv env) (*config, error) {
	cfg := &config{mode: modeExport, repack: &repackConfig{}}
	fl := newFlagSet("imgmount export")
	var help bool
	var output string
	commonRepackFlags(fl, cfg, &output, &help)
	if err := fl.Parse(args); err != nil {
		return nil, usagef("export: %v", err)
	}
	if help {
		cfg.mode = modeHelp
		return cfg, nil
	}
	if err := finishRepack(cfg, fl, "export", output, getenv); err != nil {
		return nil, err
	}
	return cfg, nil
}

// runExport is imgmount export: the union root filesystem as one tar.
func runExport(cfg *config, stdout, stderr io.Writer) error {
	r, img, err := startRepack(cfg, stdout, stderr)
	if err != nil {
		return err
	}
	defer r.end()
	return r.work(func() error {
		defer img.Close() // here: the work may outlive runExport (see work)
		out, err := r.create(cfg.repack.output, stdout)
		if err != nil {
			return err
		}
		defer out.abort()
		with := ""
		if cfg.upper != "" {
			with = " with the upper directory " + cfg.upper
		}
		r.progress("exporting the root filesystem of " + cfg.image + with)
		n, err := repack.Export(img, out.w, repack.ExportOptions{Upper: cfg.upper, TempDir: out.scratch, Warn: r.warn, Tasks: r.tasks, Free: out.free(), Context: r.ctx})
		if err != nil {
			return err
		}
		if err := out.finish(); err != nil {
			return err
		}
		r.summary(fmt.Sprintf("wrote %s: %d entries", cfg.repack.output, n))
		return nil
	})
}

// repackRun is one commit, export, thin or complete: how it reports, the
// signals that interrupt it, and the output it is writing, which it
// removes if the run fails or is interrupted.
//
// Signals (SIGINT, SIGTERM, SIGHUP), as for a mount (runMount): while the
// run opens what it reads (unlessSignalled), a signal makes it return at
// once, nothing written; while it writes (work), a signal cancels ctx, the
// work stops at its next write and returns through its deferred cleanup,
// and the run returns the interruption (exitError). Either way the output
// is never left half-written under its final name.
type repackRun struct {
	stderr io.Writer
	tty    bool
	tasks  *cliTasks // bars or lines on stderr (bars.go)

	sigc chan os.Signal // from newRepackRun to end
	// ctx is cancelled by a signal (and by end); the run hands it to
	// repack, whose writes then fail.
	ctx    context.Context
	cancel context.CancelFunc

	// mu orders the final rename against an interruption, and guards out
	// and sig.
	mu  sync.Mutex
	out *output   // the output being written, once created
	sig os.Signal // what interrupted the run, once something has
}

// newRepackRun starts a run, watching for signals; call end when the run
// is over.
func newRepackRun(stderr io.Writer) *repackRun {
	r := &repackRun{stderr: stderr, tty: isTerminal(stderr), tasks: newCLITasks(stderr), sigc: make(chan os.Signal, 1)}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	signal.Notify(r.sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	return r
}

// end stops watching signals.
func (r *repackRun) end() {
	signal.Stop(r.sigc)
	r.cancel()
}

// interruptGrace is how long an interrupted run waits for its work to
// stop. The work stops at its next write, unless that write cannot return
// (stdout a full pipe nobody reads) or a long read comes first (hashing a
// blob before writing it). A variable for the tests.
var interruptGrace = 2 * time.Second

// work runs do, the part of the run that writes, on a goroutine of its
// own, and returns its error. On a signal it cancels r.ctx, waits for do
// to return (its deferred cleanup removes the temporary file), and returns
// the interruption. Work that has not stopped after interruptGrace, or by
// a second signal, is left to end with the process: work removes the
// output's directory itself, and finish, seeing r.ctx cancelled, no longer
// renames anything into place. do must release what it holds (the image)
// itself, with defer.
func (r *repackRun) work(do func() error) error {
	done := make(chan error, 1)
	go func() { done <- do() }()
	select {
	case err := <-done:
		select {
		case s := <-r.sigc: // came as the work ended
			return r.interrupted(s)
		default:
			return err
		}
	case s := <-r.sigc:
		r.interrupt(s)
		select {
		case <-done:
		case <-r.sigc:
			r.abandon()
		case <-time.After(interruptGrace):
			r.abandon()
		}
		return r.interruption()
	}
}

// abandon removes the output's directory of a run whose work does not
// stop, the temporary file in it.
func (r *repackRun) abandon() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.out != nil {
		os.RemoveAll(r.out.dir)
	}
}

// interrupt records the signal s, stops the bars and cancels r.ctx.
func (r *repackRun) interrupt(s os.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sig == nil {
		r.sig = s
	}
	r.tasks.halt()
	r.cancel()
}

// interrupted is interrupt, then the interruption.
func (r *repackRun) interrupted(s os.Signal) error {
	r.interrupt(s)
	return r.interruption()
}

// interruption is the error an interrupted run returns: it says whether
// the output was written.
func (r *repackRun) interruption() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	o, s := r.out, sigName(r.sig)
	switch {
	case o == nil:
		return fmt.Errorf("interrupted by %s; nothing was written", s)
	case o.done:
		return fmt.Errorf("interrupted by %s after %s was written", s, o.final)
	default:
		return fmt.Errorf("interrupted by %s; %s was not written", s, o.final)
	}
}

// progress reports long steps on a terminal.
func (r *repackRun) progress(msg string) {
	if r.tty {
		r.tasks.println("imgmount: " + msg)
	}
}

// warn reports what the user must know, terminal or not.
func (r *repackRun) warn(msg string) { r.tasks.println("imgmount: warning: " + msg) }

// summary reports the result on a terminal.
func (r *repackRun) summary(msg string) { r.progress(msg) }

// output is a file being written: under a temporary name in a private
// directory beside its final name, renamed into place by finish, so that
// the final name only ever holds a complete file. Writing to stdout has
// no file, only the scratch directory.
type output struct {
	final   string // "-" for stdout
	dir     string // private directory: the temporary file and scratch
	scratch string // where the commit writes its layer meanwhile
	file    *os.File
	buf     *bufio.Writer
	w       io.Writer
	mu      *sync.Mutex     // the run's: guards done and the rename
	ctx     context.Context // the run's: once cancelled, finish fails
	done    bool            // renamed into place (or all written to stdout)
	lock    *os.File        // flock'd while this run owns dir
}

// scratchLock is the file in an output's private directory that its run
// holds locked: a directory whose lock nobody holds belongs to a run that
// was killed (SIGKILL, a crash), and the next run into the same place
// removes it, scratch layers (hundreds of MB) included.
const scratchLock = ".imgmount-lock"

func lockDir(dir string) (*os.File, error) {
	// The lock file is locked under another name and only then renamed
	// into place: another run's removeAbandoned never finds it unlocked
	// (created but not yet locked) and takes a live directory for dead.
	f, err := os.CreateTemp(dir, scratchLock+".new-*")
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, scratchLock)); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	return f, nil
}

// removeAbandoned removes the private directories (parent/pattern*) of
// earlier runs that died: those whose lock file is there and free.
func removeAbandoned(parent, pattern string) {
	if parent == "" {
		parent = os.TempDir()
	}
	dirs, _ := filepath.Glob(filepath.Join(parent, pattern+"*"))
	for _, d := range dirs {
		f, err := os.Open(filepath.Join(d, scratchLock))
		if err != nil {
			continue // not ours, or not yet locked: leave it
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			os.RemoveAll(d)
		}
		f.Close()
	}
}

// checkStdout refuses to write a tarball to a terminal, before any long
// work.
func checkStdout(output string, stdout io.Writer) error {
	if output == "-" && isTerminal(stdout) {
		return usagef("-o -: stdout is a terminal; redirect it to a file or a pipe")
	}
	return nil
}

// create starts the output (stdout is where "-" goes), unless the run was
// interrupted.
func (r *repackRun) create(final string, stdout io.Writer) (*output, error) {
	o := &output{final: final, mu: &r.mu, ctx: r.ctx}
	if err := o.interrupted(); err != nil {
		return nil, err
	}
	parent, pattern := "", "imgmount-"
	if final != "-" {
		parent, pattern = filepath.Dir(final), "."+filepath.Base(final)+".imgmount-"
	}
	removeAbandoned(parent, pattern)
	var err error
	if o.dir, err = os.MkdirTemp(parent, pattern); err != nil {
		return nil, fmt.Errorf("creating the output: %w", err)
	}
	if o.lock, err = lockDir(o.dir); err != nil {
		os.RemoveAll(o.dir)
		return nil, fmt.Errorf("creating the output: %w", err)
	}
	o.scratch = o.dir
	if final == "-" {
		o.buf = bufio.NewWriterSize(stdout, 1<<20)
	} else {
		// Read-write: a squash writes its layer straight into the file and
		// may have to move it once its header is known (repack's tarSink).
		o.file, err = os.OpenFile(filepath.Join(o.dir, filepath.Base(final)), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o666)
		if err != nil {
			os.RemoveAll(o.dir)
			return nil, fmt.Errorf("creating the output: %w", err)
		}
		o.buf = bufio.NewWriterSize(o.file, 1<<20)
	}
	o.w = o.buf
	r.mu.Lock()
	r.out = o
	r.mu.Unlock()
	return o, nil
}

// direct is where a commit writes: the file itself when there is one
// (repack buffers, copies layer blobs into it file to file and writes a
// squash in place), else the buffer over stdout.
func (o *output) direct() io.Writer {
	if o.file != nil {
		return o.file
	}
	return o.w
}

// free tells the bytes free for the output file (nil for stdout, which
// takes no room here).
func (o *output) free() func() (int64, error) {
	if o.file == nil {
		return nil
	}
	return func() (int64, error) {
		var st unix.Statfs_t
		if err := unix.Statfs(o.dir, &st); err != nil {
			return 0, err
		}
		return int64(st.Bavail) * st.Bsize, nil
	}
}

// finish flushes and syncs the file and renames it into place (or flushes
// stdout), unless the run was interrupted.
func (o *output) finish() error {
	if err := o.interrupted(); err != nil {
		return err
	}
	if err := o.buf.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", o.final, err)
	}
	if o.file == nil {
		o.mu.Lock()
		o.done = true
		o.mu.Unlock()
		return nil
	}
	// Synced before the rename: after a crash the final name holds the
	// whole file or nothing.
	if err := o.file.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", o.final, err)
	}
	if err := o.file.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", o.final, err)
	}
	o.file = nil
	o.mu.Lock()
	defer o.mu.Unlock()
	// Under the lock an interruption takes: once it has come, the
	// temporary file is never renamed into place.
	if err := o.interrupted(); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(o.dir, filepath.Base(o.final)), o.final); err != nil {
		return fmt.Errorf("moving the output into place: %w", err)
	}
	o.done = true
	return nil
}

// interrupted is the error of the run's cancelled context (nil while it
// runs, or when there is none).
func (o *output) interrupted() error {
	if o.ctx == nil {
		return nil
	}
	return o.ctx.Err()
}

// abort removes what is left: the temporary file if finish did not run,
// the scratch directory in any case.
func (o *output) abort() {
	if o.file != nil {
		o.file.Close()
	}
	if err := os.RemoveAll(o.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(os.Stderr, "imgmount: removing %s: %v\n", o.dir, err)
	}
	o.lock.Close() // after the removal: no other run may take the directory first
}
