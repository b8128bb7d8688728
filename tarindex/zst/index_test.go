package zst

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
)

type stream struct {
	name   string
	src    []byte
	data   []byte
	frames int   // data frames, -1: do not check
	max    int64 // largest frame, -1: do not check
}

func streams(t testing.TB) []stream {
	text := textData(3<<20+12345, 1)
	rnd := randomData(700<<10, 2)
	var ss []stream
	add := func(name string, src, data []byte, frames int, max int64) {
		ss = append(ss, stream{name, src, data, frames, max})
	}
	add("1MiB frames", frames(t, text, 1<<20), text, 4, 1<<20)
	add("100KiB frames", frames(t, text, 100<<10), text, (len(text)+100<<10-1)/(100<<10), 100<<10)
	add("mixed frames", frames(t, text, 1, 1000, 70<<10, 3, 300<<10, 5<<10), text, -1, 300<<10)
	add("tiny frames", frames(t, text[:200<<10], 100), text[:200<<10], 2048, 100)
	add("random frames", frames(t, rnd, 200<<10), rnd, 4, 200<<10)
	add("one frame", encodeAll(t, text), text, 1, int64(len(text)))
	add("one streamed frame", encodeStream(t, text, 70000), text, 1, int64(len(text)))
	add("streamed, concurrency 4", encodeStream(t, text, 1<<20, zstd.WithEncoderConcurrency(4)), text, 1, int64(len(text)))
	add("no checksums", frames(t, text[:1<<20], 300<<10), text[:1<<20], 4, 300<<10)
	{
		var src []byte
		for i := 0; i < 4; i++ {
			src = append(src, encodeAll(t, text[i<<18:(i+1)<<18], zstd.WithEncoderCRC(false), zstd.WithEncoderLevel(zstd.SpeedBestCompression))...)
		}
		add("no crc, best", src, text[:1<<20], 4, 1<<18)
	}
	{
		// Skippable frames everywhere, empty frames, streamed frames
		// (no size declared), raw frames.
		var src, data []byte
		src = append(src, skippable(0, []byte("first"))...)
		for i := 0; i < 6; i++ {
			piece := text[i*150000 : (i+1)*150000]
			switch i % 3 {
			case 0:
				src = append(src, encodeAll(t, piece)...)
			case 1:
				src = append(src, encodeStream(t, piece, 4096)...)
			case 2:
				src = append(src, rawFrame(piece, int64(len(piece)))...)
			}
			data = append(data, piece...)
			src = append(src, skippable(byte(i), bytes.Repeat([]byte{byte(i)}, i*100))...)
			src = append(src, encodeAll(t, nil, zstd.WithZeroFrames(true))...)
			src = append(src, rawFrame(nil, unknownSize)...)
		}
		src = append(src, skippable(15, nil)...)
		add("skippable and empty frames", src, data, 6*3, 150000)
	}
	{
		// Seekable format: frames, then the seek table in a skippable frame.
		src := frames(t, text[:1<<20], 64<<10)
		src = append(src, skippable(0xe, make([]byte, 16*8+9))...)
		add("seekable", src, text[:1<<20], 16, 64<<10)
	}
	add("raw frames without size", append(rawFrame(text[:300000], unknownSize), rawFrame(text[300000:400000], unknownSize)...), text[:400000], 2, 300000)
	add("empty", nil, nil, 0, 0)
	add("only empty frames", append(encodeAll(t, nil, zstd.WithZeroFrames(true)), skippable(1, []byte("x"))...), nil, 1, 0)
	return ss
}

