package zst

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/imgmount/imgmount/tarindex/internal/seekfmt"
	"github.com/klauspost/compress/zstd"
)

// DefaultMaxFrame is advice for callers: a stream whose largest frame
// (Index.MaxFrame) decompresses to more than this is not worth serving in
// place, since every read of it decodes on average half a frame; keep a
// decompressed copy instead. 16 MiB is 4096 pages of output per read at
// worst, about 10 ms of decoding.
const DefaultMaxFrame = 16 << 20

// MaxWindow is the largest window a frame may declare: 128 MiB, the
// reference zstd's default limit when decompressing (ZSTD_WINDOWLOG_LIMIT_DEFAULT,
// 2^27; `zstd --long` and levels up to --ultra -22 stay within it, and the
// zstd command itself refuses more without --memory). The decoder
// allocates a frame's whole window up front, so this bounds what one
// hostile frame header can make a Builder or a read take.
const MaxWindow = 128 << 20

// minSpan is the output below which consecutive frames share one seek
// point. Frames can be tiny (zstd:chunked makes one per file, and a
// hostile stream can make one per 10 bytes): one seek point per frame
// would make an index bigger than the stream. With frames merged while
// their output stays within minSpan, there are fewer than
// 2*Size()/minSpan+1 seek points, and a read decodes at most minSpan
// bytes more than its own frame (less where frames declare their size:
// ReadAt skips those without decoding them).
const minSpan = 64 << 10

// progressEvery is how much input or output passes between calls of the
// Progress function.
const progressEvery = 1 << 20

// ErrLimit reports a stream that decompresses past the limit set with
// Limit (a decompression bomb, or a limit set too low).
var ErrLimit = errors.New("zstd stream decompresses past the limit")

// Index holds the seek points of one zstd stream: the starts of frames,
// where decoding can begin without what comes before. It is immutable,
// and safe for concurrent use.
type Index struct {
	size     int64 // decompressed size
	csize    int64 // compressed size
	frames   int64 // data frames
	maxFrame int64 // decompressed size of the largest frame
	spans    []span
}

// span is a seek point: the data frame at compressed offset in starts at
// decompressed offset out, and the frames up to the next seek point are
// decoded from it.
type span struct {
	out, in int64
}

// Size is the decompressed size of the stream.
func (ix *Index) Size() int64 { return ix.size }

// CompressedSize is the size of the compressed stream indexed.
func (ix *Index) CompressedSize() int64 { return ix.csize }

// Frames is the number of data frames in the stream, empty ones included
// (skippable frames are not counted).
func (ix *Index) Frames() int { return int(ix.frames) }

// MaxFrame is the decompressed size of the largest frame: what one read
// may have to decode. A stream of one big frame has nothing to seek to,
// so callers compare this with DefaultMaxFrame.
func (ix *Index) MaxFrame() int64 { return ix.maxFrame }

// SeekPoints is the number of seek points: the frames reads may start
// decoding at (small frames share one).
func (ix *Index) SeekPoints() int { return len(ix.spans) }

// Span is the range of decompressed offsets [start, end) of the frame
// holding off, or of the run of small consecutive frames holding it
// (together at most 64 KiB): a read of any of it decodes from start at
// worst, so it is the unit worth caching. ok is false when off is outside
// the stream.
func (ix *Index) Span(off int64) (start, end int64, ok bool) {
	return seekfmt.Span(len(ix.spans), ix.spanOut, ix.size, off)
}

// find is the index of the last seek point at or before off.
func (ix *Index) find(off int64) int { return seekfmt.Find(len(ix.spans), ix.spanOut, off) }

func (ix *Index) spanOut(i int) int64 { return ix.spans[i].out }

type options struct {
	limit    int64
	progress func(in, out int64)
}

// An Option changes how a Builder works.
type Option func(*options)

// Limit makes a Builder stop with an error wrapping ErrLimit once the
// output passes n bytes (n <= 0: no limit). zstd can expand 4 bytes (an
// RLE block) into 128 KiB, so an untrusted stream wants one.
func Limit(n int64) Option { return func(o *options) { o.limit = n } }

// Progress makes a Builder call fn, now and then (about every MiB) and at
// the end, with the compressed bytes consumed and the decompressed bytes
// produced so far.
func Progress(fn func(in, out int64)) Option { return func(o *options) { o.progress = fn } }

// frameDecoder decodes one frame at a time, streaming: its memory is the
// frame's window (at most MaxWindow) and a block, whatever the frame's
// size.
type frameDecoder struct {
	d      *zstd.Decoder
	br     *bufio.Reader
	sr     io.SectionReader
	window uint64
}

// maxWindow is MaxWindow, lowered by the fuzz tests (a window is
// allocated whole, and fuzzed headers ask for big ones all the time).
var maxWindow uint64 = MaxWindow

var decoders sync.Pool

// getDecoder returns a pooled decoder, or a new one. Concurrency 1
// decodes in the calling goroutine: no goroutines to leak from a pooled
// decoder, and a read needs its output in order anyway.
func getDecoder() *frameDecoder {
	if fd, ok := decoders.Get().(*frameDecoder); ok && fd.window == maxWindow {
		return fd
	}
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxWindow))
	if err != nil {
		panic(err) // constant options
	}
	return &frameDecoder{d: d, br: bufio.NewReaderSize(nil, 32<<10), window: maxWindow}
}

