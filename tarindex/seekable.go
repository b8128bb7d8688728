package tarindex

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/imgmount/imgmount/tarindex/gz"
	"github.com/imgmount/imgmount/tarindex/zst"
	digest "github.com/opencontainers/go-digest"
)

// CompressedOptions tune IndexCompressed.
type CompressedOptions struct {
	// MaxEntries bounds the tar's entries as BuildMax does.
	MaxEntries int
	// Progress, if set, hears the compressed bytes read and the
	// decompressed bytes produced so far, now and then.
	Progress func(in, out int64)
}

// IndexCompressed indexes a compressed tar stream in place: one pass
// decompresses blob[0:size) (compressed with comp), checks it against want
// (unless empty), indexes its tar and records the entry points a later
// read decodes from. Nothing decompressed is written anywhere; the
// checkpoints and the tar index are saved under Dir (when set) and loaded
// on later calls with the same key, after checking them against blob like
// Index does. The tar index's offsets are in the decompressed stream: read
// it through NewCompressed(name, seek, blob, spans).
//
// A stream that decompresses to more than the inflate limit (see MaxRatio)
// stops with ErrTooLarge, having written nothing.
func (c *Cache) IndexCompressed(key string, blob io.ReaderAt, size int64, comp Compression, want digest.Digest, opts CompressedOptions) (*Index, Seekable, error) {
	var fp [32]byte
	var base string
	if c.Dir != "" {
		var err error
		if fp, err = fingerprint(blob, 0, size); err != nil {
			return nil, nil, fmt.Errorf("index %s: %w", key, err)
		}
		base = filepath.Join(c.Dir, "index", keyName("compressed:"+key))
		ix, seek, err := loadCompressed(base, comp, size, fp)
		if err == nil {
			c.Touch(base + ".idx")
			c.Touch(base + seekExt(comp))
			if opts.MaxEntries > 0 && ix.Cost() > opts.MaxEntries {
				return nil, nil, tooMany(opts.MaxEntries)
			}
			return ix, seek, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			c.warn(fmt.Errorf("saved checkpoints for %s (%s), rebuilding: %w", key, base, err))
		}
	}
	ix, seek, err := c.buildCompressed(blob, size, comp, want, opts)
	if err != nil {
		return nil, nil, err
	}
	if base != "" {
		c.sweepOnce()
		if err := saveCompressed(base, ix, seek, comp, size, fp); err != nil {
			c.warn(fmt.Errorf("save checkpoints for %s: %w", key, err))
		} else {
			c.saved(sourceOf(key), base+".idx", base+seekExt(comp))
		}
	}
	return ix, seek, nil
}

// inflateLimit is how far a stream of csize compressed bytes may inflate:
// MaxRatio times (default 100) or MinLimit (default 64 GiB), whichever is
// more. Real layers compress 2 to 10 times.
func (c *Cache) inflateLimit(csize int64) int64 {
	ratio, floor := c.MaxRatio, c.MinLimit
	if ratio <= 0 {
		ratio = 100
	}
	if floor <= 0 {
		floor = 64 << 30
	}
	if csize >= math.MaxInt64/ratio {
		return math.MaxInt64
	}
	return max(csize*ratio, floor)
}

// isLimit tells a decoder that stopped at the inflate limit.
func isLimit(err error) bool {
	return errors.Is(err, errLimit) || errors.Is(err, gz.ErrLimit) || errors.Is(err, zst.ErrLimit)
}

// bombError reports a stream of size compressed bytes that inflated past
// limit.
func bombError(limit, size int64) error {
	return fmt.Errorf("%w: more than %d bytes from %d compressed (a decompression bomb?)", ErrTooLarge, limit, size)
}

// seekableBuilder is the one pass over a compressed stream: its Read gives
// the decompressed bytes in order, and Index the entry points once Read
// has returned io.EOF.
type seekableBuilder interface {
	io.Reader
	Index() (Seekable, error)
	Close()
}

type gzBuilder struct{ *gz.Builder }

func (b gzBuilder) Index() (Seekable, error) { return b.Builder.Index() }

type zstBuilder struct{ *zst.Builder }

func (b zstBuilder) Index() (Seekable, error) { return b.Builder.Index() }

