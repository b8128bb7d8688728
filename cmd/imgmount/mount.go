package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/imgmount/imgmount/fusefs"
	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/cow"
	"github.com/imgmount/imgmount/overlay/union"
	"golang.org/x/sys/unix"
)

// reporter is how runMount tells its caller about progress and readiness:
// on stderr in the foreground, through the status pipe in the daemon
// child. runMount's error goes to its caller.
type reporter interface {
	progress(msg string)
	// ready says the mount is up. Called at most once.
	ready()
	// notice reports something the user should know while serving (an
	// unmount that failed). The daemon child, detached, drops it.
	notice(msg string)
	// warn reports, terminal or not, something the user must know about
	// what is mounted (entries left out).
	warn(msg string)
}

type foregroundReporter struct {
	stderr io.Writer
	tty    bool
}

func (r *foregroundReporter) progress(msg string) {
	if r.tty {
		fmt.Fprintf(r.stderr, "imgmount: %s\n", msg)
	}
}
func (r *foregroundReporter) ready()            {}
func (r *foregroundReporter) notice(msg string) { fmt.Fprintf(r.stderr, "imgmount: %s\n", msg) }
func (r *foregroundReporter) warn(msg string)   { fmt.Fprintf(r.stderr, "imgmount: warning: %s\n", msg) }

// runMount opens the image, builds the tree, mounts it and serves until
// it is unmounted (imgmount -u, fusermount3 -u, umount) or a signal
// (SIGINT, SIGTERM, SIGHUP) asks it to unmount. Nothing is left mounted
// when it fails. The process must not touch the mountpoint once mounted.
//
// Signals: before the mount starts, a signal makes runMount return at
// once with an error saying nothing was mounted (opening a large image
// can take minutes); from the moment the mount starts, signals ask the
// serving loop to unmount. Either way runMount returns through its
// deferred cleanup: the upper directory and the image are closed.
func runMount(cfg *config, rep reporter) error {
	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigc)

	src, err := unlessSignalled(sigc, func() (*mountSource, error) { return prepareMount(cfg, rep) }, (*mountSource).close, interruptedBeforeMount)
	if err != nil {
		return err
	}
	defer src.close()
	serveGC()
	if p := os.Getenv("IMGMOUNT_MEMPROFILE"); p != "" {
		defer writeHeapProfile(p)
	}
	select {
	case s := <-sigc:
		return interruptedBeforeMount(s)
	default:
	}

	server, err := fusefs.Mount(src.mnt, src.tree, fusefs.Options{
		MountOptions: cfg.mountOpts,
		AllowOther:   cfg.allowOther,
		AllowRoot:    cfg.allowRoot,
		FsName:       cfg.fsName,
		Debug:        cfg.debug,
		Writable:     src.view,
		MountInfo:    mountInfo(cfg),
	})
	if err != nil {
		return err
	}
	if stopProfile := startProfile(os.Getenv("IMGMOUNT_CPUPROFILE")); stopProfile != nil {
		defer stopProfile()
	}
	done := make(chan struct{})
	go func() {
		server.Wait()
		close(done)
	}()
	return serve(src.mnt, done, sigc, rep)
}

// mountSource is what a mount serves: the opened image, its tree, and for
// a writable mount the view over the upper directory.
type mountSource struct {
	mnt  string // the mountpoint, symlinks resolved
	img  *archive.Image
	tree *union.Tree
	view *cow.View // nil for a read-only mount
}

func (m *mountSource) close() {
	if m.view != nil {
		m.view.Close()
	}
	m.img.Close()
}

func interruptedBeforeMount(s os.Signal) error {
	return fmt.Errorf("interrupted by %s before mounting; nothing was mounted", sigName(s))
}

// unlessSignalled runs prepare (prepareMount; a commit's or an export's
// opening of the image) unless a signal comes first: it then returns at
// once with the error interrupted gives, and the preparation, abandoned,
// releases what it made if it ends before the process does.
func unlessSignalled[T any](sigc <-chan os.Signal, prepare func() (T, error), release func(T), interrupted func(os.Signal) error) (T, error) {
	type result struct {
		v   T
		err error
	}
	resc := make(chan result, 1)
	go func() {
		v, err := prepare()
		resc <- result{v, err}
	}()
	select {
	case r := <-resc:
		return r.v, r.err
	case s := <-sigc:
		go func() {
			if r := <-resc; r.err == nil {
				release(r.v)
			}
		}()
		var none T
		return none, interrupted(s)
	}
}

// prepareMount does the work before mounting: it checks the mountpoint,
// opens the image, builds the tree and opens the upper directory, then
// checks the mountpoint again.
func prepareMount(cfg *config, rep reporter) (*mountSource, error) {
	// Fail fast on a bad mountpoint, before the image's long work.
	if _, err := checkMountpoint(cfg.mountpoint); err != nil {
		return nil, err
	}
	src, err := openSource(cfg, rep)
	if err != nil {
		return nil, err
	}
	// Opening took a while: look again just before mounting.
	if src.mnt, err = checkMountpoint(cfg.mountpoint); err != nil {
		src.close()
		return nil, err
	}
	return src, nil
}