func TestRoundTrip(t *testing.T) {
	for _, s := range streams(t) {
		t.Run(s.name, func(t *testing.T) {
			if want, err := decodeAll(s.src, 1<<40); err != nil || !bytes.Equal(want, s.data) {
				t.Fatalf("test stream does not decode as meant: %v", err)
			}
			ix, out := build(t, s.src)
			if !bytes.Equal(out, s.data) {
				t.Fatalf("output differs: %d bytes, want %d", len(out), len(s.data))
			}
			checkIndex(t, ix, s)
			data, err := ix.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var ix2 Index
			if err := ix2.UnmarshalBinary(data); err != nil {
				t.Fatal(err)
			}
			checkIndex(t, &ix2, s)
			t.Logf("%d bytes in %d frames, %d seek points, index of %d bytes", ix.Size(), ix.Frames(), ix.SeekPoints(), len(data))
		})
	}
}

// checkIndex checks ix's numbers and reads against s.
func checkIndex(t *testing.T, ix *Index, s stream) {
	t.Helper()
	if ix.Size() != int64(len(s.data)) || ix.CompressedSize() != int64(len(s.src)) {
		t.Fatalf("sizes %d, %d; want %d, %d", ix.Size(), ix.CompressedSize(), len(s.data), len(s.src))
	}
	if s.frames >= 0 && ix.Frames() != s.frames {
		t.Errorf("%d frames, want %d", ix.Frames(), s.frames)
	}
	if s.max >= 0 && ix.MaxFrame() != s.max {
		t.Errorf("largest frame %d, want %d", ix.MaxFrame(), s.max)
	}
	src := bytes.NewReader(s.src)
	// Every seek point, and the offsets around it.
	var edges []int64
	for off := int64(0); off < ix.Size(); {
		start, end, ok := ix.Span(off)
		if !ok || start != off || end <= start || end-start > max(minSpan, ix.MaxFrame()) {
			t.Fatalf("Span(%d) = %d, %d, %v", off, start, end, ok)
		}
		if s2, e2, _ := ix.Span(end - 1); s2 != start || e2 != end {
			t.Fatalf("Span(%d) = %d, %d; Span(%d) = %d, %d", off, start, end, end-1, s2, e2)
		}
		edges = append(edges, off)
		off = end
	}
	if len(edges) != ix.SeekPoints() {
		t.Fatalf("%d spans, %d seek points", len(edges), ix.SeekPoints())
	}
	for _, off := range []int64{-1, ix.Size(), ix.Size() + 1} {
		if _, _, ok := ix.Span(off); ok {
			t.Fatalf("Span(%d) ok", off)
		}
	}
	read := func(off int64, n int) {
		t.Helper()
		p := make([]byte, n)
		got, err := ix.ReadAt(src, p, off)
		want := s.data[min(off, int64(len(s.data))):min(off+int64(n), int64(len(s.data)))]
		if got != len(want) || !bytes.Equal(p[:got], want) {
			t.Fatalf("ReadAt(%d bytes at %d) = %d, %v: wrong bytes", n, off, got, err)
		}
		if (got < n) != (err == io.EOF) || (got == n && err != nil) {
			t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", n, off, got, err)
		}
	}
	r := rand.New(rand.NewPCG(uint64(len(s.src)), 3))
	for i, e := range edges {
		if len(edges) > 200 && r.IntN(len(edges)/100) != 0 && i != len(edges)-1 {
			continue
		}
		for _, d := range []int64{-2, -1, 0, 1} {
			if e+d >= 0 {
				read(e+d, 1)
				read(e+d, 4)
			}
		}
		read(e, 100<<10)
	}
	for range 50 {
		off := r.Int64N(ix.Size() + 10)
		read(off, r.IntN(8<<10)+1)
	}
	read(0, len(s.data)+5)
	if n, err := ix.ReadAt(src, nil, 0); n != 0 || err != nil {
		t.Fatalf("empty read: %d, %v", n, err)
	}
	if _, err := ix.ReadAt(src, make([]byte, 1), -1); err == nil {
		t.Fatal("negative offset read")
	}
	// The same through a Builder read in odd pieces.
	b := NewBuilder(src, int64(len(s.src)))
	defer b.Close()
	out, err := io.ReadAll(io.LimitReader(onlyReader{b}, 1<<40))
	if err != nil || !bytes.Equal(out, s.data) {
		t.Fatalf("Builder.Read: %d bytes, %v", len(out), err)
	}
	ix3, err := b.Index()
	if err != nil || ix3.Size() != ix.Size() || ix3.SeekPoints() != ix.SeekPoints() {
		t.Fatalf("Builder.Index: %v", err)
	}
}

