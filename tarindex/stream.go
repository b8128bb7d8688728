package tarindex

import (
	"errors"
	"hash"
	"io"
	"math"
)

// errBehind: a read asked for bytes of a stream that have already gone by.
var errBehind = errors.New("read behind the stream's window")

// chunks yields a stream's bytes in order, a piece at a time: a non-empty
// piece with a nil error, or no bytes and the error that ended the stream
// (io.EOF at its end). A piece is valid until the next call. Pieces let
// the indexing pass skip member data without copying it anywhere: the
// tar parser reads only headers.
type chunks interface {
	next() ([]byte, error)
}

// nextChunks adapts a decoder that hands out its own output buffer
// (gz.Builder.Next): no copy at all.
type nextChunks struct {
	src interface{ Next() ([]byte, error) }
}

func (c nextChunks) next() ([]byte, error) { return c.src.Next() }

// readerChunks adapts an io.Reader, reading into a buffer of its own.
type readerChunks struct {
	r   io.Reader
	buf []byte
	err error // returned once the bytes read with it are consumed
}

func (c *readerChunks) next() ([]byte, error) {
	if c.err != nil {
		return nil, c.err
	}
	for {
		n, err := c.r.Read(c.buf)
		if n > 0 {
			c.err = err
			return c.buf[:n], nil
		}
		if err != nil {
			c.err = err
			return nil, err
		}
	}
}

// streamAt serves the forward-moving ReadAt calls of buildFast from a stream
// read once, front to back (a compressed layer as it is inflated), so that
// the tar is indexed on the same pass that decompresses it. It keeps only
// the bytes of the current read, copied (headers: a few blocks); the bytes
// it skips (member data) are dropped where the source left them. A read
// behind them fails, and behind records it.
type streamAt struct {
	src    chunks
	cur    []byte // the source's piece not yet consumed, at bufAt+len(buf)
	buf    []byte // stream bytes [bufAt, bufAt+len(buf))
	bufAt  int64
	eof    bool
	err    error // the stream's read error, other than io.EOF
	behind bool
}

func (s *streamAt) ReadAt(p []byte, off int64) (int, error) {
	if off < s.bufAt {
		s.behind = true
		return 0, errBehind
	}
	if end := s.bufAt + int64(len(s.buf)); off >= end {
		s.buf, s.bufAt = s.buf[:0], end
		if err := s.discard(off - end); err != nil { // moves bufAt to off
			return 0, err
		}
	} else if off > s.bufAt {
		// Keep what the caller may still want: from off on.
		s.buf = append(s.buf[:0], s.buf[off-s.bufAt:]...)
		s.bufAt = off
	}
	for len(s.buf) < len(p) {
		if len(s.cur) == 0 {
			if s.eof {
				break
			}
			if err := s.pull(); err != nil {
				return 0, err
			}
			continue
		}
		k := min(len(p)-len(s.buf), len(s.cur))
		s.buf = append(s.buf, s.cur[:k]...)
		s.cur = s.cur[k:]
	}
	n := copy(p, s.buf)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// pull takes the source's next piece.
func (s *streamAt) pull() error {
	p, err := s.src.next()
	s.cur = p
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

// discard drops n bytes of the stream after buf, which is empty (member
// data the index skips; the source still saw them, to hash them).
func (s *streamAt) discard(n int64) error {
	for n > 0 {
		if len(s.cur) == 0 {
			if s.eof {
				return io.EOF
			}
			if err := s.pull(); err != nil {
				return err
			}
			continue
		}
		k := int(min(n, int64(len(s.cur))))
		s.cur = s.cur[k:]
		s.bufAt += int64(k)
		n -= int64(k)
	}
	return nil
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
	return indexChunks(&readerChunks{r: r, buf: make([]byte, 256<<10)}, maxEntries)
}

// indexChunks is IndexStream over the pieces of src.
func indexChunks(src chunks, maxEntries int) (ix *Index, size int64, err error) {
	s := &streamAt{src: src}
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

// Hashing the decompressed stream (the diff_id) on the indexing pass's
// goroutine costs a seventh to a quarter of the pass (SHA-256 runs at
// about 2 GB/s with SHA-NI; inflating text at 0.3 to 0.7). asyncHash hands
// the bytes to a goroutine of its own instead, through a small ring of
// blocks: the one copy into a block replaces the copy the reader made
// before, and the hash overlaps the inflating on a second core.
const (
	hashBlock  = 256 << 10
	hashBlocks = 4 // 1 MiB in flight at most: the hasher keeps up or the pass waits
)

type asyncHash struct {
	h      hash.Hash
	cur    []byte // the block being filled
	full   chan []byte
	free   chan []byte
	done   chan struct{}
	closed bool
}

func newAsyncHash(h hash.Hash) *asyncHash {
	a := &asyncHash{h: h, full: make(chan []byte, hashBlocks), free: make(chan []byte, hashBlocks), done: make(chan struct{})}
	for range hashBlocks {
		a.free <- make([]byte, 0, hashBlock)
	}
	go func() {
		defer close(a.done)
		for b := range a.full {
			a.h.Write(b)
			a.free <- b[:0]
		}
	}()
	return a
}

// write queues p for hashing.
func (a *asyncHash) write(p []byte) {
	for len(p) > 0 {
		if a.cur == nil {
			a.cur = <-a.free
		}
		k := copy(a.cur[len(a.cur):cap(a.cur)], p)
		a.cur = a.cur[:len(a.cur)+k]
		p = p[k:]
		if len(a.cur) == cap(a.cur) {
			a.full <- a.cur
			a.cur = nil
		}
	}
}

// sum waits for everything written to be hashed and returns the hash.
func (a *asyncHash) sum() []byte {
	if len(a.cur) > 0 {
		a.full <- a.cur
		a.cur = nil
	}
	a.stop()
	return a.h.Sum(nil)
}

// stop ends the hasher (an abandoned pass); sum may not follow.
func (a *asyncHash) stop() {
	if !a.closed {
		a.closed = true
		close(a.full)
		<-a.done
	}
}

// hashChunks hands every piece of src to h on its way to the parser.
type hashChunks struct {
	src chunks
	h   *asyncHash
}

func (c hashChunks) next() ([]byte, error) {
	p, err := c.src.next()
	c.h.write(p)
	return p, err
}