// reset starts decoding the frame r[start:end).
func (fd *frameDecoder) reset(r io.ReaderAt, start, end int64) error {
	fd.sr = *io.NewSectionReader(r, start, end-start)
	fd.br.Reset(&fd.sr)
	return fd.d.Reset(fd.br)
}

// consumedAll reports whether the decoder read its frame to the end:
// the walk and the decoder agree on where the frame ends.
func (fd *frameDecoder) consumedAll() bool {
	pos, _ := fd.sr.Seek(0, io.SeekCurrent)
	return fd.br.Buffered() == 0 && pos == fd.sr.Size()
}

// release drops the references to the stream and pools fd.
func (fd *frameDecoder) release() {
	fd.d.Reset(nil)
	fd.br.Reset(nil)
	fd.sr = io.SectionReader{}
	decoders.Put(fd)
}

// Builder decodes a zstd stream once, from start to end, frame by frame,
// recording seek points on the way: its output is read with Read, and
// once Read reports io.EOF (every frame decoded and its checksum, where it
// has one, matched), Index returns them.
type Builder struct {
	r    io.ReaderAt
	cur  *cursor
	fd   *frameDecoder
	opt  options
	ix   *Index
	err  error
	in   int64     // compressed offset of the next frame, or of the frame being decoded
	out  int64     // output so far
	fr   frameInfo // the frame being decoded
	open bool      // fr is being decoded
	fout int64     // output when fr began
	last int64     // output of the last seek point's frames so far
	pin  int64     // in and out at the last call of the Progress function
	pout int64
}

// NewBuilder starts decoding the zstd stream r[0:size). Call Close when
// done with it.
func NewBuilder(r io.ReaderAt, size int64, opts ...Option) *Builder {
	b := &Builder{r: r, cur: newCursor(r, size), ix: &Index{csize: size}}
	for _, o := range opts {
		o(&b.opt)
	}
	if size < 0 {
		b.err = errors.New("zst: negative size")
	}
	return b
}

// Read reads the decompressed stream (io.Reader): io.EOF at its end, an
// error saying which frame and where when it is corrupt, truncated, or
// followed by anything but frames.
func (b *Builder) Read(p []byte) (int, error) {
	for b.err == nil {
		if !b.open {
			if b.in == b.ix.csize {
				b.ix.size = b.out
				b.err = io.EOF
				b.report(true)
				break
			}
			fr, err := b.cur.frame(b.in)
			if err != nil {
				b.err = err
				break
			}
			if fr.skippable {
				b.in = fr.end
				continue
			}
			if b.fd == nil {
				b.fd = getDecoder()
			}
			b.fr, b.open, b.fout = fr, true, b.out
			if err := b.fd.reset(b.r, fr.start, fr.end); err != nil {
				b.err = b.frameError(err)
				break
			}
		}
		if len(p) == 0 {
			return 0, nil
		}
		n, err := b.fd.d.Read(p)
		b.out += int64(n)
		switch {
		case b.opt.limit > 0 && b.out > b.opt.limit:
			b.err = fmt.Errorf("%w: more than %d bytes", ErrLimit, b.opt.limit)
			return 0, b.err
		case err == io.EOF:
			b.err = b.endFrame()
		case err != nil:
			b.err = b.frameError(err)
		}
		b.report(false)
		if n > 0 {
			return n, nil
		}
	}
	return 0, b.err
}

// frameError says where the frame that failed to decode is.
func (b *Builder) frameError(err error) error {
	if errors.Is(err, zstd.ErrWindowSizeExceeded) || errors.Is(err, zstd.ErrDecoderSizeExceeded) {
		// Streaming, both mean a window past maxWindow.
		err = fmt.Errorf("window larger than %d MiB: %w", maxWindow>>20, err)
	}
	return fmt.Errorf("zstd frame %d at compressed offset %d (decompressed offset %d): %w", b.ix.frames, b.fr.start, b.fout, err)
}

// endFrame records the frame just decoded, joining it to the last seek
// point's frames while they stay within minSpan.
func (b *Builder) endFrame() error {
	n := b.out - b.fout
	switch {
	case !b.fd.consumedAll():
		return b.frameError(errors.New("the decoder stopped before the end of the frame"))
	case b.fr.size != unknownSize && n != b.fr.size:
		return b.frameError(fmt.Errorf("decompressed to %d bytes, not the %d declared", n, b.fr.size))
	}
	ix := b.ix
	switch {
	case n == 0:
	case len(ix.spans) > 0 && b.last+n <= minSpan:
		b.last += n
	default:
		ix.spans = append(ix.spans, span{out: b.fout, in: b.fr.start})
		b.last = n
	}
	ix.frames++
	ix.maxFrame = max(ix.maxFrame, n)
	b.in = b.fr.end
	b.open = false
	return nil
}