// openSource opens the image, builds the tree (the union, or the
// per-layer view) and, for a writable mount, the view over the upper
// directory.
func openSource(cfg *config, rep reporter) (*mountSource, error) {
	img, err := archive.Open(cfg.image, cfg.openOptions(rep.progress))
	if err != nil {
		return nil, err
	}
	src := &mountSource{img: img}
	if cfg.layers {
		src.tree, err = union.BuildLayersView(img)
	} else {
		src.tree, err = union.BuildUnion(img)
	}
	if err != nil {
		img.Close()
		return nil, fmt.Errorf("%s: %w", cfg.image, err)
	}
	for _, w := range src.tree.Warnings {
		rep.warn(cfg.image + ": " + w)
	}
	if cfg.upper == "" {
		return src, nil
	}
	if src.view, err = cow.New(src.tree, cfg.upper); err != nil {
		img.Close()
		if cow.UpperInUse(cfg.upper) {
			err = withStatus(exitUpperInUse, err)
		}
		return nil, err
	}
	if src.view.Rebased {
		rep.progress(fmt.Sprintf("%s holds edits made over other layers than %s's; they now apply over these", cfg.upper, cfg.image))
	}
	return src, nil
}

// serve reports the mount at mnt ready and serves until it goes away
// (done is closed) or a signal asks to unmount it. A signal that came
// while mounting takes the mount down again at once.
func serve(mnt string, done <-chan struct{}, sigc <-chan os.Signal, rep reporter) error {
	select {
	case s := <-sigc:
		// Asked to stop while mounting: take the mount down again and
		// report the interruption rather than a mount that is gone.
		if err := unmountServed(mnt, done, true); err != nil {
			return fmt.Errorf("interrupted by %s while mounting, and unmounting failed: %w", sigName(s), err)
		}
		return fmt.Errorf("interrupted by %s while mounting; nothing was left mounted", sigName(s))
	default:
	}
	rep.ready()

	forceNext := false
	for {
		select {
		case <-done:
			return nil // unmounted from outside
		case s := <-sigc:
			err := unmountServed(mnt, done, forceNext)
			if err == nil {
				return nil
			}
			if errors.Is(err, fusefs.ErrBusy) && !forceNext {
				rep.notice(fmt.Sprintf("%s: cannot unmount %s: it is busy (a process has its working directory or open files in it); still serving. Send the signal again to detach it lazily.", sigName(s), mnt))
				forceNext = true
				continue
			}
			rep.notice(fmt.Sprintf("%s: cannot unmount %s: %v", sigName(s), mnt, err))
			return err
		}
	}
}