// onlyReader hides everything but Read, in 1000-byte pieces.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p[:min(len(p), 1000)]) }

func TestSeekPointsBounded(t *testing.T) {
	// 4-byte frames: without grouping, an index bigger than the stream.
	data := textData(64<<10, 4)
	src := frames(t, data, 4)
	ix, _ := build(t, src)
	if ix.Frames() != 1<<14 {
		t.Fatalf("%d frames", ix.Frames())
	}
	if max := 2*ix.Size()/minSpan + 1; int64(ix.SeekPoints()) > max {
		t.Fatalf("%d seek points, more than %d", ix.SeekPoints(), max)
	}
	enc, _ := ix.MarshalBinary()
	if len(enc) > 200 {
		t.Fatalf("index of %d bytes", len(enc))
	}
	checkIndex(t, ix, stream{src: src, data: data, frames: -1, max: 4})
}

func TestErrors(t *testing.T) {
	text := textData(300<<10, 5)
	good := frames(t, text, 100<<10) // 3 frames, with checksums
	f0 := len(encodeAll(t, text[:100<<10]))
	cases := []struct {
		name string
		src  []byte
		want string
	}{
		{"garbage", []byte("this is not zstd at all"), "compressed offset 0: not a zstd frame"},
		{"trailing garbage", append(bytes.Clone(good), "junk"...), fmt.Sprintf("compressed offset %d: not a zstd frame", len(good))},
		{"trailing zeros", append(bytes.Clone(good), 0, 0), fmt.Sprintf("compressed offset %d: truncated frame magic", len(good))},
		{"truncated skippable", append(bytes.Clone(good), skippable(0, []byte("abc"))[:10]...), "skippable frame of 3 bytes past the end"},
		{"checksum", flip(good, f0-1), "zstd frame 0 at compressed offset 0 (decompressed offset 0): "},
		{"checksum of the second", flip(good, 2*f0-1), fmt.Sprintf("zstd frame 1 at compressed offset %d (decompressed offset %d): ", f0, 100<<10)},
		{"reserved bit", orByte(good, f0+4, 0x08), fmt.Sprintf("compressed offset %d: reserved bit", f0+4)},
		{"size lies", rawFrame([]byte("hello"), 6), "zstd frame 0 at compressed offset 0"},
		{"size lies, longer", rawFrame([]byte("hello"), 4), "zstd frame 0 at compressed offset 0"},
		{"big window", append([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, (28 - 10) << 3}, 1, 0, 0), "window larger than 128 MiB"},
		{"big single segment", append([]byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0, 0, 0, 0, 0x10, 0, 0, 0, 0}, 1, 0, 0), "zstd frame 0 at compressed offset 0 (decompressed offset 0): window larger than 128 MiB"},
		{"dictionary", []byte{0x28, 0xb5, 0x2f, 0xfd, 0x01, 0x58, 0x07, 1, 0, 0}, "zstd frame 0 at compressed offset 0"},
		{"reserved block type", append([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58}, 7, 0, 0), "compressed offset 6: reserved block type"},
		{"block too big", append([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58}, 1, 0, 0x20), "block of 262144 bytes"},
	}
	for i := 1; i < len(good); i += 997 {
		cases = append(cases, struct {
			name string
			src  []byte
			want string
		}{fmt.Sprintf("truncated at %d", i), good[:i], "zstd"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Build(bytes.NewReader(c.src), int64(len(c.src)), func([]byte) error { return nil })
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one with %q", err, c.want)
			}
			if _, rerr := decodeAll(c.src, 1<<40); rerr == nil {
				t.Fatalf("the reference decoder accepts it (we say %v)", err)
			}
		})
	}
	// An error from visit stops Build.
	stop := errors.New("stop")
	if _, err := Build(bytes.NewReader(good), int64(len(good)), func([]byte) error { return stop }); err != stop {
		t.Fatalf("visit's error: %v", err)
	}
	// Index before the end.
	b := NewBuilder(bytes.NewReader(good), int64(len(good)))
	if _, err := b.Index(); err == nil {
		t.Fatal("Index before the end")
	}
	b.Close()
	if _, err := b.Read(make([]byte, 10)); err == nil {
		t.Fatal("Read after Close")
	}
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x55
	return b
}

