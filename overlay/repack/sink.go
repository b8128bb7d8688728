package repack

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"github.com/imgmount/imgmount/internal/progress"
	"golang.org/x/sys/unix"
)

// copyChunk is how much one copy_file_range (or one write of a mapped
// blob) moves: large enough to cost few calls, small enough that writeback
// of what is written can start while the rest is copied.
const copyChunk = 8 << 20

// tarSink is where the image tarball goes: the members' headers and small
// bodies are written through a buffer, and when the output is a regular
// file (what the command line gives) layer blobs are copied into it file to
// file (copy_file_range: no pass through user space, and on filesystems
// that share extents no copy of the data either), and the squashed layer is
// written in place, its header filled in once its digest is known.
type tarSink struct {
	w   io.Writer // what the commit was given
	buf *bufio.Writer
	// file is the output when it is a regular file opened without O_APPEND
	// (bytes go at its file position, and pwrite can fill in a header);
	// nil otherwise: then only buf is used.
	file *os.File
	// readable: file was opened for reading too, which writing the
	// squashed layer in place needs (to move it, in the rare case its
	// header grows; see fill).
	readable bool
	start    int64 // file's position when the commit began
	pos      int64 // bytes written so far (flushed or not)
	// flushed is how far writeback has been asked for (sync_file_range).
	// The command line fsyncs the output before renaming it into place;
	// writing back while the rest is copied leaves that fsync little to
	// wait for. The requests go to a goroutine (writeback): when the
	// device's queue is full sync_file_range waits, and the copy need not.
	flushed   int64
	writeback chan wbJob // nil until the first request
	wbDone    chan struct{}
	// preallocated: blocks were reserved past the end (preallocate), which
	// end gives back.
	preallocated bool
	task         progress.Task
	// ctx, if set, stops the writes once it is done (see cancellable).
	ctx context.Context
}

// preallocate reserves about n bytes of blocks for the output, when it is
// written at the end of its file: ext4 then maps each page written to a
// block already there rather than reserving one by one (delayed
// allocation), which made up a tenth of a commit's CPU time, and writeback
// finds one extent. The file's size does not change (KEEP_SIZE); end trims
// what was not used. A hint: where it fails nothing changes.
func (s *tarSink) preallocate(n int64) {
	if s.file == nil || n <= 0 {
		return
	}
	if fi, err := s.file.Stat(); err != nil || fi.Size() != s.start+s.pos {
		return
	}
	if unix.Fallocate(int(s.file.Fd()), unix.FALLOC_FL_KEEP_SIZE, s.start+s.pos, n) == nil {
		s.preallocated = true
	}
}

// newTarSink wraps w. Set task to count what is written.
func newTarSink(w io.Writer) *tarSink {
	s := &tarSink{w: w, task: progress.Start(nil, "", 0)}
	if f, ok := w.(*os.File); ok {
		if direct, readable := directFile(f); direct {
			if start, err := f.Seek(0, io.SeekCurrent); err == nil {
				s.file, s.start, s.readable = f, start, readable
			}
		}
	}
	s.buf = bufio.NewWriterSize(w, 1<<20)
	return s
}

// directFile tells whether f can take copy_file_range at its position and
// pwrite at offsets (a regular file open for writing, not O_APPEND, where
// pwrite would append), and whether it can be read too.
func directFile(f *os.File) (direct, readable bool) {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return false, false
	}
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_APPEND != 0 || fl&unix.O_ACCMODE == unix.O_RDONLY {
		return false, false
	}
	return true, fl&unix.O_ACCMODE == unix.O_RDWR
}

// inPlace tells whether a layer can be written straight into the output
// and its header filled in afterwards.
func (s *tarSink) inPlace() bool { return s.file != nil && s.readable }

func (s *tarSink) Write(p []byte) (int, error) {
	if err := ctxErr(s.ctx); err != nil {
		return 0, err
	}
	var n int
	var err error
	if len(p) >= s.buf.Size() {
		// Large writes (a mapped blob, hashPipe's chunks) go to w as they
		// are, not copied into the buffer first.
		if err = s.flush(); err == nil {
			n, err = s.w.Write(p)
		}
	} else {
		n, err = s.buf.Write(p)
	}
	s.pos += int64(n)
	s.task.Add(int64(n))
	if s.file != nil && s.pos-s.flushed >= copyChunk {
		s.startWriteback()
	}
	return n, err
}

// startWriteback starts writing back what has reached the file. It is a
// hint: errors show at the fsync.
func (s *tarSink) startWriteback() {
	end := s.pos - int64(s.buf.Buffered())
	if end <= s.flushed {
		return
	}
	s.startWorker()
	select {
	case s.writeback <- wbJob{off: s.start + s.flushed, n: end - s.flushed}:
		s.flushed = end
	default: // behind: ask for more next time
	}
}

// wbJob is work for the writeback goroutine: start writeback of n bytes
// at off, or drop the page-table entries of unmap.
type wbJob struct {
	off, n int64
	unmap  []byte
}

func (s *tarSink) startWorker() {
	if s.writeback != nil {
		return
	}
	s.writeback, s.wbDone = make(chan wbJob, 64), make(chan struct{})
	fd := int(s.file.Fd())
	go func() {
		defer close(s.wbDone)
		for j := range s.writeback {
			if j.unmap != nil {
				unmapPages(j.unmap)
				continue
			}
			_ = unix.SyncFileRange(fd, j.off, j.n, unix.SYNC_FILE_RANGE_WRITE)
		}
	}()
}