// unmountServed unmounts the mount this process serves and waits for the
// serving loop to end. With lazy, a busy mount is detached instead: it
// disappears from the namespace now and the process exits.
func unmountServed(mnt string, done <-chan struct{}, lazy bool) error {
	err := fusefs.Unmount(mnt)
	if err != nil && lazy {
		if lerr := fusefs.UnmountLazy(mnt); lerr != nil {
			return errors.Join(err, lerr)
		}
		return nil // the kernel ends the connection once it is unused; closing /dev/fuse at exit ends it now
	}
	if err != nil {
		return err
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	return nil
}

// checkMountpoint checks that path can be mounted on: an existing
// directory with nothing mounted on it. It returns the path with symlinks
// resolved, which is what /proc/self/mountinfo shows. It reads
// mountinfo before touching the path, so that a dead or hung FUSE mount
// there gives a clear error rather than a hang. What is wrong with the
// mountpoint itself gives exitMountpoint.
func checkMountpoint(path string) (string, error) {
	cand := []string{path}
	if dir, err := filepath.EvalSymlinks(filepath.Dir(path)); err == nil {
		cand = append(cand, filepath.Join(dir, filepath.Base(path)))
	}
	for _, c := range cand {
		if err := notMounted(path, c); err != nil {
			return "", err
		}
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", badMountpoint("mountpoint %s does not exist (no such file or directory): create it first (mkdir -p %s)", path, path)
	case errors.Is(err, syscall.ENOTCONN):
		return "", badMountpoint("mountpoint %s: %v: a FUSE mount whose server has died is there; unmount it with 'imgmount -u %s'", path, syscall.ENOTCONN, path)
	case err != nil:
		return "", badMountpoint("mountpoint %w", err)
	case !fi.IsDir():
		return "", badMountpoint("mountpoint %s is not a directory", path)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", badMountpoint("mountpoint %w", err)
	}
	if err := notMounted(path, real); err != nil {
		return "", err
	}
	if os.Geteuid() != 0 {
		if err := unix.Access(real, unix.W_OK); err != nil {
			return "", badMountpoint("mountpoint %s: no write access (%v): mount on a directory you own", path, err)
		}
	}
	return real, nil
}

// badMountpoint is an error about a mountpoint that cannot be mounted on:
// exitMountpoint.
func badMountpoint(format string, a ...any) error {
	return withStatus(exitMountpoint, fmt.Errorf(format, a...))
}

// notMounted fails if something is mounted at real (path is the name the
// user gave, for the message).
func notMounted(path, real string) error {
	mi, ok, err := fusefs.MountedAt(real)
	if err != nil {
		return fmt.Errorf("checking whether %s is already mounted: %w", path, err)
	}
	if !ok {
		return nil
	}
	what := mi.FSType
	if mi.Source != "" && mi.Source != "none" {
		what += " " + mi.Source
	}
	hint := ""
	if mi.IsFUSE() {
		hint = fmt.Sprintf("; unmount it first with 'imgmount -u %s'", path)
	}
	return badMountpoint("%s is already mounted (%s)%s", path, what, hint)
}

// runUnmount is imgmount -u: it unmounts a FUSE mount (ours or another),
// failing clearly when nothing is mounted there or the mount is busy.
func runUnmount(path string) error {
	// Find the mount in mountinfo before touching the path: a dead mount
	// (ENOTCONN) or a hung server must still be unmountable.
	cand := []string{path}
	if dir, err := filepath.EvalSymlinks(filepath.Dir(path)); err == nil {
		cand = append(cand, filepath.Join(dir, filepath.Base(path)))
	}
	var mi fusefs.MountInfo
	found := false
	for _, c := range cand {
		m, ok, err := fusefs.MountedAt(c)
		if err != nil {
			return err
		}
		if ok {
			mi, found = m, true
			break
		}
	}
	if !found {
		real, err := filepath.EvalSymlinks(path)
		if err != nil {
			return fmt.Errorf("%s is not mounted (%w)", path, unwrapPathError(err))
		}
		m, ok, err := fusefs.MountedAt(real)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s is not mounted", path)
		}
		mi = m
	}
	if !mi.IsFUSE() {
		return fmt.Errorf("%s is not a FUSE mount (it is %s): use umount", path, mi.FSType)
	}
	if err := fusefs.Unmount(mi.Mountpoint); err != nil {
		if errors.Is(err, fusefs.ErrBusy) {
			return fmt.Errorf("cannot unmount %s: it is busy: a process has its working directory or open files in it ('fuser -vm %s' lists them)", path, path)
		}
		return fmt.Errorf("cannot unmount %s: %w", path, err)
	}
	return nil
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// sigName names a signal as kill(1) does: SIGINT, SIGTERM.
func sigName(s os.Signal) string {
	if n, ok := s.(syscall.Signal); ok {
		if name := unix.SignalName(n); name != "" {
			return name
		}
	}
	return s.String()
}

// mountInfo is what a writable mount's root answers for
// fusefs.MountInfoXattr: enough for `imgmount commit MOUNTPOINT` to open the
// same image and upper directory.
func mountInfo(cfg *config) []byte {
	if cfg.upper == "" {
		return nil
	}
	return encodeMountState(cfg)
}

// serveGCPercent is the GC percentage of the mount process once the tree
// is built (unless GOGC is set). Almost all that building the tree
// allocates stays: the index and the tree are the live heap of the mount
// for its whole life, and with Go's default of 100 the heap may grow by as
// much again before a collection, the process's RSS with it. Serving
// allocates little (reads are slices of mappings) but for go-fuse's inodes
// of the paths the kernel looks up, which would otherwise be paid for
// twice in RSS; a collection, which scans the tree, stays rare. The build
// itself keeps the default: collecting more often while the heap grows
// costs far more time (a saved-index mount of a million files: 0.7 s ->
// 1.1 s at 20) than it saves memory.
const serveGCPercent = 25

// serveGC sets the server's GC percentage. It does nothing when GOGC is
// set.
func serveGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(serveGCPercent)
	}
}

// writeHeapProfile writes the serving process's heap profile to path when
// it stops serving (a developer's aid for the memory rows of the
// benchmarks: IMGMOUNT_MEMPROFILE=/tmp/heap.pprof). Errors are ignored.
func writeHeapProfile(path string) {
	f, err := os.Create(path)
	if err != nil {
		return
	}
	defer f.Close()
	runtime.GC()
	_ = pprof.WriteHeapProfile(f)
}

// startProfile writes a CPU profile of the serving process to path (a
// developer's aid for benchmarks: IMGMOUNT_CPUPROFILE=/tmp/cpu.pprof) until
// the returned function is called. Nothing happens for an empty path or a
// file that cannot be created.
func startProfile(path string) func() {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
