package zst

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"
)

var (
	benchOnce sync.Once
	benchText []byte
	benchSrc  []byte
)

// benchStream is 64 MiB of text in frames of 1 MiB.
func benchStream(b *testing.B) ([]byte, []byte) {
	benchOnce.Do(func() {
		benchText = textData(64<<20, 13)
		benchSrc = frames(b, benchText, 1<<20)
	})
	return benchText, benchSrc
}

// BenchmarkReadAt reads 4 KiB at random offsets: each read decodes half
// a frame on average.
func BenchmarkReadAt(b *testing.B) {
	text, src := benchStream(b)
	ix, _ := build(b, src)
	r := bytes.NewReader(src)
	rnd := rand.New(rand.NewPCG(1, 2))
	p := make([]byte, 4<<10)
	b.SetBytes(int64(len(p)))
	b.ResetTimer()
	for b.Loop() {
		off := rnd.Int64N(int64(len(text) - len(p)))
		if _, err := ix.ReadAt(r, p, off); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuild is the indexing pass.
func BenchmarkBuild(b *testing.B) {
	text, src := benchStream(b)
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Build(bytes.NewReader(src), int64(len(src)), func([]byte) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
