package tarindex

import (
	"errors"
	"io"
	"math"
)

// errBehind: a read asked for bytes of a stream that have already gone by.
var errBehind = errors.New("read behind the stream's window")

// streamAt serves the forward-moving ReadAt calls of buildFast from a stream
// read once, front to back (a compressed layer as it is inflated), so that
// the tar is indexed on the same pass that decompresses it. It keeps only
// the bytes of the current read. A read behind them fails, and behind
// records it.
type streamAt struct {
	r      io.Reader
	buf    []byte // stream bytes [bufAt, bufAt+len(buf))
	bufAt  int64
	eof    bool
	err    error // the stream's read error, other than io.EOF
	behind bool
	skip   []byte // scratch for skipping member data
}

func (s *streamAt) ReadAt(p []byte, off int64) (int, error) {
	if off < s.bufAt {
		s.behind = true
		return 0, errBehind
	}
	if end := s.bufAt + int64(len(s.buf)); off > end {
		s.buf, s.bufAt = s.buf[:0], end
		if err := s.discard(off - end); err != nil { // moves bufAt to off
			return 0, err
		}
	} else if off > s.bufAt {
		// Keep what the caller may still want: from off on.
		s.buf = append(s.buf[:0], s.buf[off-s.bufAt:]...)
		s.bufAt = off
	}
	for int64(len(s.buf)) < int64(len(p)) && !s.eof {
		if err := s.fill(len(p)); err != nil {
			return 0, err
		}
	}
	n := copy(p, s.buf)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// fill reads more of the stream into buf, up to want bytes in all.
func (s *streamAt) fill(want int) error {
	if cap(s.buf) < want {
		nb := make([]byte, len(s.buf), want)
		copy(nb, s.buf)
		s.buf = nb
	}
	n, err := s.r.Read(s.buf[len(s.buf):want])
	s.buf = s.buf[:len(s.buf)+n]
	return s.note(err)
}

// discard reads and drops n bytes of the stream (member data the index
// skips; the reader still sees them, to hash them).
func (s *streamAt) discard(n int64) error {
	if s.skip == nil {
		s.skip = make([]byte, 256<<10)
	}
	for n > 0 && !s.eof {
		m, err := s.r.Read(s.skip[:min(n, int64(len(s.skip)))])
		s.bufAt += int64(m)
		n -= int64(m)
		if err := s.note(err); err != nil {
			return err
		}
	}
	if n > 0 {
		return io.EOF
	}
	return nil
}

func (s *streamAt) note(err error) error {
	switch {
	case err == nil:
		return nil
	case err == io.EOF:
		s.eof = true
		return nil
	default:
		s.err = err
		return err
	}
}

// drain reads the rest of the stream and returns its total length.
func (s *streamAt) drain() (int64, error) {
	s.bufAt += int64(len(s.buf))
	s.buf = s.buf[:0]
	if err := s.discard(math.MaxInt64); err != nil && err != io.EOF {
		return 0, err
	}
	if s.err != nil {
		return 0, s.err
	}
	return s.bufAt, nil
}

// IndexStream indexes the tar held by a stream that can be read only once,
// front to back, and reads the stream to its end (whoever reads through r
// sees every byte: it may hash them or record checkpoints). It returns the
// stream's length. ix is nil when the stream is sound but its tar could not
// be indexed in one forward pass (sparse members, unusual headers, a
// truncated tar): the caller then indexes the finished stream again with
// BuildMax, which reads at will and gives the precise error if any.
// A read error of r, and ErrTooManyEntries, are returned as they are.
func IndexStream(r io.Reader, maxEntries int) (ix *Index, size int64, err error) {
	s := &streamAt{r: r}
	// The size is not known until the end: buildFast's end and bounds
	// checks then fail as reads past the end, which fall back below.
	ix, err = buildFast(s, 0, math.MaxInt64, maxEntries)
	if s.err != nil {
		return nil, 0, s.err
	}
	if errors.Is(err, ErrTooManyEntries) {
		return nil, 0, err
	}
	if size, err = s.drain(); err != nil {
		return nil, 0, err
	}
	if ix == nil || ix.End > size || s.behind {
		return nil, size, nil
	}
	return ix, size, nil
}
