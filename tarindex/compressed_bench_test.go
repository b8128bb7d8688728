package tarindex

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
)

var (
	textLayerOnce sync.Once
	textLayerRaw  []byte
	textLayerGz   []byte
)

// textLayer is a gzip tar of about 200 MiB of text files (Go's sources,
// read again under other names until there is enough), like the layers of
// a language runtime image: the one pass IndexCompressed makes over it is
// what a cold mount of such an image costs.
func textLayer(tb testing.TB) (raw, gz []byte) {
	textLayerOnce.Do(func() {
		const want = 200 << 20
		out, err := exec.Command("go", "env", "GOROOT").Output()
		if err != nil {
			tb.Skip("no GOROOT to build the corpus from")
		}
		src := filepath.Join(strings.TrimSpace(string(out)), "src")
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for round := 0; b.Len() < want; round++ {
			n := b.Len()
			_ = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
				if err != nil || b.Len() >= want {
					return nil
				}
				if !d.Type().IsRegular() || !strings.HasSuffix(p, ".go") {
					return nil
				}
				data, err := os.ReadFile(p)
				if err != nil {
					return nil
				}
				name := fmt.Sprintf("r%d/%s", round, strings.TrimPrefix(p, src))
				_ = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
				_, _ = tw.Write(data)
				return nil
			})
			if b.Len() == n {
				tb.Skip("no Go sources to build the corpus from")
			}
		}
		_ = tw.Close()
		textLayerRaw = b.Bytes()
		var z bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&z, gzip.DefaultCompression)
		_, _ = zw.Write(textLayerRaw)
		_ = zw.Close()
		textLayerGz = z.Bytes()
	})
	return textLayerRaw, textLayerGz
}

// BenchmarkIndexCompressed is a cold mount's pass over one gzip layer:
// inflate, record checkpoints, hash (the diff_id) and index the tar.
// IMGMOUNT_BENCH_GZ names a gzip tar file to use instead of the corpus.
func BenchmarkIndexCompressed(b *testing.B) {
	var gzb []byte
	var usize int64
	var want digest.Digest
	if p := os.Getenv("IMGMOUNT_BENCH_GZ"); p != "" {
		var err error
		if gzb, err = os.ReadFile(p); err != nil {
			b.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(gzb))
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		if usize, err = io.Copy(h, zr); err != nil {
			b.Fatal(err)
		}
		want = digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
	} else {
		var raw []byte
		raw, gzb = textLayer(b)
		usize = int64(len(raw))
		want = digest.FromBytes(raw)
	}
	for _, hashed := range []bool{true, false} {
		name := "sha256"
		w := want
		if !hashed {
			name, w = "nohash", ""
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(gzb))) // MB/s of input, as the bench rows quote
			b.ReportAllocs()
			c := &Cache{}
			for b.Loop() {
				ix, seek, err := c.IndexCompressed("bench", bytes.NewReader(gzb), int64(len(gzb)), CompressionGzip, w, CompressedOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if seek.Size() != usize || len(ix.Entries) == 0 {
					b.Fatalf("size %d, want %d; %d entries", seek.Size(), usize, len(ix.Entries))
				}
			}
			b.ReportMetric(float64(usize)/float64(len(gzb)), "ratio")
		})
	}
}
