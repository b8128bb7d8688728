package tarindex

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

// bigTar is a tar of many small files and a few files of several MiB of
// random bytes (incompressible, so that they span many checkpoints).
func bigTar(t testing.TB) []byte {
	var ms []member
	for i := range 400 {
		ms = append(ms, file(fmt.Sprintf("etc/small%03d", i), strings.Repeat(fmt.Sprint(i), 1+i*7)))
		if i%100 == 50 {
			b := make([]byte, 3<<20+i)
			_, _ = rand.Read(b)
			ms = append(ms, file(fmt.Sprintf("big/%d.bin", i), string(b)))
		}
	}
	return makeTar(t, tar.FormatPAX, ms...)
}

// multiMember gzips b as several concatenated members (as pigz -i and
// appended streams are).
func multiMember(t testing.TB, b []byte, parts int) []byte {
	var out bytes.Buffer
	step := len(b)/parts + 1
	for off := 0; off < len(b); off += step {
		out.Write(gzipped(t, b[off:min(off+step, len(b))]))
	}
	return out.Bytes()
}

// requireSameContent checks that every entry of got reads, through rd,
// what the same entry of the uncompressed tar holds.
func requireSameContent(t *testing.T, raw []byte, got *Index, rd io.ReaderAt) {
	t.Helper()
	want := build(t, raw)
	require.Equal(t, len(want.Entries), len(got.Entries))
	for i := range want.Entries {
		w, g := want.Entries[i], got.Entries[i]
		require.Equal(t, w, g, "entry %d", i)
		if w.Type != TypeReg {
			continue
		}
		wb := make([]byte, w.Size)
		_, err := w.ReadAt(raw, wb, 0)
		if w.Size > 0 {
			require.NoError(t, err)
		}
		gb := make([]byte, g.Size)
		n, err := g.ReadFrom(rd, gb, 0)
		if g.Size > 0 {
			require.NoError(t, err, g.Name)
		}
		require.Equal(t, int(g.Size), n)
		require.True(t, bytes.Equal(wb, gb), "content of %s", g.Name)
	}
}

func TestIndexCompressedMatchesUncompressed(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  []byte
		gz   func(testing.TB, []byte) []byte
	}{
		{"one member", nil, gzipped},
		{"members", nil, func(t testing.TB, b []byte) []byte { return multiMember(t, b, 7) }},
		{"sparse members (second pass)", richTar(t, 30), gzipped},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.raw
			if raw == nil {
				raw = bigTar(t)
			}
			blob := tc.gz(t, raw)
			c := &Cache{Dir: t.TempDir()}
			ix, seek, err := c.IndexCompressed("k", bytes.NewReader(blob), int64(len(blob)), CompressionGzip, digest.FromBytes(raw), CompressedOptions{})
			require.NoError(t, err)
			require.Equal(t, int64(len(raw)), seek.Size())
			spans := NewSpans(5 << 20)
			requireSameContent(t, raw, ix, NewCompressed("layer", seek, bytes.NewReader(blob), spans))
			require.LessOrEqual(t, spans.Used(), int64(5<<20)+4<<20)

			// Saved: the second call loads, and serves the same.
			ix2, seek2, err := c.IndexCompressed("k", bytes.NewReader(blob), int64(len(blob)), CompressionGzip, digest.FromBytes(raw), CompressedOptions{})
			require.NoError(t, err)
			requireSameContent(t, raw, ix2, NewCompressed("layer", seek2, bytes.NewReader(blob), NewSpans(0)))
		})
	}
}

func TestIndexCompressedReadsAcrossSpanEdges(t *testing.T) {
	raw := bigTar(t)
	blob := gzipped(t, raw)
	c := &Cache{}
	_, seek, err := c.IndexCompressed("k", bytes.NewReader(blob), int64(len(blob)), CompressionGzip, "", CompressedOptions{})
	require.NoError(t, err)
	rd := NewCompressed("layer", seek, bytes.NewReader(blob), NewSpans(3<<20))
	var edges []int64
	for off := int64(0); off < seek.Size(); {
		_, end, ok := seek.Span(off)
		require.True(t, ok)
		edges = append(edges, end)
		off = end
	}
	require.Greater(t, len(edges), 3, "the test needs several spans")
	for _, e := range edges {
		for _, d := range []int64{-4097, -1, 0, 1} {
			off := max(e+d, 0)
			p := make([]byte, 8192)
			n, err := rd.ReadAt(p, off)
			want := raw[min(off, int64(len(raw))):min(off+8192, int64(len(raw)))]
			require.Equal(t, len(want), n)
			if n < len(p) {
				require.ErrorIs(t, err, io.EOF)
			} else {
				require.NoError(t, err)
			}
			require.True(t, bytes.Equal(want, p[:n]), "at %d", off)
		}
	}
}