func orByte(b []byte, i int, v byte) []byte {
	b = bytes.Clone(b)
	b[i] |= v
	return b
}

func TestLimit(t *testing.T) {
	text := textData(1<<20, 6)
	src := frames(t, text, 100<<10)
	for _, limit := range []int64{1, 100 << 10, 1<<20 - 1} {
		_, err := Build(bytes.NewReader(src), int64(len(src)), func([]byte) error { return nil }, Limit(limit))
		if !errors.Is(err, ErrLimit) {
			t.Fatalf("limit %d: %v", limit, err)
		}
	}
	build(t, src, Limit(1<<20))
	// A bomb: 4-byte RLE blocks of 128 KiB.
	bomb := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58}
	for i := 0; i < 10000; i++ {
		h := uint32(maxBlockSize)<<3 | 1<<1
		bomb = append(bomb, byte(h), byte(h>>8), byte(h>>16), 'x')
	}
	bomb = append(bomb, 1, 0, 0) // last, empty raw
	_, err := Build(bytes.NewReader(bomb), int64(len(bomb)), func([]byte) error { return nil }, Limit(64<<20))
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("bomb: %v", err)
	}
}

func TestProgress(t *testing.T) {
	text := textData(5<<20, 7)
	src := frames(t, text, 1<<20)
	var calls [][2]int64
	build(t, src, Progress(func(in, out int64) { calls = append(calls, [2]int64{in, out}) }))
	if len(calls) < 3 {
		t.Fatalf("%d calls", len(calls))
	}
	for i := 1; i < len(calls); i++ {
		if calls[i][0] < calls[i-1][0] || calls[i][1] < calls[i-1][1] {
			t.Fatalf("progress goes back: %v", calls)
		}
	}
	if last := calls[len(calls)-1]; last != [2]int64{int64(len(src)), int64(len(text))} {
		t.Fatalf("last call %v, want %d, %d", last, len(src), len(text))
	}
}

