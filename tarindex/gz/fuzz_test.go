package gz

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"errors"
	"io"
	"testing"

	"github.com/imgmount/imgmount/tarindex/internal/seekfmt"
	kflate "github.com/klauspost/compress/flate"
)

const fuzzLimit = 4 << 20 // output compared, at most

// FuzzInflate decodes arbitrary bytes as raw DEFLATE: where compress/flate
// accepts them we must produce the same output, and where it refuses them
// we must fail too. Then, where the stream is valid, decoding resumed at
// each block boundary (with the window before it) must produce the rest.
func FuzzInflate(f *testing.F) {
	for _, d := range [][]byte{nil, []byte("a"), []byte("hello hello hello hello"), textData(3000, 1), randomData(300, 2), make([]byte, 1000)} {
		for _, lvl := range []int{-2, 0, 1, 6, 9} {
			var b bytes.Buffer
			w, _ := flate.NewWriter(&b, lvl)
			w.Write(d[:len(d)/2])
			w.Flush()
			w.Write(d[len(d)/2:])
			w.Close()
			f.Add(b.Bytes())
			var k bytes.Buffer
			kw, _ := kflate.NewWriter(&k, lvl)
			kw.Write(d)
			kw.Close()
			f.Add(k.Bytes())
		}
	}
	f.Add([]byte{0x03, 0x00})                   // fixed block, end of block only
	f.Add([]byte{0x01, 0x00, 0x00, 0xff, 0xff}) // empty stored block
	f.Add([]byte{0x07})                         // block type 3
	f.Fuzz(func(t *testing.T, data []byte) {
		want, werr := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(data)), fuzzLimit+1))
		got, gerr := inflateAll(data, fuzzLimit)
		if len(want) > fuzzLimit || len(got) > fuzzLimit {
			n := min(len(want), len(got), fuzzLimit)
			if !bytes.Equal(got[:n], want[:n]) {
				t.Fatalf("the first %d bytes differ", n)
			}
			return
		}
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("compress/flate: %v; ours: %v", werr, gerr)
		}
		if werr != nil {
			return
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("output differs: %d bytes, want %d", len(got), len(want))
		}
		checkResume(t, data, want)
	})
}

// checkResume records every block boundary of the raw DEFLATE stream src
// and decodes the rest of it from each.
func checkResume(t *testing.T, src, want []byte) {
	type cp struct {
		out, bit int64
		win      []byte
	}
	var cps []cp
	f := newInflater()
	if err := f.reset(sliceReaderAt(src), int64(len(src)), false, false); err != nil {
		t.Fatal(err)
	}
	f.nextPoint = 0
	for {
		st, err := f.step()
		if err != nil {
			t.Fatal(err)
		}
		if st == stepBoundary {
			cps = append(cps, cp{f.out(), f.bitPos(), bytes.Clone(f.window())})
			f.nextPoint = f.out() + 1
		}
		if st == stepEnd {
			break
		}
	}
	for _, c := range cps {
		r := newInflater()
		r.wp = copy(r.hist, c.win)
		if err := r.resume(sliceReaderAt(src), int64(len(src)), false, c.bit, c.out); err != nil {
			t.Fatal(err)
		}
		var out []byte
		for {
			st, err := r.step()
			if err != nil {
				t.Fatalf("resumed at bit %d: %v", c.bit, err)
			}
			out = append(out, r.hist[r.rp:r.wp]...)
			if st == stepEnd {
				break
			}
		}
		if !bytes.Equal(out, want[c.out:]) {
			t.Fatalf("resumed at bit %d (output %d): output differs", c.bit, c.out)
		}
	}
}

// FuzzUnmarshalIndex: any bytes are refused or give an index whose reads
// fail or succeed, never panic. fixCRC lets the fuzzer past the checksum.
func FuzzUnmarshalIndex(f *testing.F) {
	data := textData(200<<10, 3)
	var gz []byte
	gz = append(gz, gzipLevel(f, data[:100<<10], 6)...)
	gz = append(gz, gzipLevel(f, data[100<<10:], 1)...)
	ix, _ := buildAll(f, gz, 16<<10)
	enc, _ := ix.MarshalBinary()
	f.Add(enc, false)
	f.Add(enc[:len(enc)-4], true)
	small, _ := buildAll(f, gzipLevel(f, []byte("hi"), 6), 0)
	senc, _ := small.MarshalBinary()
	f.Add(senc, false)
	f.Add([]byte("gzix\x01"), true)
	f.Fuzz(func(t *testing.T, b []byte, fixCRC bool) {
		if fixCRC {
			b = seekfmt.Seal(bytes.Clone(b), 0)
		}
		var ix Index
		if err := ix.UnmarshalBinary(b); err != nil {
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
		// Reads may fail or, for an index consistent with another
		// stream, return wrong bytes (the caller's fingerprint of the
		// stream guards against that): they must not panic.
		p := make([]byte, 4096)
		for _, off := range []int64{0, ix.Size() / 2, ix.Size() - 1} {
			ix.ReadAt(bytes.NewReader(gz), p, off)
		}
	})
}

// FuzzBuild reads arbitrary bytes as a gzip stream: Build must accept
// what compress/gzip accepts, with the same output, and refuse what it
// refuses (but for names and comments past 511 bytes, which only
// compress/gzip refuses); then reads through the index must match.
func FuzzBuild(f *testing.F) {
	for _, d := range [][]byte{nil, []byte("hello hello hello hello"), textData(5000, 1), randomData(300, 2)} {
		for _, lvl := range []int{0, 1, 9} {
			g := gzipLevel(f, d, lvl)
			f.Add(g)
			f.Add(append(bytes.Clone(g), g...))
		}
	}
	f.Add(headerWith([]byte("abc"), []byte("n"), []byte("c"), []byte("e"), true))
	f.Fuzz(func(t *testing.T, gz []byte) {
		var want []byte
		zr, werr := gzip.NewReader(bytes.NewReader(gz))
		if werr == nil {
			want, werr = io.ReadAll(io.LimitReader(zr, fuzzLimit+1))
		}
		if len(want) > fuzzLimit {
			return
		}
		var got []byte
		ix, gerr := Build(bytes.NewReader(gz), int64(len(gz)), 1000, func(p []byte) error {
			got = append(got, p...)
			if len(got) > fuzzLimit {
				return io.ErrShortBuffer
			}
			return nil
		})
		if gerr == nil && errors.Is(werr, gzip.ErrHeader) && longString(gz) {
			return
		}
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("compress/gzip: %v; ours: %v", werr, gerr)
		}
		if werr != nil {
			return
		}
		if !bytes.Equal(got, want) {
			t.Fatal("output differs")
		}
		p := make([]byte, 700)
		for i := range ix.points {
			off := ix.points[i].out
			n, err := ix.ReadAt(bytes.NewReader(gz), p, off)
			if (err != nil && err != io.EOF) || !bytes.Equal(p[:n], want[off:min(off+700, int64(len(want)))]) {
				t.Fatalf("ReadAt(%d): %v", off, err)
			}
		}
	})
}

// longString tells whether b holds 511 non-zero bytes in a row (a gzip
// name or comment compress/gzip refuses).
func longString(b []byte) bool {
	run := 0
	for _, c := range b {
		if c == 0 {
			run = 0
			continue
		}
		if run++; run >= 511 {
			return true
		}
	}
	return false
}
