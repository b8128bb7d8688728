// Command imgmount mounts a container image tarball as a read-only FUSE
// filesystem without extracting it.
//
//	imgmount [flags] IMAGE MOUNTPOINT
//	imgmount -u MOUNTPOINT
//	imgmount inspect [--json] IMAGE
//
// See `imgmount --help`.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program but for os.Exit; it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseArgs(args, os.Getenv)
	if err != nil {
		return fail(stderr, err)
	}
	switch cfg.mode {
	case modeHelp:
		printHelp(stdout, os.Getenv)
		return 0
	case modeVersion:
		fmt.Fprintf(stdout, "imgmount %s\n", version)
		return 0
	case modeUnmount:
		return fail(stderr, runUnmount(cfg.mountpoint))
	case modeInspect:
		return fail(stderr, runInspect(cfg, stdout, stderr))
	case modeCommit:
		return fail(stderr, runCommit(cfg, stdout, stderr))
	case modeExport:
		return fail(stderr, runExport(cfg, stdout, stderr))
	}
	if isDaemonChild() {
		return runDaemonChild(cfg)
	}
	if !cfg.foreground {
		return daemonize(args, stderr)
	}
	return fail(stderr, runMount(cfg, &foregroundReporter{stderr: stderr, tty: isTerminal(stderr)}))
}

// fail prints err as imgmount's error message and gives the exit status:
// 0 for no error, 2 for a usage error, 1 otherwise.
func fail(stderr io.Writer, err error) int {
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "imgmount: %s\n", strings.TrimRight(err.Error(), "\n"))
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, "Try 'imgmount --help' for more information.")
		return 2
	}
	return 1
}

// isTerminal tells whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