// report calls the Progress function if enough has passed since the
// last call, or at the end.
func (b *Builder) report(end bool) {
	if b.opt.progress == nil {
		return
	}
	in := b.in
	if b.open {
		pos, _ := b.fd.sr.Seek(0, io.SeekCurrent)
		in = b.fr.start + pos
	}
	if end || in-b.pin >= progressEvery || b.out-b.pout >= progressEvery {
		b.pin, b.pout = in, b.out
		b.opt.progress(in, b.out)
	}
}

// Index returns the seek points, once Read has returned io.EOF.
func (b *Builder) Index() (*Index, error) {
	if b.err != io.EOF {
		if b.err == nil {
			return nil, errors.New("zst: Index called before the end of the stream")
		}
		return nil, b.err
	}
	return b.ix, nil
}

// Close releases the decoder.
func (b *Builder) Close() {
	if b.fd != nil {
		b.fd.release()
		b.fd = nil
	}
	b.cur = nil
	if b.err == nil {
		b.err = errors.New("zst: Builder closed")
	}
}

// Build decodes the zstd stream r[0:size) from start to end, calling visit
// with its output in order (each p valid only during the call), and
// returns its index. An error from visit stops it and is returned.
func Build(r io.ReaderAt, size int64, visit func(p []byte) error, opts ...Option) (*Index, error) {
	b := NewBuilder(r, size, opts...)
	defer b.Close()
	buf := make([]byte, 256<<10)
	for {
		n, err := b.Read(buf)
		if n > 0 {
			if err := visit(buf[:n]); err != nil {
				return nil, err
			}
		}
		if err == io.EOF {
			return b.Index()
		}
		if err != nil {
			return nil, err
		}
	}
}

// ReadAt reads len(p) bytes of the decompressed stream at offset off from
// r, the compressed stream ix indexes. It walks the frames from the seek
// point at or before off, skips those before off that declare their size
// without decoding them, and decodes only the frames the read covers,
// each from its start (streaming: what precedes off is discarded, not
// kept). It is safe to call concurrently (if r is). As io.ReaderAt, it
// returns io.EOF with fewer bytes than asked at the end of the stream.
func (ix *Index) ReadAt(r io.ReaderAt, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("zst: negative offset")
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
	n, err := ix.read(r, want, off)
	if err != nil {
		return n, fmt.Errorf("zstd stream at decompressed offset %d: %w", off+int64(n), err)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// read fills p, all within the stream, from offset off.
func (ix *Index) read(r io.ReaderAt, p []byte, off int64) (int, error) {
	if len(ix.spans) == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	sp := ix.spans[ix.find(off)]
	in, out := sp.in, sp.out // the next frame's offsets
	c := cursor{r: r, size: ix.csize, buf: make([]byte, 512)}
	var fd *frameDecoder
	defer func() {
		if fd != nil {
			fd.release()
		}
	}()
	n := 0
	for n < len(p) {
		if in >= ix.csize {
			return n, io.ErrUnexpectedEOF
		}
		fr, err := c.frame(in)
		if err != nil {
			return n, err
		}
		in = fr.end
		pos := off + int64(n)
		if fr.skippable || fr.size == 0 {
			continue
		}
		if fr.size != unknownSize && out+fr.size <= pos {
			out += fr.size // Build checked the declared size
			continue
		}
		if fd == nil {
			fd = getDecoder()
		}
		skipped, got, err := decodeFrame(fd, r, fr, pos-out, p[n:])
		n += got
		out += skipped + int64(got)
		if err != nil {
			return n, fmt.Errorf("frame at compressed offset %d: %w", fr.start, err)
		}
	}
	return n, nil
}

// decodeFrame decodes the frame fr, discards up to skip bytes of its
// output, and reads what follows into p until p is full or the frame
// ends. It returns the bytes discarded (fewer than skip when the frame
// ends before) and read.
func decodeFrame(fd *frameDecoder, r io.ReaderAt, fr frameInfo, skip int64, p []byte) (skipped int64, got int, err error) {
	if err := fd.reset(r, fr.start, fr.end); err != nil {
		return 0, 0, err
	}
	if skip > 0 {
		skipped, err = io.CopyN(io.Discard, fd.d, skip)
		if err == io.EOF {
			return skipped, 0, nil
		}
		if err != nil {
			return skipped, 0, err
		}
	}
	got, err = io.ReadFull(fd.d, p)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = nil // the frame ended: the caller goes on with the next one
	}
	return skipped, got, err
}

// ReaderAt binds ix to the compressed stream r it indexes: an io.ReaderAt
// of the decompressed stream.
func (ix *Index) ReaderAt(r io.ReaderAt) *SectionReader {
	return &SectionReader{ix: ix, r: r}
}

// SectionReader is an Index bound to its compressed stream.
type SectionReader struct {
	ix *Index
	r  io.ReaderAt
}

// ReadAt reads the decompressed stream (io.ReaderAt); see Index.ReadAt.
func (s *SectionReader) ReadAt(p []byte, off int64) (int, error) { return s.ix.ReadAt(s.r, p, off) }

// Size is the decompressed size.
func (s *SectionReader) Size() int64 { return s.ix.size }
