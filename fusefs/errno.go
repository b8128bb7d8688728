package fusefs

import (
	"errors"
	"io"
	iofs "io/fs"
	"log"
	"sync"
	"syscall"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/tarindex"
)

// toErrno is the one place that turns Go errors into the errno FUSE
// answers. Unlike go-fuse's fs.ToErrno it looks through %w wrapping.
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if errno == 0 {
			return syscall.EIO
		}
		return errno
	}
	switch {
	case errors.Is(err, iofs.ErrNotExist):
		return syscall.ENOENT
	case errors.Is(err, iofs.ErrPermission):
		return syscall.EACCES
	case errors.Is(err, iofs.ErrExist):
		return syscall.EEXIST
	case errors.Is(err, iofs.ErrInvalid):
		return syscall.EINVAL
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, archive.ErrCorruptLayer),
		errors.Is(err, tarindex.ErrDigestMismatch), errors.Is(err, archive.ErrDiffIDMismatch):
		return syscall.EIO
	}
	return syscall.EIO
}

// loggedReadErrors holds the read failures already logged: a reader that
// retries a bad span must not flood the log.
var loggedReadErrors sync.Map

// readErrno is toErrno for the content read path: a failure there (a
// truncated layer, a compressed span that no longer decodes because the
// tarball changed under the mount) is logged once, naming the layer and
// offset, and the reader gets EIO while the mount serves the rest.
func readErrno(err error) syscall.Errno {
	if err == io.EOF {
		return 0
	}
	if _, seen := loggedReadErrors.LoadOrStore(err.Error(), true); !seen {
		log.Printf("imgmount: read failed: %v", err)
	}
	return toErrno(err)
}
