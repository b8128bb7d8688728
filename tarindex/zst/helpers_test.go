package zst

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"
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
// vocabulary, random bytes, runs of zeros (tar padding).
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

// encodeAll compresses data as one frame (EncodeAll: the size declared).
func encodeAll(tb testing.TB, data []byte, opts ...zstd.EOption) []byte {
	tb.Helper()
	e, err := zstd.NewWriter(nil, append([]zstd.EOption{zstd.WithEncoderConcurrency(1)}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	defer e.Close()
	return e.EncodeAll(data, nil)
}

// encodeStream compresses data as one frame through the streaming
// encoder (no size declared), writing it in pieces of n bytes.
func encodeStream(tb testing.TB, data []byte, n int, opts ...zstd.EOption) []byte {
	tb.Helper()
	var b bytes.Buffer
	e, err := zstd.NewWriter(&b, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	for len(data) > 0 {
		k := min(n, len(data))
		if _, err := e.Write(data[:k]); err != nil {
			tb.Fatal(err)
		}
		data = data[k:]
	}
	if err := e.Close(); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// frames compresses data in frames of the given sizes (cycled), each on
// its own, and concatenates them.
func frames(tb testing.TB, data []byte, sizes ...int) []byte {
	tb.Helper()
	e, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		tb.Fatal(err)
	}
	defer e.Close()
	var out []byte
	for i := 0; len(data) > 0; i++ {
		k := min(sizes[i%len(sizes)], len(data))
		out = e.EncodeAll(data[:k], out)
		data = data[k:]
	}
	return out
}

// skippable is a skippable frame holding payload.
func skippable(nibble byte, payload []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, skippableMagic|uint32(nibble&15))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// rawFrame is a frame of raw blocks of at most 128 KiB, no checksum,
// declaring size declared (unknownSize: no size field).
func rawFrame(data []byte, declared int64) []byte {
	b := binary.LittleEndian.AppendUint32(nil, frameMagic)
	if declared == unknownSize {
		b = append(b, 0x00, 0x58) // window 2^21
	} else {
		b = append(b, 0xc0, 0x58) // 8-byte size, window 2^21
		b = binary.LittleEndian.AppendUint64(b, uint64(declared))
	}
	for {
		k := min(len(data), maxBlockSize)
		last := k == len(data)
		h := uint32(k) << 3 // raw
		if last {
			h |= 1
		}
		b = append(b, byte(h), byte(h>>8), byte(h>>16))
		b = append(b, data[:k]...)
		data = data[k:]
		if last {
			return b
		}
	}
}

// decodeAll is the reference: klauspost's streaming decoder over the
// whole stream, with the same window limit.
func decodeAll(src []byte, limit int64) ([]byte, error) {
	d, err := zstd.NewReader(bytes.NewReader(src), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxWindow))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return io.ReadAll(io.LimitReader(d, limit))
}

// build indexes src, returning the index and the output.
func build(tb testing.TB, src []byte, opts ...Option) (*Index, []byte) {
	tb.Helper()
	var out []byte
	ix, err := Build(bytes.NewReader(src), int64(len(src)), func(p []byte) error {
		out = append(out, p...)
		return nil
	}, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	return ix, out
}
