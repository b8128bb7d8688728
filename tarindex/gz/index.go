package gz

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/imgmount/imgmount/tarindex/internal/seekfmt"
)

// DefaultEvery is the output between checkpoints when Build is given 0.
const DefaultEvery = 2 << 20

// ErrLimit reports a stream that inflates past the limit set with Limit
// (a decompression bomb, or a limit set too low).
var ErrLimit = errors.New("gzip stream inflates past the limit")

// Index holds the checkpoints of one gzip stream: where decoding can start
// again without reading what comes before. It is immutable, and safe for
// concurrent use.
type Index struct {
	size    int64 // uncompressed size
	csize   int64 // compressed size
	members int64
	points  []point
}

// point is a checkpoint: the block header at bit bit of the compressed
// stream starts at uncompressed offset out; win holds the member's last
// wlen bytes of output before it (all of them, up to 32 KiB), deflated
// unless raw (when deflating does not make them smaller).
type point struct {
	out  int64
	bit  int64
	wlen int
	raw  bool
	win  []byte
}

// Size is the uncompressed size of the stream.
func (ix *Index) Size() int64 { return ix.size }

// CompressedSize is the size of the compressed stream indexed.
func (ix *Index) CompressedSize() int64 { return ix.csize }

// Members is the number of gzip members in the stream.
func (ix *Index) Members() int64 { return ix.members }

// Checkpoints is the number of checkpoints (at least one).
func (ix *Index) Checkpoints() int { return len(ix.points) }

// WindowBytes is the memory the checkpoints' windows take, as stored.
func (ix *Index) WindowBytes() int64 {
	var n int64
	for i := range ix.points {
		n += int64(len(ix.points[i].win))
	}
	return n
}

// Span is the range of uncompressed offsets [start, end) between the
// checkpoint at or before off and the next one: a read of any of it
// inflates from start. ok is false when off is outside the stream.
func (ix *Index) Span(off int64) (start, end int64, ok bool) {
	return seekfmt.Span(len(ix.points), ix.pointOut, ix.size, off)
}

// find is the index of the last checkpoint at or before off.
func (ix *Index) find(off int64) int { return seekfmt.Find(len(ix.points), ix.pointOut, off) }

func (ix *Index) pointOut(i int) int64 { return ix.points[i].out }

type options struct {
	limit    int64
	progress func(in, out int64)
}

// An Option changes how Build works.
type Option func(*options)

// Limit makes Build stop with an error wrapping ErrLimit once the output
// passes n bytes (n <= 0: no limit).
func Limit(n int64) Option { return func(o *options) { o.limit = n } }

// Progress makes Build call fn with the compressed bytes read and the
// uncompressed bytes produced so far, after each piece of output.
func Progress(fn func(in, out int64)) Option { return func(o *options) { o.progress = fn } }

var inflaters = sync.Pool{New: func() any { return newInflater() }}

// windowWriter deflates checkpoint windows.
type windowWriter interface {
	io.WriteCloser
	Reset(w io.Writer)
}

// newWindowWriter makes the deflater of checkpoint windows (a variable
// for BenchmarkBuild, which compares the choices).
var newWindowWriter = func() (windowWriter, error) { return flate.NewWriter(nil, flate.BestSpeed) }

// Builder decodes a gzip stream once, from start to end, recording
// checkpoints on the way: its output is read with Next or Read, and once
// they report io.EOF (the stream ended and every member's CRC-32 and
// length matched), Index returns the checkpoints. Windows are deflated in
// a goroutine of the Builder's own, off the decoding path.
type Builder struct {
	f       *inflater
	ix      *Index
	pts     []*point
	every   int64
	opt     options
	pending []byte
	err     error

	jobs  chan *point // checkpoints whose win holds the raw window, to deflate
	free  chan []byte // window buffers back from the deflater
	nbuf  int
	wg    sync.WaitGroup
	werr  error // the deflater's, read after wg.Wait
	ended bool  // the deflater is done and ix.points set
}

const windowBuffers = 4 // raw windows waiting for the deflater, at most

// NewBuilder starts decoding the gzip stream r[0:size), to record a
// checkpoint at the first block boundary after each every bytes of output
// (0: DefaultEvery). Call Close when done with it.
func NewBuilder(r io.ReaderAt, size int64, every int64, opts ...Option) *Builder {
	if every <= 0 {
		every = DefaultEvery
	}
	b := &Builder{every: every, ix: &Index{csize: size}}
	for _, o := range opts {
		o(&b.opt)
	}
	b.f = inflaters.Get().(*inflater)
	if err := b.f.reset(r, size, true, true); err != nil {
		b.err = err
	}
	b.f.nextPoint = 0
	return b
}

