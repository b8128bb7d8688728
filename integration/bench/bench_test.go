package bench

// Go benchmarks of the in-process parts of a mount, on a synthetic layer of
// small files (BENCH_ENTRIES, default 200,000). Run with
//
//	go test -run '^$' -bench . -benchmem ./integration/bench/
//
// `make test` does not run them (no -bench). Each reports ns/entry, and the
// memory benchmarks report the live heap a built structure keeps per entry.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/union"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
)

var (
	layerOnce sync.Once
	layerTar  []byte
	layerErr  error
)

func benchEntries() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_ENTRIES")); err == nil && n > 0 {
		return n
	}
	return 200_000
}

// smallFilesLayer is the tar of ManyFilesLayer(benchEntries()), in memory.
func smallFilesLayer(b *testing.B) []byte {
	layerOnce.Do(func() {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		if layerErr = ManyFilesLayer(benchEntries())(tw); layerErr == nil {
			layerErr = tw.Close()
		}
		layerTar = buf.Bytes()
	})
	if layerErr != nil {
		b.Fatal(layerErr)
	}
	return layerTar
}

func BenchmarkIndexBuild(b *testing.B) {
	data := smallFilesLayer(b)
	var n int
	for b.Loop() {
		ix, err := tarindex.Build(bytes.NewReader(data), 0, int64(len(data)))
		if err != nil {
			b.Fatal(err)
		}
		n = len(ix.Entries)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/entry")
}

func BenchmarkIndexLoadSaved(b *testing.B) {
	data := smallFilesLayer(b)
	c := &tarindex.Cache{Dir: b.TempDir(), Warn: func(err error) { b.Fatal(err) }}
	if _, err := c.Index("bench", bytes.NewReader(data), 0, int64(len(data)), 0); err != nil {
		b.Fatal(err)
	}
	var n int
	for b.Loop() {
		ix, err := c.Index("bench", bytes.NewReader(data), 0, int64(len(data)), 0)
		if err != nil {
			b.Fatal(err)
		}
		n = len(ix.Entries)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/entry")
}

// openSynthetic writes the small-files layer as a docker-archive and opens
// it with a fresh cache.
func openSynthetic(b *testing.B) *archive.Image {
	dir := b.TempDir()
	p := filepath.Join(dir, "small.tar")
	if err := WriteDockerArchive(p, "bench/small:latest", []LayerFunc{ManyFilesLayer(benchEntries())}); err != nil {
		b.Fatal(err)
	}
	img, err := archive.Open(p, archive.OpenOptions{CacheDir: filepath.Join(dir, "cache")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { img.Close() })
	return img
}

func BenchmarkBuildUnion(b *testing.B) {
	img := openSynthetic(b)
	n := len(img.Layers[0].TarIndex.Entries)
	for b.Loop() {
		if _, err := union.BuildUnion(img); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/entry")
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkMemoryIndex reports the heap a decoded saved index keeps per
// entry (what a second mount holds for the index).
func BenchmarkMemoryIndex(b *testing.B) {
	data := smallFilesLayer(b)
	c := &tarindex.Cache{Dir: b.TempDir()}
	if _, err := c.Index("bench", bytes.NewReader(data), 0, int64(len(data)), 0); err != nil {
		b.Fatal(err)
	}
	var per float64
	for b.Loop() {
		before := liveHeap()
		ix, err := c.Index("bench", bytes.NewReader(data), 0, int64(len(data)), 0)
		if err != nil {
			b.Fatal(err)
		}
		per = float64(liveHeap()-before) / float64(len(ix.Entries))
		runtime.KeepAlive(ix)
	}
	b.ReportMetric(per, "heapB/entry")
}

// BenchmarkMemoryUnion reports the heap the union tree keeps per entry on
// top of the index.
func BenchmarkMemoryUnion(b *testing.B) {
	img := openSynthetic(b)
	n := len(img.Layers[0].TarIndex.Entries)
	var per float64
	for b.Loop() {
		before := liveHeap()
		t, err := union.BuildUnion(img)
		if err != nil {
			b.Fatal(err)
		}
		per = float64(liveHeap()-before) / float64(n)
		runtime.KeepAlive(t)
	}
	b.ReportMetric(per, "heapB/entry")
}

// BenchmarkDecompress measures decompressing a gzip layer into the cache
// (hashed against its digest, written, synced, renamed): what the first
// mount of an image with compressed layers does per layer.
//
// BENCH_GZIP names a real gzip layer to use instead of the synthetic one
// (e.g. the largest blob of integration/testdata/out/debian/oci).
func BenchmarkDecompress(b *testing.B) {
	var gz bytes.Buffer
	var data []byte
	if p := os.Getenv("BENCH_GZIP"); p != "" {
		raw, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			b.Fatal(err)
		}
		if data, err = io.ReadAll(zr); err != nil {
			b.Fatal(err)
		}
		gz.Write(raw)
	} else {
		data = smallFilesLayer(b)
		zw := gzip.NewWriter(&gz)
		if _, err := zw.Write(data); err != nil {
			b.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			b.Fatal(err)
		}
	}
	want := digest.FromBytes(data)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		c := &tarindex.Cache{Dir: b.TempDir()}
		if _, err := c.Decompress("bench", want, tarindex.CompressionGzip, bytes.NewReader(gz.Bytes())); err != nil {
			b.Fatal(err)
		}
	}
}
