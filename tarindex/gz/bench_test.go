package gz

import (
	"archive/tar"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	kflate "github.com/klauspost/compress/flate"
)

var (
	corpusOnce sync.Once
	corpusTar  []byte
)

// benchCorpus is a tar of real files, like a layer: Go's sources and
// binaries from GOROOT (16 MiB of it), or generated text without them.
func benchCorpus(tb testing.TB) []byte {
	corpusOnce.Do(func() {
		const want = 16 << 20
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		root := goroot()
		for _, dir := range []string{"src/net", "pkg/tool", "src/runtime"} {
			filepath.WalkDir(filepath.Join(root, dir), func(p string, d fs.DirEntry, err error) error {
				if err != nil || !d.Type().IsRegular() || b.Len() > want*len(dir)/12 {
					return nil
				}
				data, err := os.ReadFile(p)
				if err != nil {
					return nil
				}
				tw.WriteHeader(&tar.Header{Name: p, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
				tw.Write(data)
				return nil
			})
		}
		tw.Close()
		if b.Len() < want {
			b.Write(textData(want-b.Len(), 9))
		}
		corpusTar = b.Bytes()[:want]
	})
	return corpusTar
}

// goroot is where the go command's own sources are ("" if unknown).
func goroot() string {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func benchInputs(b *testing.B) map[string][]byte {
	return map[string][]byte{
		"tar":    benchCorpus(b),
		"text":   textData(16<<20, 3),
		"random": randomData(4<<20, 4),
		"hex":    hexLines(16<<20, 5),
	}
}

func BenchmarkInflate(b *testing.B) {
	for _, name := range []string{"tar", "text", "random", "hex"} {
		data := benchInputs(b)[name]
		for _, lvl := range []int{1, 6} {
			z := deflateLevel(b, data, lvl)
			b.Run(name+"/level"+string(rune('0'+lvl))+"/gz", func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				f := newInflater()
				for b.Loop() {
					if err := f.reset(sliceReaderAt(z), int64(len(z)), false, false); err != nil {
						b.Fatal(err)
					}
					n := 0
					for {
						st, err := f.step()
						if err != nil {
							b.Fatal(err)
						}
						n += f.wp - f.rp
						if st == stepEnd {
							break
						}
					}
					if n != len(data) {
						b.Fatal("short")
					}
				}
			})
			b.Run(name+"/level"+string(rune('0'+lvl))+"/stdflate", func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				r := flate.NewReader(bytes.NewReader(z))
				for b.Loop() {
					r.(flate.Resetter).Reset(bytes.NewReader(z), nil)
					if n, err := io.Copy(io.Discard, r); err != nil || n != int64(len(data)) {
						b.Fatal(err)
					}
				}
			})
			b.Run(name+"/level"+string(rune('0'+lvl))+"/klauspost", func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				r := kflate.NewReader(bytes.NewReader(z))
				for b.Loop() {
					r.(kflate.Resetter).Reset(bytes.NewReader(z), nil)
					if n, err := io.Copy(io.Discard, r); err != nil || n != int64(len(data)) {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkBuild is the indexing pass (inflate, CRC-32, checkpoints) over
// a gzip -6 tar, for each way of storing windows; winB/MiB is what the
// checkpoints take per MiB of output.
func BenchmarkBuild(b *testing.B) {
	data := benchCorpus(b)
	gz := gzipLevel(b, data, 6)
	for _, wl := range []struct {
		name string
		fn   func() (windowWriter, error)
	}{
		{"raw", func() (windowWriter, error) { return flate.NewWriter(nil, flate.NoCompression) }},
		{"flate1", func() (windowWriter, error) { return flate.NewWriter(nil, flate.BestSpeed) }},
		{"flate6", func() (windowWriter, error) { return flate.NewWriter(nil, flate.DefaultCompression) }},
		{"klauspost1", func() (windowWriter, error) { return kflate.NewWriter(nil, kflate.BestSpeed) }},
		{"klauspost5", func() (windowWriter, error) { return kflate.NewWriter(nil, 5) }},
	} {
		for _, every := range []int64{512 << 10, 2 << 20} {
			b.Run(fmt.Sprintf("%s/every%dK", wl.name, every>>10), func(b *testing.B) {
				defer func(f func() (windowWriter, error)) { newWindowWriter = f }(newWindowWriter)
				newWindowWriter = wl.fn
				b.SetBytes(int64(len(data)))
				var ix *Index
				for b.Loop() {
					var err error
					ix, err = Build(bytes.NewReader(gz), int64(len(gz)), every, func([]byte) error { return nil })
					if err != nil {
						b.Fatal(err)
					}
				}
				enc, _ := ix.MarshalBinary()
				b.ReportMetric(float64(len(enc))/float64(len(data))*(1<<20), "encB/MiB")
				b.ReportMetric(float64(ix.Checkpoints()), "points")
			})
		}
	}
	b.Run("stdgzip", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			zr, _ := gzip.NewReader(bytes.NewReader(gz))
			if n, err := io.Copy(io.Discard, zr); err != nil || n != int64(len(data)) {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkReadAt is random 4 KiB reads through the checkpoints (no span
// cache): each inflates half a span on average.
func BenchmarkReadAt(b *testing.B) {
	data := benchCorpus(b)
	gz := gzipLevel(b, data, 6)
	for _, every := range []int64{256 << 10, 1 << 20, 2 << 20} {
		b.Run(fmt.Sprintf("every%dK", every>>10), func(b *testing.B) {
			ix, err := Build(bytes.NewReader(gz), int64(len(gz)), every, func([]byte) error { return nil })
			if err != nil {
				b.Fatal(err)
			}
			r := bytes.NewReader(gz)
			p := make([]byte, 4096)
			rnd := rand.New(rand.NewPCG(1, 1))
			for b.Loop() {
				off := rnd.Int64N(int64(len(data) - len(p)))
				if _, err := ix.ReadAt(r, p, off); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// hexLines is random hex digits in lines of 64, the bench's big text file:
// gzip halves it, with short matches between runs of literals.
func hexLines(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 3))
	b := make([]byte, n)
	for i := range b {
		if i%65 == 64 {
			b[i] = '\n'
		} else {
			b[i] = "0123456789abcdef"[r.IntN(16)]
		}
	}
	return b
}