// newSeekableBuilder starts the pass for comp.
func newSeekableBuilder(blob io.ReaderAt, size int64, comp Compression, limit int64, progress func(in, out int64)) (seekableBuilder, error) {
	switch comp {
	case CompressionGzip:
		opts := []gz.Option{gz.Limit(limit)}
		if progress != nil {
			opts = append(opts, gz.Progress(progress))
		}
		return gzBuilder{gz.NewBuilder(blob, size, gz.DefaultEvery, opts...)}, nil
	case CompressionZstd:
		opts := []zst.Option{zst.Limit(limit)}
		if progress != nil {
			opts = append(opts, zst.Progress(progress))
		}
		return zstBuilder{zst.NewBuilder(blob, size, opts...)}, nil
	default:
		return nil, fmt.Errorf("%s streams cannot be read in place", comp)
	}
}

// ErrNotSeekable: a zstd stream of one frame (or of frames too big to
// decode per read) cannot be served in place; it needs a decompressed copy.
var ErrNotSeekable = errors.New("cannot be entered mid-way: one zstd frame, or frames too big")

// CanSeek tells whether IndexCompressed can serve blob[0:size), compressed
// with comp, in place: any gzip stream (checkpoints go anywhere), a zstd
// stream if it is small or has several frames (found by walking their
// headers); IndexCompressed still refuses one whose frames turn out too
// big (ErrNotSeekable).
func CanSeek(blob io.ReaderAt, size int64, comp Compression) bool {
	switch comp {
	case CompressionGzip:
		return true
	case CompressionZstd:
		if size <= zst.DefaultMaxFrame/4 {
			return true // small: even one frame makes a span of a few MiB
		}
		n, err := zst.CountFrames(blob, size)
		// A stream too damaged to walk is left to the decoder to report.
		return err != nil || n > 1
	}
	return false
}

func (c *Cache) buildCompressed(blob io.ReaderAt, size int64, comp Compression, want digest.Digest, opts CompressedOptions) (*Index, Seekable, error) {
	limit := c.inflateLimit(size)
	b, err := newSeekableBuilder(blob, size, comp, limit, opts.Progress)
	if err != nil {
		return nil, nil, err
	}
	defer b.Close()
	// The parser takes the decoder's output where it lies (gzip) or
	// as read (zstd), and skips member data without copying it.
	var src chunks
	if g, ok := b.(gzBuilder); ok {
		src = nextChunks{g.Builder}
	} else {
		src = &readerChunks{r: b, buf: make([]byte, 256<<10)}
	}
	var h *asyncHash
	if want != "" {
		if err := want.Validate(); err != nil {
			return nil, nil, err
		}
		h = newAsyncHash(want.Algorithm().Hash())
		defer h.stop()
		src = hashChunks{src, h}
	}
	ix, usize, err := indexChunks(src, opts.MaxEntries)
	if isLimit(err) {
		return nil, nil, bombError(limit, size)
	}
	if err != nil {
		return nil, nil, err
	}
	seek, err := b.Index()
	if err != nil {
		return nil, nil, err
	}
	if z, ok := seek.(*zst.Index); ok && z.MaxFrame() > zst.DefaultMaxFrame {
		return nil, nil, fmt.Errorf("%w (a frame of %d bytes)", ErrNotSeekable, z.MaxFrame())
	}
	if want != "" {
		if got := digest.NewDigestFromBytes(want.Algorithm(), h.sum()); got != want {
			return nil, nil, fmt.Errorf("%w: decompressed to %s, want %s", ErrDigestMismatch, got, want)
		}
	}
	if ix == nil {
		// Not indexable in one forward pass: index the checked stream
		// again, scanning it through its new entry points.
		rd, done := ForScan(NewCompressed("", seek, blob, NewSpans(16<<20)))
		ix, err = BuildMax(rd, 0, usize, opts.MaxEntries)
		done()
		if err != nil {
			return nil, nil, err
		}
	}
	return ix, seek, nil
}

// seekExt names the saved checkpoints of a comp stream (List tells them by
// it).
func seekExt(comp Compression) string {
	if comp == CompressionZstd {
		return ".zsi"
	}
	return ".gzi"
}

