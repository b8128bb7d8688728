package tarindex

import (
	"errors"
	"io"

	"github.com/imgmount/imgmount/tarindex/gz"
)

// sequentialAt serves the ReadAt calls of a parser that scans a gzip
// stream front to back (archive/tar indexing a layer the one-pass parser
// gave up on) with one running decoder: each byte is inflated once,
// whatever the checkpoint spacing. A span cache would decode a whole span
// per read, and a hostile stream can make one span of all of it (a single
// DEFLATE block of gigabytes of zeros). A jump back, or ahead past the
// next checkpoint, restarts the decoder from the nearest checkpoint.
type sequentialAt struct {
	ix      *gz.Index
	src     io.ReaderAt
	rd      *gz.Reader
	pos     int64 // stream offset rd reads next
	scratch []byte
}

func newSequentialAt(ix *gz.Index, src io.ReaderAt) *sequentialAt {
	return &sequentialAt{ix: ix, src: src}
}

func (s *sequentialAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= s.ix.Size() {
		return 0, io.EOF
	}
	if s.rd == nil || off < s.pos || s.checkpointAhead(off) {
		if err := s.open(off); err != nil {
			return 0, err
		}
	}
	if err := s.skip(off - s.pos); err != nil {
		return 0, err
	}
	n, err := io.ReadFull(s.rd, p)
	s.pos += int64(n)
	if err == io.ErrUnexpectedEOF && off+int64(n) == s.ix.Size() {
		err = io.EOF
	}
	return n, err
}

// checkpointAhead: restarting at off's checkpoint skips less than reading
// on from pos.
func (s *sequentialAt) checkpointAhead(off int64) bool {
	start, _, ok := s.ix.Span(off)
	return ok && start > s.pos
}

func (s *sequentialAt) open(off int64) error {
	s.Close()
	rd, err := s.ix.NewReader(s.src, off)
	if err != nil {
		return err
	}
	s.rd, s.pos = rd, off
	return nil
}

func (s *sequentialAt) skip(n int64) error {
	if n == 0 {
		return nil
	}
	if s.scratch == nil {
		s.scratch = make([]byte, 64<<10)
	}
	for n > 0 {
		m, err := s.rd.Read(s.scratch[:min(n, int64(len(s.scratch)))])
		s.pos += int64(m)
		n -= int64(m)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// Close releases the decoder.
func (s *sequentialAt) Close() {
	if s.rd != nil {
		s.rd.Close()
		s.rd = nil
	}
}

// ForScan returns a reader of r's bytes for a parser that scans them front
// to back (indexing a tar): for a gzip stream read in place, one running
// decoder instead of the span cache (see sequentialAt); else r itself.
// Call done when the scan is over.
func ForScan(r io.ReaderAt) (scan io.ReaderAt, done func()) {
	if c, ok := r.(*Compressed); ok {
		if ix, ok := c.ix.(*gz.Index); ok {
			s := newSequentialAt(ix, c.src)
			return s, s.Close
		}
	}
	return r, func() {}
}