func TestIndexCompressedDigestMismatch(t *testing.T) {
	raw := bigTar(t)
	blob := gzipped(t, raw)
	c := &Cache{Dir: t.TempDir()}
	_, _, err := c.IndexCompressed("k", bytes.NewReader(blob), int64(len(blob)), CompressionGzip, digest.FromString("other"), CompressedOptions{})
	require.ErrorIs(t, err, ErrDigestMismatch)
	// Nothing saved: the next call checks again.
	_, _, err = c.IndexCompressed("k", bytes.NewReader(blob), int64(len(blob)), CompressionGzip, digest.FromString("other"), CompressedOptions{})
	require.ErrorIs(t, err, ErrDigestMismatch)
}

func TestIndexCompressedBomb(t *testing.T) {
	raw := makeTar(t, tar.FormatPAX, file("zeros", strings.Repeat("\x00", 8<<20)))
	blob := gzipped(t, raw)
	dir := t.TempDir()
	c := &Cache{Dir: dir, MaxRatio: 10, MinLimit: 1 << 20}
	_, _, err := c.IndexCompressed("k", bytes.NewReader(blob), int64(len(blob)), CompressionGzip, "", CompressedOptions{})
	require.ErrorIs(t, err, ErrTooLarge)
	require.Contains(t, err.Error(), "decompression bomb")
	var total int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, _ error) error {
		if fi != nil && !fi.IsDir() {
			total += fi.Size()
		}
		return nil
	})
	require.Zero(t, total, "a refused bomb writes nothing")
}

func TestIndexCompressedStaleAndCorruptSaved(t *testing.T) {
	raw := bigTar(t)
	blob := gzipped(t, raw)
	dir := t.TempDir()
	var warned []error
	c := &Cache{Dir: dir, Warn: func(err error) { warned = append(warned, err) }}
	_, _, err := c.IndexCompressed("k", bytes.NewReader(blob), int64(len(blob)), CompressionGzip, "", CompressedOptions{})
	require.NoError(t, err)
	seeks, _ := filepath.Glob(filepath.Join(dir, "index", "*.gzi"))
	require.Len(t, seeks, 1)
	b, err := os.ReadFile(seeks[0])
	require.NoError(t, err)
	b[len(b)/2] ^= 0xff
	require.NoError(t, os.WriteFile(seeks[0], b, 0o644))
	ix, seek, err := c.IndexCompressed("k", bytes.NewReader(blob), int64(len(blob)), CompressionGzip, "", CompressedOptions{})
	require.NoError(t, err)
	require.Len(t, warned, 1)
	require.ErrorIs(t, warned[0], errBadSeek)
	requireSameContent(t, raw, ix, NewCompressed("layer", seek, bytes.NewReader(blob), NewSpans(0)))

	// Other bytes under the same key: stale, rebuilt.
	raw2 := makeTar(t, tar.FormatPAX, file("other", "content"))
	blob2 := gzipped(t, raw2)
	ix, seek, err = c.IndexCompressed("k", bytes.NewReader(blob2), int64(len(blob2)), CompressionGzip, "", CompressedOptions{})
	require.NoError(t, err)
	require.Len(t, warned, 2)
	requireSameContent(t, raw2, ix, NewCompressed("layer", seek, bytes.NewReader(blob2), NewSpans(0)))
}

func TestIndexCompressedCorruptStream(t *testing.T) {
	raw := bigTar(t)
	blob := gzipped(t, raw)
	for _, bad := range [][]byte{blob[:len(blob)/2], flip(append([]byte(nil), blob...), len(blob)/3)} {
		c := &Cache{Dir: t.TempDir()}
		_, _, err := c.IndexCompressed("k", bytes.NewReader(bad), int64(len(bad)), CompressionGzip, "", CompressedOptions{})
		require.Error(t, err)
	}
}

