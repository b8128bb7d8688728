package tarindex

import (
	"container/list"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/imgmount/imgmount/tarindex/gz"
)

// Seekable is the random-access index of a compressed stream: gzip
// checkpoints (package gz) or zstd frames (package zst). The stream can be
// entered only at span starts, so a read decodes whole spans.
type Seekable interface {
	// Size is the length of the decompressed stream.
	Size() int64
	// Span returns the decompressed range [start, end) that decoding from
	// the entry point at or before off produces, up to the next one.
	Span(off int64) (start, end int64, ok bool)
	// ReadAt reads the decompressed stream at off, decoding the
	// compressed stream held by r.
	ReadAt(r io.ReaderAt, p []byte, off int64) (int, error)
}

// DefaultSpanCache is how many bytes of inflated spans a mount keeps by
// default: 64 spans of gzip's 2 MiB spacing, enough for the working set of
// a build or a grep without making the mount's memory grow much.
const DefaultSpanCache = 128 << 20

// maxSpanBuffer is the largest span decoded whole into memory (and cached).
// Real encoders end a DEFLATE block every few MiB, so gzip spans are a
// little over the 2 MiB checkpoint spacing, and zstd spans are bounded by
// zst.DefaultMaxFrame; but a hostile stream can make one block of
// gigabytes, hence one span of all of it. Reads in a bigger span decode
// from its start up to what they want, in bounded memory.
const maxSpanBuffer = 32 << 20

// Spans is a least-recently-used cache of decompressed spans, shared by all
// the compressed layers of a mount and bounded in bytes: reading the small
// files of one span decodes it once. It is safe for concurrent use; two
// readers that want the same span wait for one decode.
type Spans struct {
	mu     sync.Mutex
	budget int64
	used   int64
	lru    *list.List // of *span, most recent first
	byKey  map[spanKey]*list.Element
}

type spanKey struct {
	src   *Compressed
	start int64
}

type span struct {
	key   spanKey
	data  []byte
	err   error
	done  chan struct{} // closed once data or err is set
	ahead bool          // read ahead and not yet asked for (under Spans.mu)
}

// NewSpans returns a span cache of budget bytes (DefaultSpanCache if 0 or
// less).
func NewSpans(budget int64) *Spans {
	if budget <= 0 {
		budget = DefaultSpanCache
	}
	return &Spans{budget: budget, lru: list.New(), byKey: map[spanKey]*list.Element{}}
}

// Compressed serves the decompressed stream of a compressed blob as an
// io.ReaderAt, decoding from the index's entry points through a span cache.
type Compressed struct {
	name  string // for errors: which layer
	ix    Seekable
	src   io.ReaderAt
	spans *Spans

	lastEnd int64       // end of the span last decoded (under spans.mu): to tell a reader going forward
	ahead   atomic.Bool // a span is being read ahead
}

// NewCompressed returns a reader of the stream ix indexes in src. name
// identifies it in errors (the tarball and layer).
func NewCompressed(name string, ix Seekable, src io.ReaderAt, spans *Spans) *Compressed {
	return &Compressed{name: name, ix: ix, src: src, spans: spans}
}

// Size is the decompressed size.
func (c *Compressed) Size() int64 { return c.ix.Size() }

// ReadAt implements io.ReaderAt over the decompressed stream. An error
// decoding a span (corrupt data found only now) names the layer and the
// span's offset.
func (c *Compressed) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset %d", c.name, off)
	}
	n := 0
	for n < len(p) {
		if off >= c.ix.Size() {
			return n, io.EOF
		}
		start, end, ok := c.ix.Span(off)
		if !ok {
			return n, io.EOF
		}
		if end-start > maxSpanBuffer {
			m, err := c.readUncached(p[n:n+int(min(int64(len(p)-n), end-off))], off)
			n += m
			off += int64(m)
			if err != nil {
				return n, err
			}
			continue
		}
		data, err := c.spans.get(c, start, end)
		if err != nil {
			return n, fmt.Errorf("%s: decompressed bytes %d to %d: %w", c.name, start, end, err)
		}
		m := copy(p[n:], data[off-start:])
		n += m
		off += int64(m)
	}
	return n, nil
}

// readUncached reads p at off, all inside one span too big to buffer,
// decoding from the span's start.
func (c *Compressed) readUncached(p []byte, off int64) (int, error) {
	m, err := c.ix.ReadAt(c.src, p, off)
	if err == io.EOF && m == len(p) {
		err = nil
	}
	if err != nil {
		return m, fmt.Errorf("%s: decompressed bytes %d to %d: %w", c.name, off, off+int64(len(p)), err)
	}
	return m, nil
}