func TestReadAtConcurrent(t *testing.T) {
	text := textData(4<<20, 8)
	src := frames(t, text, 256<<10, 10<<10)
	ix, _ := build(t, src)
	ra := ix.ReaderAt(bytes.NewReader(src))
	if ra.Size() != int64(len(text)) {
		t.Fatal("size")
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 9))
			p := make([]byte, 20<<10)
			for range 100 {
				off := r.Int64N(int64(len(text)))
				n := r.IntN(len(p)) + 1
				got, err := ra.ReadAt(p[:n], off)
				if (err != nil && err != io.EOF) || !bytes.Equal(p[:got], text[off:min(off+int64(n), int64(len(text)))]) {
					t.Errorf("ReadAt(%d at %d): %d, %v", n, off, got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestReadAtWrongStream(t *testing.T) {
	// An index used on a stream that is not its own fails, without panic.
	text := textData(1<<20, 10)
	src := frames(t, text, 100<<10)
	ix, _ := build(t, src)
	for _, other := range [][]byte{nil, src[:len(src)/2], flip(src, len(src)/2), frames(t, text[:500<<10], 50<<10), bytes.Repeat([]byte{0}, len(src))} {
		p := make([]byte, 300<<10)
		for _, off := range []int64{0, 400 << 10, 1<<20 - 10} {
			if n, err := ix.ReadAt(bytes.NewReader(other), p, off); err == nil && !bytes.Equal(p[:n], text[off:off+int64(n)]) {
				t.Fatalf("wrong bytes without an error")
			}
		}
	}
}

func TestMarshalCorrupt(t *testing.T) {
	text := textData(1<<20, 11)
	ix, _ := build(t, frames(t, text, 100<<10, 7, 30<<10))
	enc, err := ix.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for i := range enc {
		var ix2 Index
		if err := ix2.UnmarshalBinary(enc[:i]); !errors.Is(err, ErrBadIndex) {
			t.Fatalf("truncated at %d: %v", i, err)
		}
		for _, x := range []byte{1, 0x80, 0xff} {
			c := bytes.Clone(enc)
			c[i] ^= x
			if err := ix2.UnmarshalBinary(c); !errors.Is(err, ErrBadIndex) {
				t.Fatalf("byte %d ^ %#x: %v", i, x, err)
			}
		}
	}
	var ix2 Index
	if err := ix2.UnmarshalBinary(append(bytes.Clone(enc), 0)); !errors.Is(err, ErrBadIndex) {
		t.Fatalf("trailing byte: %v", err)
	}
	// Inconsistent but well checksummed.
	bad := []*Index{
		{size: 10, csize: 100, frames: 1, maxFrame: 10},                                            // no seek point
		{size: 10, csize: 100, frames: 1, maxFrame: 10, spans: []span{{out: 1}}},                   // not at 0
		{size: 10, csize: 100, frames: 1, maxFrame: 11, spans: []span{{}}},                         // frame bigger than the stream
		{size: 10, csize: 100, frames: 2, maxFrame: 4, spans: []span{{}}},                          // frames too small
		{size: 10, csize: 100, frames: 2, maxFrame: 10, spans: []span{{}, {out: 10, in: 50}}},      // past the end
		{size: 10, csize: 100, frames: 2, maxFrame: 10, spans: []span{{}, {out: 5, in: 95}}},       // frame past the end
		{size: 10, csize: 100, frames: 1, maxFrame: 10, spans: []span{{}, {out: 5, in: 50}}},       // more points than frames
		{size: 10, csize: 8, frames: 1, maxFrame: 10, spans: []span{{}}},                           // stream too small
		{size: 10, csize: 100, frames: 100, maxFrame: 10, spans: []span{{}}},                       // too many frames
		{size: 0, csize: 100, frames: 1, maxFrame: 0, spans: []span{{}}},                           // a point in nothing
		{size: 10, csize: 100, frames: 2, maxFrame: 10, spans: []span{{in: 20}, {out: 5, in: 20}}}, // not after
	}
	for i, b := range bad {
		enc, _ := b.MarshalBinary()
		if err := ix2.UnmarshalBinary(enc); !errors.Is(err, ErrBadIndex) {
			t.Errorf("inconsistent index %d accepted", i)
		}
	}
	// The empty stream's index is fine.
	empty, _ := build(t, nil)
	enc, _ = empty.MarshalBinary()
	if err := ix2.UnmarshalBinary(enc); err != nil || ix2.Size() != 0 {
		t.Fatal(err)
	}
}

func TestCountFrames(t *testing.T) {
	var stream []byte
	for i := range 3 {
		stream = append(stream, encodeAll(t, bytes.Repeat([]byte{byte(i)}, 1000))...)
	}
	n, err := CountFrames(bytes.NewReader(stream), int64(len(stream)))
	if err != nil || n != 3 {
		t.Fatalf("CountFrames = %d, %v; want 3 frames", n, err)
	}
	if _, err := CountFrames(bytes.NewReader(stream[:len(stream)-3]), int64(len(stream)-3)); err == nil {
		t.Fatal("a truncated stream counted without error")
	}
}
