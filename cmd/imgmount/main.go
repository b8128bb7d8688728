// Command imgmount mounts a container image tarball (docker save, OCI
// archive; plain, gzip or zstd) as a FUSE filesystem without extracting it:
// read-only, or writable with --upper DIR, which keeps the changes as an OCI
// layer directory and never writes the tarball. It also describes a
// tarball, turns the changes into a new image, exports the root filesystem,
// compares images or layers, writes and completes thin tarballs (without
// the layers the other side has), and looks after its cache directory.
//
//	imgmount [flags] IMAGE MOUNTPOINT      mount (writable with --upper DIR)
//	imgmount -u MOUNTPOINT                 unmount
//	imgmount inspect [flags] IMAGE         the images, config and layers
//	imgmount commit [flags] IMAGE|MOUNTPOINT -o OUT.tar
//	                                       a new image: the layers plus one
//	                                       made of the changes
//	imgmount export [flags] IMAGE|MOUNTPOINT -o OUT.tar
//	                                       the root filesystem as one tar
//	imgmount diff [flags] A B              the paths image B adds, removes
//	                                       and changes from image A
//	imgmount diff --layers IMAGE N [M]     the same between two layers
//	imgmount thin [flags] IMAGE -o OUT.tar IMAGE without the layer blobs the
//	                                       receiving side has (--base, --have)
//	imgmount complete [flags] THIN -o OUT.tar
//	                                       put back the layer blobs a thin
//	                                       tarball leaves out, from --base
//	imgmount have [flags] [SOURCE...]      the layers this machine has, for
//	                                       thin --have
//	imgmount cache [list|prune|clear]      what the cache directory holds
//
// See `imgmount --help` and `imgmount COMMAND --help`; exitcodes.go lists
// the exit statuses.
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
		printHelp(stdout, os.Getenv, cfg.helpFor)
		return exitOK
	case modeVersion:
		fmt.Fprintf(stdout, "imgmount %s\n", version)
		return exitOK
	case modeUnmount:
		return fail(stderr, runUnmount(cfg.mountpoint))
	case modeInspect:
		return fail(stderr, runInspect(cfg, stdout, stderr))
	case modeCommit:
		return fail(stderr, runCommit(cfg, stdout, stderr))
	case modeExport:
		return fail(stderr, runExport(cfg, stdout, stderr))
	case modeDiff:
		return fail(stderr, runDiff(cfg, stdout, stderr))
	case modeThin:
		return fail(stderr, runThin(cfg, stdout, stderr))
	case modeComplete:
		return fail(stderr, runComplete(cfg, stdout, stderr))
	case modeHave:
		return fail(stderr, runHave(cfg, stdout, stderr))
	case modeCache:
		return fail(stderr, runCache(cfg, stdout, stderr))
	}
	if isDaemonChild() {
		return runDaemonChild(cfg)
	}
	if !cfg.foreground {
		return daemonize(args, stderr)
	}
	return fail(stderr, runMount(cfg, &foregroundReporter{stderr: stderr, tty: isTerminal(stderr)}))
}

// fail prints err as imgmount's error message, with a pointer to the help
// after a usage error, and gives the exit status (exitStatus).
func fail(stderr io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "imgmount: %s\n", strings.TrimRight(err.Error(), "\n"))
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "Try '%s' for more information.\n", helpCommandLine(ue.command))
	}
	return exitStatus(err)
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