// unmapLater drops, on the writeback goroutine, the page-table entries
// that writing b (a slice of a shared read-only file mapping) populated:
// tearing down the tarball's mapping at the end (or at exit) otherwise
// takes about 5 ms for a 116 MiB image, on the critical path. The mapping
// stays valid: a later read faults the pages in again from the page cache.
func (s *tarSink) unmapLater(b []byte) {
	if s.file == nil || len(b) < 1<<20 {
		return
	}
	s.startWorker()
	select {
	case s.writeback <- wbJob{unmap: b}:
	default:
	}
}

// unmapPages drops the page-table entries of the whole pages inside b.
func unmapPages(b []byte) {
	page := uintptr(os.Getpagesize())
	start := (uintptr(unsafe.Pointer(&b[0])) + page - 1) &^ (page - 1)
	end := (uintptr(unsafe.Pointer(&b[0])) + uintptr(len(b))) &^ (page - 1)
	if end > start {
		_, _, _ = unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_DONTNEED)
	}
}

// close waits for the writeback requests: the caller may close the file
// once it returns (the descriptor must not be reused under them).
func (s *tarSink) close() {
	if s.writeback != nil {
		close(s.writeback)
		<-s.wbDone
		s.writeback = nil
	}
}

func (s *tarSink) flush() error { return s.buf.Flush() }

// header writes a member's header exactly as archive/tar writes it (a
// fresh tar.Writer formats it), so that bodies can be written around the
// tar.Writer, which insists on seeing them.
func (s *tarSink) header(hdr *tar.Header) error {
	b, err := headerBlocks(hdr)
	if err != nil {
		return err
	}
	_, err = s.Write(b)
	return err
}

var zeroBlock [2 * blockSize]byte

// pad ends a body of size bytes with zeros to the next block.
func (s *tarSink) pad(size int64) error {
	if r := size % blockSize; r != 0 {
		_, err := s.Write(zeroBlock[:blockSize-r])
		return err
	}
	return nil
}

// end writes the end-of-archive marker (two zero blocks, as tar.Writer's
// Close) and flushes.
func (s *tarSink) end() error {
	if _, err := s.Write(zeroBlock[:]); err != nil {
		return err
	}
	if err := s.flush(); err != nil {
		return err
	}
	if s.preallocated {
		// The same size: this frees the blocks reserved past it.
		return s.file.Truncate(s.start + s.pos)
	}
	return nil
}

// errNoCopyRange says copy_file_range cannot copy between these files
// (an old kernel across filesystems, a filesystem without it): the caller
// copies through user space instead.
var errNoCopyRange = errors.New("copy_file_range not supported here")

// copyRange copies n bytes at off in src to the output, file to file. It
// returns errNoCopyRange, having copied nothing, where the kernel cannot.
func (s *tarSink) copyRange(src *os.File, off, n int64) error {
	if s.file == nil {
		return errNoCopyRange
	}
	if err := s.flush(); err != nil {
		return err
	}
	for done := int64(0); done < n; {
		if err := ctxErr(s.ctx); err != nil {
			return err
		}
		k, err := unix.CopyFileRange(int(src.Fd()), &off, int(s.file.Fd()), nil, int(min(copyChunk, n-done)), 0)
		if err != nil || k == 0 {
			if done == 0 && (k == 0 || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP)) {
				return errNoCopyRange
			}
			if err == nil {
				err = io.ErrUnexpectedEOF // the source is shorter than it was
			}
			return fmt.Errorf("copy_file_range: %w", err)
		}
		done += int64(k)
		s.pos += int64(k)
		s.task.Add(int64(k))
		if s.pos-s.flushed >= copyChunk {
			s.startWriteback()
		}
	}
	return nil
}

// pageAligned tells whether a source offset off falls at the same place
// within a page as the output's next byte (copyRange is then a copy of
// whole pages).
func (s *tarSink) pageAligned(off int64) bool {
	if s.file == nil {
		return false
	}
	page := int64(os.Getpagesize())
	return (off-(s.start+s.pos))%page == 0
}

// reserve writes n zero bytes to be filled in later (fill), and returns
// where they are.
func (s *tarSink) reserve(n int) (int64, error) {
	at := s.pos
	_, err := s.Write(make([]byte, n))
	return at, err
}

// fill writes b over the n bytes reserved at at, moving everything
// written after them when b is longer (a header that needs PAX records
// after all, for a layer past 8 GiB).
func (s *tarSink) fill(at int64, n int, b []byte) error {
	if err := s.flush(); err != nil {
		return err
	}
	if d := int64(len(b) - n); d > 0 {
		if err := shiftTail(s.file, s.start+at+int64(n), s.start+s.pos, d); err != nil {
			return err
		}
		if _, err := s.file.Seek(d, io.SeekCurrent); err != nil {
			return err
		}
		s.pos += d
		s.task.Add(d)
	}
	_, err := s.file.WriteAt(b, s.start+at)
	return err
}

// truncate drops everything written from at on.
func (s *tarSink) truncate(at int64) error {
	if err := s.flush(); err != nil {
		return err
	}
	if err := s.file.Truncate(s.start + at); err != nil {
		return err
	}
	if _, err := s.file.Seek(s.start+at, io.SeekStart); err != nil {
		return err
	}
	s.pos = at
	s.flushed = min(s.flushed, at)
	return nil
}

// shiftTail moves the bytes of f in [from, end) d bytes further, last
// chunk first so that nothing is overwritten before it is moved.
func shiftTail(f *os.File, from, end, d int64) error {
	buf := make([]byte, min(copyChunk, max(end-from, 0)))
	for hi := end; hi > from; {
		lo := max(from, hi-int64(len(buf)))
		p := buf[:hi-lo]
		if _, err := f.ReadAt(p, lo); err != nil {
			return err
		}
		if _, err := f.WriteAt(p, lo+d); err != nil {
			return err
		}
		hi = lo
	}
	return nil
}