// get returns the decoded span [start, end) of c, from the cache or decoded
// now.
func (s *Spans) get(c *Compressed, start, end int64) ([]byte, error) {
	key := spanKey{c, start}
	s.mu.Lock()
	if el, ok := s.byKey[key]; ok {
		s.lru.MoveToFront(el)
		sp := el.Value.(*span)
		ahead := sp.ahead
		sp.ahead = false
		s.mu.Unlock()
		if ahead {
			// The reader caught up with a span read ahead for it:
			// it is still going forward.
			s.readAhead(c, end)
		}
		<-sp.done
		return sp.data, sp.err
	}
	sp := &span{key: key, done: make(chan struct{})}
	el := s.lru.PushFront(sp)
	s.byKey[key] = el
	seq := c.lastEnd == start
	c.lastEnd = end
	s.mu.Unlock()
	if seq {
		s.readAhead(c, end)
	}
	s.decode(c, sp, el, end)
	return sp.data, sp.err
}

// readAhead decodes the span of c at start on a goroutine of its own, when
// the reader of c is going forward (it missed the span right after the last
// one decoded, or reached one read ahead): it will want that span next,
// and inflating it on the other core while this one is served halves the
// wait of a reader going through a layer (a tar, a grep, a copy). One per
// stream at a time, so that a mount's many readers cannot fill the cache,
// or the machine, with guesses.
func (s *Spans) readAhead(c *Compressed, start int64) {
	if start >= c.ix.Size() || !c.ahead.CompareAndSwap(false, true) {
		return
	}
	st, end, ok := c.ix.Span(start)
	key := spanKey{c, st}
	s.mu.Lock()
	if _, cached := s.byKey[key]; !ok || cached || st != start || end-st > maxSpanBuffer {
		s.mu.Unlock()
		c.ahead.Store(false)
		return
	}
	sp := &span{key: key, done: make(chan struct{}), ahead: true}
	// At the front, as if asked for: at the back, any other decode
	// would evict it before its reader got to it.
	el := s.lru.PushFront(sp)
	s.byKey[key] = el
	c.lastEnd = end
	s.mu.Unlock()
	go func() {
		defer c.ahead.Store(false)
		s.decode(c, sp, el, end)
	}()
}

// decode fills sp, the span of c from its key's start to end, which el
// holds in the cache, and settles what the cache keeps.
func (s *Spans) decode(c *Compressed, sp *span, el *list.Element, end int64) {
	start := sp.key.start
	buf := make([]byte, end-start)
	n, err := c.ix.ReadAt(c.src, buf, start)
	if err == io.EOF && n == len(buf) {
		err = nil
	}
	sp.data, sp.err = buf[:n], err

	s.mu.Lock()
	if err != nil || int64(len(buf)) > s.budget {
		// Not kept: an error may be a passing read failure of the
		// tarball, and a span over the budget would evict everything.
		s.lru.Remove(el)
		delete(s.byKey, sp.key)
	} else {
		s.used += int64(len(buf))
		s.evict(el)
	}
	s.mu.Unlock()
	close(sp.done)
}

// evict drops least recently used spans until the cache fits its budget,
// keeping keep (the span just decoded) and spans still being decoded.
func (s *Spans) evict(keep *list.Element) {
	for el := s.lru.Back(); el != nil && s.used > s.budget; {
		prev := el.Prev()
		sp := el.Value.(*span)
		select {
		case <-sp.done:
			if el != keep {
				s.used -= int64(len(sp.data))
				s.lru.Remove(el)
				delete(s.byKey, sp.key)
			}
		default: // being decoded: its size is not counted yet
		}
		el = prev
	}
}

// Used reports the bytes the cache holds now.
func (s *Spans) Used() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// NewReader reads c's decompressed stream forward from off. A gzip stream
// is inflated as it is read, from the checkpoint at or before off, past the
// span cache: a reader going through much of a layer once (pushing a big
// file to the page cache) then decodes each byte once, where reads through
// ReadAt would decode whole spans, some twice at the edges of its reads,
// and push out of the cache the spans other readers use. Streams with no
// such reader (zstd frames, small anyway) are read through ReadAt. Call
// Close when done.
func (c *Compressed) NewReader(off int64) (io.ReadCloser, error) {
	if off < 0 {
		return nil, fmt.Errorf("%s: negative offset %d", c.name, off)
	}
	if g, ok := c.ix.(*gz.Index); ok {
		z, err := g.NewReader(c.src, off)
		if err != nil {
			return nil, fmt.Errorf("%s: decompressed byte %d: %w", c.name, off, err)
		}
		return &seqReader{c: c, r: z, pos: off}, nil
	}
	return io.NopCloser(io.NewSectionReader(c, off, c.Size()-off)), nil
}

// seqReader names the layer in the errors of a gzip Reader.
type seqReader struct {
	c   *Compressed
	r   *gz.Reader
	pos int64
}

func (s *seqReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.pos += int64(n)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%s: decompressed byte %d: %w", s.c.name, s.pos, err)
	}
	return n, err
}

func (s *seqReader) Close() error { return s.r.Close() }
