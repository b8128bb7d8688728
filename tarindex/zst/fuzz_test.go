package zst

import (
	"bytes"
	"errors"
	"testing"

	"github.com/imgmount/imgmount/tarindex/internal/seekfmt"
	"github.com/klauspost/compress/zstd"
)

const fuzzLimit = 4 << 20 // output compared, at most

// fuzzWindow is the window limit while fuzzing: the decoders allocate a
// frame's window whole, and fuzzed frame headers ask for big ones.
const fuzzWindow = 8 << 20

// FuzzBuild reads arbitrary bytes as a zstd stream: Build must accept
// what klauspost's decoder (reading the whole stream at once) accepts,
// with the same output, and refuse what it refuses. Where it succeeds,
// reads at every seek point and around it, and the index encoded and
// decoded again, must give the same bytes.
func FuzzBuild(f *testing.F) {
	text := textData(300<<10, 1)
	for _, d := range [][]byte{nil, []byte("hello hello hello hello"), text[:5000], randomData(300, 2)} {
		f.Add(encodeAll(f, d))
		f.Add(encodeAll(f, d, zstd.WithEncoderCRC(false), zstd.WithZeroFrames(true)))
		f.Add(frames(f, d, 100, 1000))
		f.Add(append(skippable(3, []byte("abc")), encodeStream(f, d, 1000)...))
		f.Add(rawFrame(d, int64(len(d))))
	}
	f.Add(frames(f, text, 70<<10))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58, 0x02 | 0x08<<3, 0, 0, 'x', 1, 0, 0})  // RLE block, empty last
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x05, 0x29, 0, 0, 'h', 'e', 'l', 'l', 'o'}) // single segment, size 5
	f.Fuzz(func(t *testing.T, src []byte) {
		saved := maxWindow
		maxWindow = fuzzWindow
		defer func() { maxWindow = saved }()
		want, werr := decodeAll(src, fuzzLimit+1)
		var got []byte
		ix, gerr := Build(bytes.NewReader(src), int64(len(src)), func(p []byte) error {
			got = append(got, p...)
			return nil
		}, Limit(fuzzLimit))
		if len(want) > fuzzLimit || errors.Is(gerr, ErrLimit) {
			n := min(len(want), len(got))
			if !bytes.Equal(got[:n], want[:n]) {
				t.Fatalf("the first %d bytes differ", n)
			}
			return
		}
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("klauspost: %v; ours: %v", werr, gerr)
		}
		if werr != nil {
			return
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("output differs: %d bytes, want %d", len(got), len(want))
		}
		if ix.Size() != int64(len(want)) || ix.MaxFrame() > ix.Size() || int64(ix.SeekPoints()) > max(int64(ix.Frames()), 0) {
			t.Fatalf("index: size %d, largest frame %d, %d frames, %d seek points", ix.Size(), ix.MaxFrame(), ix.Frames(), ix.SeekPoints())
		}
		enc, err := ix.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var ix2 Index
		if err := ix2.UnmarshalBinary(enc); err != nil {
			t.Fatalf("own encoding refused: %v", err)
		}
		r := bytes.NewReader(src)
		p := make([]byte, 1<<10)
		check := func(off int64, n int) {
			m, err := ix2.ReadAt(r, p[:n], off)
			end := min(off+int64(n), ix.Size())
			if m != int(end-off) || !bytes.Equal(p[:m], want[off:end]) || (m < n) != (err != nil) {
				t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", n, off, m, err)
			}
		}
		for off := int64(0); off < ix.Size(); {
			_, end, ok := ix.Span(off)
			if !ok || end <= off {
				t.Fatalf("Span(%d) = %d, %v", off, end, ok)
			}
			check(off, min(len(p), int(ix.Size()-off)))
			check(end-1, 1)
			check(max(end-2, 0), 2)
			off = end
		}
		if ix.Size() > 0 {
			check(ix.Size()/3, min(len(p), int(ix.Size()-ix.Size()/3)))
			check(ix.Size()-1, 5)
		}
	})
}

// FuzzUnmarshalIndex decodes arbitrary bytes as an index (with the
// checksum made right, or as they are): no panic, and what is accepted
// encodes to something accepted again, and reads with it only fail.
func FuzzUnmarshalIndex(f *testing.F) {
	text := textData(300<<10, 3)
	src := frames(f, text, 100<<10, 5, 20<<10)
	ix, _ := build(f, src)
	enc, _ := ix.MarshalBinary()
	f.Add(enc, false)
	f.Add(enc[:len(enc)-4], true)
	empty, _ := build(f, nil)
	eenc, _ := empty.MarshalBinary()
	f.Add(eenc, false)
	f.Add([]byte("zsix\x01"), true)
	f.Fuzz(func(t *testing.T, b []byte, fixCRC bool) {
		if fixCRC {
			b = seekfmt.Seal(bytes.Clone(b), 0)
		}
		var ix Index
		if err := ix.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrBadIndex) {
				t.Fatalf("error %v does not wrap ErrBadIndex", err)
			}
			return
		}
		again, err := ix.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var ix2 Index
		if err := ix2.UnmarshalBinary(again); err != nil {
			t.Fatalf("re-encoded index refused: %v", err)
		}
		if ix2.Size() != ix.Size() || ix2.SeekPoints() != ix.SeekPoints() || ix2.Frames() != ix.Frames() {
			t.Fatal("re-encoded index differs")
		}
		// Reads may fail or, for an index consistent with another
		// stream, return wrong bytes (the caller's digest of the stream
		// guards against that): they must not panic.
		saved := maxWindow
		maxWindow = fuzzWindow
		defer func() { maxWindow = saved }()
		p := make([]byte, 4096)
		for _, off := range []int64{0, ix.Size() / 2, ix.Size() - 1} {
			ix.ReadAt(bytes.NewReader(src), p, off)
			ix.Span(off)
		}
	})
}