// A span that fails to decode at read time (the tarball was truncated or
// rewritten under the mount) is an error naming the layer and offset;
// the other spans still read.
func TestCompressedCorruptSpanAtReadTime(t *testing.T) {
	raw := bigTar(t)
	blob := gzipped(t, raw)
	_, seek, err := (&Cache{}).IndexCompressed("k", bytes.NewReader(blob), int64(len(blob)), CompressionGzip, "", CompressedOptions{})
	require.NoError(t, err)
	bad := blob[:len(blob)/2]
	rd := NewCompressed("img.tar: layer 2", seek, bytes.NewReader(bad), NewSpans(0))
	var failed, good int
	p := make([]byte, 4096)
	for off := int64(0); off < seek.Size(); off += 1 << 20 {
		if _, err := rd.ReadAt(p, off); err != nil && !errors.Is(err, io.EOF) {
			require.Contains(t, err.Error(), "img.tar: layer 2: decompressed bytes")
			failed++
		} else {
			good++
		}
	}
	require.Positive(t, failed)
	require.Positive(t, good)
}

func TestSpansConcurrentAndBounded(t *testing.T) {
	raw := bigTar(t)
	blob := gzipped(t, raw)
	_, seek, err := (&Cache{}).IndexCompressed("k", bytes.NewReader(blob), int64(len(blob)), CompressionGzip, "", CompressedOptions{})
	require.NoError(t, err)
	spans := NewSpans(4 << 20)
	rd := NewCompressed("layer", seek, bytes.NewReader(blob), spans)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 10000)
			for i := range 200 {
				off := int64((g*7919 + i*104729) % (len(raw) - len(p)))
				_, err := rd.ReadAt(p, off)
				if err != nil || !bytes.Equal(p, raw[off:off+int64(len(p))]) {
					t.Errorf("read at %d: %v", off, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// One span may exceed the budget while decoding; at rest it fits.
	require.LessOrEqual(t, spans.Used(), int64(4<<20)+int64(gzSpanMax))
}

// gzSpanMax bounds a gzip span: the checkpoint spacing plus one block.
const gzSpanMax = 3 << 20

func TestIndexStreamFallsBackWithoutEndMarker(t *testing.T) {
	raw := makeTar(t, tar.FormatPAX, file("a", "hello"))
	raw = raw[:len(raw)-512] // one zero block: tar accepts it
	ix, size, err := IndexStream(bytes.NewReader(raw), 0)
	require.NoError(t, err)
	require.Nil(t, ix)
	require.Equal(t, int64(len(raw)), size)
}

func TestIndexStreamReadsEverything(t *testing.T) {
	raw := append(bigTar(t), make([]byte, 10240)...) // padding after the marker
	var seen bytes.Buffer
	ix, size, err := IndexStream(io.TeeReader(bytes.NewReader(raw), &seen), 0)
	require.NoError(t, err)
	require.NotNil(t, ix)
	require.Equal(t, int64(len(raw)), size)
	require.True(t, bytes.Equal(raw, seen.Bytes()))
	require.Equal(t, build(t, raw).Entries, ix.Entries)
}

// zstdFrames compresses b as one zstd frame per step bytes, as zstd:chunked
// and pzstd do.
func zstdFrames(t testing.TB, b []byte, step int) []byte {
	var out []byte
	for off := 0; off < len(b); off += step {
		out = append(out, zstded(t, b[off:min(off+step, len(b))])...)
	}
	return out
}

func TestIndexCompressedZstdFrames(t *testing.T) {
	raw := bigTar(t)
	blob := zstdFrames(t, raw, 1<<20)
	require.True(t, CanSeek(bytes.NewReader(blob), int64(len(blob)), CompressionZstd))
	c := &Cache{Dir: t.TempDir()}
	ix, seek, err := c.IndexCompressed("k", bytes.NewReader(blob), int64(len(blob)), CompressionZstd, digest.FromBytes(raw), CompressedOptions{})
	require.NoError(t, err)
	requireSameContent(t, raw, ix, NewCompressed("layer", seek, bytes.NewReader(blob), NewSpans(0)))
	saved, _ := filepath.Glob(filepath.Join(c.Dir, "index", "*.zsi"))
	require.Len(t, saved, 1)
	ix, seek, err = c.IndexCompressed("k", bytes.NewReader(blob), int64(len(blob)), CompressionZstd, digest.FromBytes(raw), CompressedOptions{})
	require.NoError(t, err)
	requireSameContent(t, raw, ix, NewCompressed("layer", seek, bytes.NewReader(blob), NewSpans(0)))

	// One frame: not entered mid-way, so left to a decompressed copy.
	one := zstded(t, raw)
	require.False(t, CanSeek(bytes.NewReader(one), int64(len(one)), CompressionZstd))
	// Two frames, one huge: found out after the pass.
	big := append(zstded(t, raw), zstded(t, []byte("x"))...)
	_, _, err = c.IndexCompressed("k2", bytes.NewReader(big), int64(len(big)), CompressionZstd, "", CompressedOptions{})
	if int64(len(raw)) > 16<<20 {
		require.ErrorIs(t, err, ErrNotSeekable)
	}
}

// giantBlockGzip is a gzip stream of prefix followed by zeros zero bytes
// in one DEFLATE block (fixed Huffman codes: the prefix as literals, then
// matches of length 258 at distance 1), as a hostile encoder can write it:
// one checkpoint, so one span of everything.
func giantBlockGzip(t testing.TB, prefix []byte, zeros int64) []byte {
	var out []byte
	var acc uint64
	var nbits uint
	put := func(v uint64, n uint) { // LSB first
		acc |= v << nbits
		nbits += n
		for nbits >= 8 {
			out = append(out, byte(acc))
			acc >>= 8
			nbits -= 8
		}
	}
	putCode := func(code uint64, n uint) { // Huffman codes go MSB first
		var r uint64
		for i := uint(0); i < n; i++ {
			r = r<<1 | (code>>i)&1
		}
		put(r, n)
	}
	literal := func(b byte) {
		if b < 144 {
			putCode(0x30+uint64(b), 8)
		} else {
			putCode(0x190+uint64(b-144), 9)
		}
	}
	out = append(out, 0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff)
	put(1, 1) // BFINAL
	put(1, 2) // fixed Huffman
	for _, b := range prefix {
		literal(b)
	}
	left := zeros
	if left > 0 {
		literal(0)
		left--
	}
	for left >= 258 {
		putCode(0xc5, 8) // length code 285: 258
		put(0, 5)        // distance code 0: 1
		left -= 258
	}
	for ; left > 0; left-- {
		literal(0)
	}
	putCode(0, 7) // end of block
	if nbits > 0 {
		put(0, 8-nbits)
	}
	h := crc32.NewIEEE()
	h.Write(prefix)
	zero := make([]byte, 1<<20)
	for n := zeros; n > 0; n -= int64(len(zero)) {
		h.Write(zero[:min(n, int64(len(zero)))])
	}
	out = binary.LittleEndian.AppendUint32(out, h.Sum32())
	return binary.LittleEndian.AppendUint32(out, uint32(int64(len(prefix))+zeros))
}

// A span bigger than maxSpanBuffer is never decoded whole into memory:
// reads in it decode up to what they want.
func TestCompressedGiantSpan(t *testing.T) {
	const size = 96 << 20
	var hb bytes.Buffer
	require.NoError(t, tar.NewWriter(&hb).WriteHeader(&tar.Header{Name: "zeros", Typeflag: tar.TypeReg, Mode: 0o644, Size: size, Format: tar.FormatUSTAR}))
	hdr := hb.Bytes() // the header block; the zeros follow, then the end marker, zeros too
	blob := giantBlockGzip(t, hdr, size+1024)
	ix, seek, err := (&Cache{}).IndexCompressed("k", bytes.NewReader(blob), int64(len(blob)), CompressionGzip, "", CompressedOptions{})
	require.NoError(t, err)
	require.Len(t, ix.Entries, 1)
	start, end, _ := seek.Span(0)
	require.Greater(t, end-start, int64(maxSpanBuffer), "one span of everything")
	spans := NewSpans(0)
	rd := NewCompressed("layer", seek, bytes.NewReader(blob), spans)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	p := make([]byte, 4096)
	for _, off := range []int64{512, 50 << 20, size} {
		n, err := ix.Entries[0].ReadFrom(rd, p, off-512)
		if off == size {
			require.Equal(t, 512, n)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, len(p), n)
		require.Equal(t, make([]byte, len(p)), p)
	}
	runtime.ReadMemStats(&after)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(16<<20), "reads in a giant span allocate little")
	require.Zero(t, spans.Used())
}