// Next returns the next piece of output, valid until the next call, or
// io.EOF at the end of the stream, or the error that stopped decoding.
func (b *Builder) Next() ([]byte, error) {
	for b.err == nil {
		f := b.f
		st, err := f.step()
		if err != nil {
			b.err = err
			break
		}
		out := f.hist[f.rp:f.wp]
		if b.opt.limit > 0 && f.out() > b.opt.limit {
			b.err = fmt.Errorf("%w: more than %d bytes", ErrLimit, b.opt.limit)
			break
		}
		switch st {
		case stepBoundary:
			b.checkpoint()
			f.nextPoint = f.out() + b.every
		case stepEnd:
			b.ix.size = f.out()
			b.ix.members = f.members
			b.err = io.EOF
		}
		if b.opt.progress != nil && (len(out) > 0 || st == stepEnd) {
			b.opt.progress(min(f.bitPos()/8, b.ix.csize), f.out())
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	return nil, b.err
}

// Read reads output into p (io.Reader).
func (b *Builder) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(b.pending) == 0 {
			out, err := b.Next()
			if err != nil {
				if n > 0 {
					return n, nil
				}
				return 0, err
			}
			b.pending = out
		}
		c := copy(p[n:], b.pending)
		b.pending = b.pending[c:]
		n += c
	}
	return n, nil
}

// Index returns the checkpoints, once the stream has been read to its end.
func (b *Builder) Index() (*Index, error) {
	if b.err != io.EOF {
		if b.err == nil {
			return nil, errors.New("gz: Index called before the end of the stream")
		}
		return nil, b.err
	}
	if err := b.end(); err != nil {
		return nil, err
	}
	return b.ix, nil
}

// end waits for the deflater and gathers the checkpoints.
func (b *Builder) end() error {
	if b.ended {
		return b.werr
	}
	b.ended = true
	if b.jobs != nil {
		close(b.jobs)
		b.wg.Wait()
	}
	b.ix.points = make([]point, len(b.pts))
	for i, p := range b.pts {
		b.ix.points[i] = *p
	}
	b.pts = nil
	return b.werr
}

// Close releases the decoder's buffers.
func (b *Builder) Close() {
	if b.f != nil {
		b.f.src = nil
		inflaters.Put(b.f)
		b.f = nil
	}
	b.end()
	if b.err == nil {
		b.err = errors.New("gz: Builder closed")
	}
}

// checkpoint records the decoder's position, a block boundary, and hands
// its window to the deflater.
func (b *Builder) checkpoint() {
	f := b.f
	w := f.window()
	p := &point{out: f.out(), bit: f.bitPos(), wlen: len(w), raw: true}
	b.pts = append(b.pts, p)
	if len(w) == 0 {
		return
	}
	if b.jobs == nil {
		b.jobs = make(chan *point, windowBuffers)
		b.free = make(chan []byte, windowBuffers)
		b.wg.Add(1)
		go b.deflater()
	}
	var buf []byte
	select {
	case buf = <-b.free:
	default:
		if b.nbuf < windowBuffers {
			buf = make([]byte, winSize)
			b.nbuf++
		} else {
			buf = <-b.free
		}
	}
	p.win = buf[:copy(buf, w)]
	b.jobs <- p
}

// deflater deflates the windows of the checkpoints it is handed, keeping
// them raw where that is smaller.
func (b *Builder) deflater() {
	defer b.wg.Done()
	var wbuf bytes.Buffer
	zw, err := newWindowWriter()
	for p := range b.jobs {
		raw := p.win
		if err == nil {
			wbuf.Reset()
			zw.Reset(&wbuf)
			if _, err = zw.Write(raw); err == nil {
				err = zw.Close()
			}
		}
		if err == nil && wbuf.Len() < len(raw) {
			p.win = bytes.Clone(wbuf.Bytes())
			p.raw = false
		} else {
			p.win = bytes.Clone(raw)
		}
		b.free <- raw[:cap(raw)]
	}
	b.werr = err
}

// Build decodes the gzip stream r[0:size) from start to end, calling visit
// with its output in order (each p valid only during the call), checks
// every member's CRC-32 and length, and returns the checkpoints recorded
// at the first block boundary after each every bytes of output (0:
// DefaultEvery). An error from visit stops it and is returned.
func Build(r io.ReaderAt, size int64, every int64, visit func(p []byte) error, opts ...Option) (*Index, error) {
	b := NewBuilder(r, size, every, opts...)
	defer b.Close()
	for {
		p, err := b.Next()
		if err == io.EOF {
			return b.Index()
		}
		if err != nil {
			return nil, err
		}
		if err := visit(p); err != nil {
			return nil, err
		}
	}
}

// sliceReaderAt reads a byte slice.
type sliceReaderAt []byte

