package main

import (
	"errors"

	"github.com/imgmount/imgmount/overlay/archive"
)

// The exit statuses of imgmount, in the manner of gocryptfs's
// internal/exitcodes. Scripts test them: a status keeps its meaning once
// given one, and a new kind of failure gets a new number. exitStatus is the
// one place that maps an error to its status; exitStatuses describes them
// for the help and the README.
const (
	// exitOK: the command did what it was asked (for a mount in the
	// background: the mount is ready; with -f: it served until unmounted,
	// Ctrl-C or SIGTERM included).
	exitOK = 0
	// exitError: any failure without a status of its own below: a missing
	// or unreadable file, a FUSE mount or unmount that fails (imgmount -u
	// on what is not mounted, or is busy), a commit that cannot be
	// written, a signal that interrupts a commit, an export or a mount
	// not yet ready.
	exitError = 1
	// exitUsage: a mistake on the command line (an unknown flag, a missing
	// or extra argument, a flag value of the wrong shape): a usageError.
	// Go's runtime exits with 2 on a panic too.
	exitUsage = 2
	// exitBadImage: IMAGE (or a --base or --thin-from tarball) is not a
	// container image tarball, is corrupt (a truncated blob, a layer that
	// does not match its diff_id), or does not hold the image asked for
	// (--image or --platform match none, or several): archive.ErrNotImage,
	// ErrCorruptLayer, ErrDiffIDMismatch, ErrDigestMismatch,
	// ErrNoSuchImage, ErrAmbiguous.
	exitBadImage = 3
	// exitLayerMissing: the image needs a layer (or its config) that the
	// tarball leaves out: a thin tarball without the --base that supplies
	// it, or a platform that was not saved: archive.ErrLayerMissing.
	exitLayerMissing = 4
	// exitMountpoint: MOUNTPOINT cannot be mounted on: it does not exist,
	// is not a directory, has something mounted on it (a dead FUSE mount
	// included), or is not writable to the user. checkMountpoint marks
	// these.
	exitMountpoint = 5
	// exitUpperInUse: the upper directory is in use by another imgmount
	// mount (mounting it a second time, or committing it by path rather
	// than through its mountpoint).
	exitUpperInUse = 6
	// exitTooLarge: the image goes past a resource limit
	// (archive.ErrTooLarge): it has more entries than --max-memory allows
	// (raise it where the machine has the memory), or a compressed layer
	// or tarball inflates past --max-ratio, a decompression bomb (a layer
	// decompressed into the cache also stops at the cache's free space).
	// archive tags the bombs in decompressError (layers) and openInPlace
	// (the outer tarball).
	exitTooLarge = 7
)

// exitStatuses lists every status with the line the help and the README
// give it, in order.
var exitStatuses = []struct {
	status int
	text   string
}{
	{exitOK, "success"},
	{exitError, "an error with no status of its own below"},
	{exitUsage, "a command-line mistake"},
	{exitBadImage, "not an image tarball, a corrupt one, or no image (or several)\nmatching --image and --platform"},
	{exitLayerMissing, "a layer is missing from the tarball: a thin tarball needs --base"},
	{exitMountpoint, "MOUNTPOINT cannot be mounted on: missing, not a directory,\nalready mounted or not writable"},
	{exitUpperInUse, "the upper directory is in use by another imgmount mount"},
	{exitTooLarge, "the image goes past a limit: its index needs more memory than\n--max-memory allows, or a compressed layer inflates past\n--max-ratio (a decompression bomb)"},
}

// exitStatusError gives an error an exit status where no sentinel says
// it: a mountpoint that cannot be used, an upper directory in use, a
// failure the background process reported with its own exit status.
type exitStatusError struct {
	status int
	err    error
}

func (e *exitStatusError) Error() string { return e.err.Error() }
func (e *exitStatusError) Unwrap() error { return e.err }

// withStatus marks err (if not nil) with an exit status.
func withStatus(status int, err error) error {
	if err == nil {
		return nil
	}
	return &exitStatusError{status: status, err: err}
}

// exitStatus is the status imgmount exits with after err.
func exitStatus(err error) int {
	var se *exitStatusError
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &se):
		return se.status
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, archive.ErrLayerMissing):
		return exitLayerMissing
	case errors.Is(err, archive.ErrNotImage),
		errors.Is(err, archive.ErrCorruptLayer),
		errors.Is(err, archive.ErrDiffIDMismatch),
		errors.Is(err, archive.ErrDigestMismatch),
		errors.Is(err, archive.ErrNoSuchImage),
		errors.Is(err, archive.ErrAmbiguous):
		return exitBadImage
	case errors.Is(err, archive.ErrTooLarge):
		return exitTooLarge
	}
	return exitError
}
