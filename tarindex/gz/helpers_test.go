package gz

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"testing"
)

// randomData is incompressible.
func randomData(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// textData compresses like source code or text: words from a small
// vocabulary, numbers, runs of zeros (tar padding).
func textData(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 2))
	words := []string{"the ", "func ", "return ", "if err != nil {\n", "}\n", "package ", "import ", "\t", "var ", "x := ", "for ", "range ", "0x", "usr/lib/", ".so.1\n", "#include <stdio.h>\n"}
	var b bytes.Buffer
	for b.Len() < n {
		switch r.IntN(20) {
		case 0:
			b.Write(make([]byte, r.IntN(600)))
		case 1:
			for range r.IntN(40) {
				b.WriteByte(byte(r.Uint32()))
			}
		default:
			b.WriteString(words[r.IntN(len(words))])
		}
	}
	return b.Bytes()[:n]
}

func gzipLevel(t testing.TB, data []byte, level int) []byte {
	var b bytes.Buffer
	w, err := gzip.NewWriterLevel(&b, level)
	if err != nil {
		t.Fatal(err)
	}
	w.Name = "data.tar"
	w.Comment = "a comment"
	w.Extra = []byte("extra field")
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func deflateLevel(t testing.TB, data []byte, level int) []byte {
	var b bytes.Buffer
	w, err := flate.NewWriter(&b, level)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()
	return b.Bytes()
}

// inflateAll decodes a raw DEFLATE stream with our decoder.
func inflateAll(src []byte, limit int) ([]byte, error) {
	f := newInflater()
	if err := f.reset(sliceReaderAt(src), int64(len(src)), false, false); err != nil {
		return nil, err
	}
	var out []byte
	for {
		st, err := f.step()
		if err != nil {
			return out, err
		}
		out = append(out, f.hist[f.rp:f.wp]...)
		if limit > 0 && len(out) > limit {
			return out, io.ErrShortBuffer
		}
		if st == stepEnd {
			return out, nil
		}
	}
}

// buildAll indexes a gzip stream, returning the index and its output.
func buildAll(t testing.TB, gz []byte, every int64) (*Index, []byte) {
	t.Helper()
	var out bytes.Buffer
	ix, err := Build(bytes.NewReader(gz), int64(len(gz)), every, func(p []byte) error {
		out.Write(p)
		return nil
	})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return ix, out.Bytes()
}

func crc32IEEE(b []byte) uint32 { return crc32.ChecksumIEEE(b) }