func (s sliceReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(s)) {
		return 0, io.EOF
	}
	n := copy(p, s[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// restore sets f up to decode r from checkpoint i.
func (ix *Index) restore(f *inflater, r io.ReaderAt, i int) error {
	p := &ix.points[i]
	f.wp = 0
	if p.raw {
		f.wp = copy(f.hist, p.win)
	} else {
		if err := f.reset(sliceReaderAt(p.win), int64(len(p.win)), false, false); err != nil {
			return fmt.Errorf("checkpoint %d: window: %w", i, err)
		}
		for {
			st, err := f.step()
			if err != nil {
				return fmt.Errorf("checkpoint %d: window: %w", i, err)
			}
			if st == stepEnd || f.wp > p.wlen {
				break
			}
		}
	}
	if f.wp != p.wlen {
		return fmt.Errorf("checkpoint %d: window of %d bytes, not %d", i, f.wp, p.wlen)
	}
	return f.resume(r, ix.csize, true, p.bit, p.out)
}

// Reader reads the uncompressed stream sequentially from an offset.
type Reader struct {
	ix      *Index
	f       *inflater
	pos     int64  // offset of pending[0]
	pending []byte // output not yet read
	err     error
}

// NewReader returns a Reader of the stream r (the one ix indexes) from
// uncompressed offset off: it inflates from the checkpoint at or before
// off. Call Close when done with it.
func (ix *Index) NewReader(r io.ReaderAt, off int64) (*Reader, error) {
	if off < 0 {
		return nil, errors.New("gz: negative offset")
	}
	z := &Reader{ix: ix, pos: off}
	if off >= ix.size {
		z.err = io.EOF
		return z, nil
	}
	i := ix.find(off)
	z.f = inflaters.Get().(*inflater)
	if err := ix.restore(z.f, r, i); err != nil {
		z.Close()
		return nil, err
	}
	if err := z.skip(off - ix.points[i].out); err != nil {
		z.Close()
		return nil, err
	}
	return z, nil
}

// skip discards n bytes of output.
func (z *Reader) skip(n int64) error {
	for {
		out, err := z.next()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if int64(len(out)) > n {
			z.pending = out[n:]
			return nil
		}
		n -= int64(len(out))
	}
}

// next is the next piece of output.
func (z *Reader) next() ([]byte, error) {
	f := z.f
	for {
		st, err := f.step()
		if err != nil {
			return nil, err
		}
		if out := f.hist[f.rp:f.wp]; len(out) > 0 {
			return out, nil
		}
		if st == stepEnd {
			return nil, io.EOF
		}
	}
}

// Read reads the stream's bytes (io.Reader).
func (z *Reader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && z.err == nil {
		if len(z.pending) == 0 {
			out, err := z.next()
			if err != nil {
				z.err = err
				if err == io.EOF && z.pos < z.ix.size {
					z.err = io.ErrUnexpectedEOF
				}
				break
			}
			z.pending = out
		}
		c := copy(p[n:], z.pending)
		z.pending = z.pending[c:]
		n += c
		z.pos += int64(c)
	}
	if n > 0 {
		return n, nil
	}
	return 0, z.err
}

// Close releases the decoder's buffers.
func (z *Reader) Close() error {
	if z.f != nil {
		z.f.src = nil
		inflaters.Put(z.f)
		z.f = nil
	}
	if z.err == nil {
		z.err = errors.New("gz: Reader closed")
	}
	return nil
}

// ReadAt reads len(p) bytes of the uncompressed stream at offset off from
// r, the compressed stream ix indexes, inflating from the checkpoint at or
// before off. It is safe to call concurrently (if r is). As io.ReaderAt,
// it returns io.EOF with fewer bytes than asked at the end of the stream.
func (ix *Index) ReadAt(r io.ReaderAt, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("gz: negative offset")
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= ix.size {
		return 0, io.EOF
	}
	want := p
	if rest := ix.size - off; int64(len(p)) > rest {
		want = p[:rest]
	}
	z, err := ix.NewReader(r, off)
	if err != nil {
		return 0, err
	}
	defer z.Close()
	n, err := io.ReadFull(z, want)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, fmt.Errorf("gzip stream at uncompressed offset %d: %w", off+int64(n), err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// ReaderAt binds ix to the compressed stream r it indexes: an io.ReaderAt
// of the uncompressed stream (each read inflates from a checkpoint).
func (ix *Index) ReaderAt(r io.ReaderAt) *SectionReader {
	return &SectionReader{ix: ix, r: r}
}

// SectionReader is an Index bound to its compressed stream.
type SectionReader struct {
	ix *Index
	r  io.ReaderAt
}

// ReadAt reads the uncompressed stream (io.ReaderAt); see Index.ReadAt.
func (s *SectionReader) ReadAt(p []byte, off int64) (int, error) { return s.ix.ReadAt(s.r, p, off) }

// Size is the uncompressed size.
func (s *SectionReader) Size() int64 { return s.ix.size }