// The saved checkpoints: index/<sha256("compressed:"+key)>.gzi (or .zsi) beside the
// tar index (<same>.idx, the format of saved.go, fingerprinted by the
// compressed blob), laid out as
//
//	magic "IMGSEEK1" | kind (1 byte) | fingerprint (32) | compressed size (8)
//	| decompressed size (8) | length of the encoded index (8) | encoded index
//	| CRC-32C of everything before (4)
const seekMagic = "IMGSEEK1"

var errBadSeek = errors.New("saved checkpoints are invalid")

func saveCompressed(base string, ix *Index, seek Seekable, comp Compression, csize int64, fp [32]byte) error {
	m, ok := seek.(interface{ MarshalBinary() ([]byte, error) })
	if !ok {
		return fmt.Errorf("%s checkpoints cannot be saved", comp)
	}
	enc, err := m.MarshalBinary()
	if err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString(seekMagic)
	b.WriteByte(byte(comp))
	b.Write(fp[:])
	var n [8]byte
	for _, v := range []int64{csize, seek.Size(), int64(len(enc))} {
		binary.LittleEndian.PutUint64(n[:], uint64(v))
		b.Write(n[:])
	}
	b.Write(enc)
	binary.LittleEndian.PutUint32(n[:4], crc32.Checksum(b.Bytes(), crcTable))
	b.Write(n[:4])
	if err := saveIndex(base+".idx", ix, 0, seek.Size(), fp); err != nil {
		return err
	}
	// The checkpoints go last: they only exist beside their tar index.
	return writeAtomic(base+seekExt(comp), func(f *os.File) error {
		_, err := f.Write(b.Bytes())
		return err
	}, false)
}

// maxSavedSeek bounds a saved checkpoints file: gzip's take about 6 KiB per
// 2 MiB of data, so this is far beyond any real layer.
const maxSavedSeek = 1 << 30

func loadCompressed(base string, comp Compression, csize int64, fp [32]byte) (*Index, Seekable, error) {
	f, err := os.Open(base + seekExt(comp))
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	const head = len(seekMagic) + 1 + 32 + 3*8
	if fi.Size() < int64(head+4) || fi.Size() > maxSavedSeek {
		return nil, nil, fmt.Errorf("%w: %d bytes", errBadSeek, fi.Size())
	}
	b := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, nil, err
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, nil, fmt.Errorf("%w: checksum", errBadSeek)
	}
	if string(body[:len(seekMagic)]) != seekMagic || Compression(body[len(seekMagic)]) != comp {
		return nil, nil, fmt.Errorf("%w: not %s checkpoints of this format", errBadSeek, comp)
	}
	var gotFP [32]byte
	copy(gotFP[:], body[len(seekMagic)+1:])
	nums := body[len(seekMagic)+1+32:]
	gotC := int64(binary.LittleEndian.Uint64(nums))
	usize := int64(binary.LittleEndian.Uint64(nums[8:]))
	encLen := binary.LittleEndian.Uint64(nums[16:])
	if gotFP != fp || gotC != csize {
		return nil, nil, fmt.Errorf("%w: saved for other bytes (stale)", errBadSeek)
	}
	if encLen != uint64(len(body)-head) {
		return nil, nil, fmt.Errorf("%w: length", errBadSeek)
	}
	seek, err := unmarshalSeekable(comp, body[head:])
	if err != nil {
		return nil, nil, err
	}
	if seek.Size() != usize {
		return nil, nil, fmt.Errorf("%w: size", errBadSeek)
	}
	ix, err := loadIndex(base+".idx", 0, usize, fp)
	if err != nil {
		return nil, nil, err
	}
	return ix, seek, nil
}

func unmarshalSeekable(comp Compression, b []byte) (Seekable, error) {
	switch comp {
	case CompressionGzip:
		ix := &gz.Index{}
		if err := ix.UnmarshalBinary(b); err != nil {
			return nil, err
		}
		return ix, nil
	case CompressionZstd:
		ix := &zst.Index{}
		if err := ix.UnmarshalBinary(b); err != nil {
			return nil, err
		}
		return ix, nil
	default:
		return nil, fmt.Errorf("%w: %s", errBadSeek, comp)
	}
}
