package gz

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"sync"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
)

// checkReads reads gz through ix at every checkpoint edge, across
// checkpoints and the given boundaries (member starts), at the last byte,
// past the end, and at random offsets, comparing with data.
func checkReads(t *testing.T, ix *Index, gz, data []byte, bounds ...int64) {
	t.Helper()
	r := bytes.NewReader(gz)
	size := int64(len(data))
	if ix.Size() != size {
		t.Fatalf("Size %d, want %d", ix.Size(), size)
	}
	read := func(off, n int64) {
		t.Helper()
		p := make([]byte, n)
		got, err := ix.ReadAt(r, p, off)
		want := int64(0)
		if off < size {
			want = min(n, size-off)
		}
		if int64(got) != want {
			t.Fatalf("ReadAt(%d, %d): %d bytes, want %d (%v)", off, n, got, want, err)
		}
		if want < n && n > 0 && err != io.EOF {
			t.Fatalf("ReadAt(%d, %d) at the end: err %v, want io.EOF", off, n, err)
		}
		if want == n && err != nil {
			t.Fatalf("ReadAt(%d, %d): %v", off, n, err)
		}
		if !bytes.Equal(p[:got], data[min(off, size):min(off+n, size)]) {
			t.Fatalf("ReadAt(%d, %d): wrong bytes", off, n)
		}
	}
	prev := int64(-1)
	for i, p := range ix.points {
		if i == 0 && p.out != 0 {
			t.Fatalf("first checkpoint at %d", p.out)
		}
		if p.out <= prev && i > 0 {
			t.Fatalf("checkpoint %d at %d after %d", i, p.out, prev)
		}
		prev = p.out
		for _, off := range []int64{p.out - 1, p.out, p.out + 1} {
			if off >= 0 {
				read(off, 1)
				read(off, 300)
			}
		}
		if i+2 < len(ix.points) { // from the middle of one span to the middle of the one after next
			a := (p.out + ix.points[i+1].out) / 2
			b := (ix.points[i+1].out + ix.points[i+2].out) / 2
			read(a, b-a)
		}
	}
	for _, b := range bounds {
		for _, off := range []int64{b - 1, b, b - 100} {
			if off >= 0 {
				read(off, 200)
			}
		}
	}
	read(0, size)
	if size > 0 {
		read(size-1, 1)
		read(size-1, 10)
	}
	read(size, 10)
	read(size+5, 10)
	rnd := rand.New(rand.NewPCG(uint64(size), 5))
	for range 10 {
		if size == 0 {
			break
		}
		off := rnd.Int64N(size)
		read(off, rnd.Int64N(64<<10)+1)
	}
}

func check(t *testing.T, gz, data []byte, every int64, bounds ...int64) *Index {
	t.Helper()
	ix, out := buildAll(t, gz, every)
	if !bytes.Equal(out, data) {
		t.Fatalf("Build's output differs: %d bytes, want %d", len(out), len(data))
	}
	checkReads(t, ix, gz, data, bounds...)
	return ix
}

func klauspostGzip(t testing.TB, data []byte, level int) []byte {
	var b bytes.Buffer
	w, err := kgzip.NewWriterLevel(&b, level)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func command(t *testing.T, data []byte, name string, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed", name)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return out
}

var inputs = map[string][]byte{
	"text":   textData(3<<19+12345, 1),
	"random": randomData(1<<20+7, 2),
	"zeros":  make([]byte, 2<<20),
	"small":  []byte("hello, world\n"),
	"empty":  {},
}

func TestCompressors(t *testing.T) {
	compressors := map[string]func(t *testing.T, data []byte) []byte{
		"gzip-0":        func(t *testing.T, d []byte) []byte { return gzipLevel(t, d, 0) },
		"gzip-1":        func(t *testing.T, d []byte) []byte { return gzipLevel(t, d, 1) },
		"gzip-6":        func(t *testing.T, d []byte) []byte { return gzipLevel(t, d, 6) },
		"gzip-9":        func(t *testing.T, d []byte) []byte { return gzipLevel(t, d, 9) },
		"gzip-huffman":  func(t *testing.T, d []byte) []byte { return gzipLevel(t, d, gzip.HuffmanOnly) },
		"klauspost-1":   func(t *testing.T, d []byte) []byte { return klauspostGzip(t, d, 1) },
		"klauspost-5":   func(t *testing.T, d []byte) []byte { return klauspostGzip(t, d, 5) },
		"klauspost-9":   func(t *testing.T, d []byte) []byte { return klauspostGzip(t, d, 9) },
		"klauspost-sl":  func(t *testing.T, d []byte) []byte { return klauspostGzip(t, d, kgzip.StatelessCompression) },
		"klauspost-huf": func(t *testing.T, d []byte) []byte { return klauspostGzip(t, d, kgzip.HuffmanOnly) },
		"cmd-gzip-1":    func(t *testing.T, d []byte) []byte { return command(t, d, "gzip", "-1", "-c") },
		"cmd-gzip-9":    func(t *testing.T, d []byte) []byte { return command(t, d, "gzip", "-9", "-c") },
		"cmd-pigz":      func(t *testing.T, d []byte) []byte { return command(t, d, "pigz", "-c", "-p", "2", "-b", "128") },
		"cmd-pigz-i":    func(t *testing.T, d []byte) []byte { return command(t, d, "pigz", "-c", "-i", "-p", "2", "-b", "64") },
		"cmd-pigz-11":   func(t *testing.T, d []byte) []byte { return command(t, d, "pigz", "-c", "-11", "-p", "2") },
	}
	for cname, compress := range compressors {
		for iname, data := range inputs {
			if cname == "cmd-pigz-11" && len(data) > 1<<20 && iname != "zeros" {
				continue // zopfli is slow
			}
			t.Run(cname+"/"+iname, func(t *testing.T) {
				t.Parallel()
				gz := compress(t, data)
				check(t, gz, data, 64<<10)
				if cname == "gzip-6" || cname == "cmd-pigz" {
					check(t, gz, data, 1<<20)
				}
			})
		}
	}
}

// TestEveryBoundary checkpoints every block boundary: reads resume at each.
func TestEveryBoundary(t *testing.T) {
	data := textData(600<<10, 7)
	var b bytes.Buffer
	w, _ := gzip.NewWriterLevel(&b, 6)
	rnd := rand.New(rand.NewPCG(1, 2))
	for off := 0; off < len(data); {
		n := rnd.IntN(20000)
		n = min(n, len(data)-off)
		w.Write(data[off : off+n])
		off += n
		w.Flush() // a sync flush: an empty stored block, byte-aligned
	}
	w.Close()
	ix := check(t, b.Bytes(), data, 1)
	if ix.Checkpoints() < 40 {
		t.Fatalf("only %d checkpoints", ix.Checkpoints())
	}
}

// TestMultiMember: concatenated members of every kind, empty ones too;
// reads across their boundaries and from checkpoints in each.
func TestMultiMember(t *testing.T) {
	var gz, data []byte
	var bounds []int64
	add := func(d, z []byte) {
		bounds = append(bounds, int64(len(data)))
		data = append(data, d...)
		gz = append(gz, z...)
	}
	for i := range 12 {
		d := textData(100<<10*i+i, uint64(i))
		switch i % 4 {
		case 0:
			add(d, gzipLevel(t, d, 6))
		case 1:
			add(nil, gzipLevel(t, nil, 6)) // an empty member
			add(d, klauspostGzip(t, d, 3))
		case 2:
			add(d, gzipLevel(t, d, 0))
		case 3:
			add(nil, gzipLevel(t, nil, 0))
			add(randomData(70<<10, uint64(i)), gzipLevel(t, randomData(70<<10, uint64(i)), 9))
		}
	}
	for _, every := range []int64{1, 32 << 10, 256 << 10} {
		ix := check(t, gz, data, every, bounds...)
		if ix.Members() != int64(len(bounds)) {
			t.Fatalf("%d members, want %d", ix.Members(), len(bounds))
		}
	}
	// The stream compress/gzip reads the same way.
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(all, data) {
		t.Fatalf("compress/gzip: %v", err)
	}
}

func TestOnlyEmptyMembers(t *testing.T) {
	gz := append(gzipLevel(t, nil, 6), gzipLevel(t, nil, 0)...)
	ix := check(t, gz, nil, 0)
	if ix.Members() != 2 || ix.Size() != 0 {
		t.Fatalf("%d members, size %d", ix.Members(), ix.Size())
	}
}

// headerWith builds a gzip member by hand with the given flags' fields.
func headerWith(data []byte, name, comment, extra []byte, hcrc bool) []byte {
	var flg byte
	h := []byte{0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 0, 3}
	if hcrc {
		flg |= 2
	}
	if extra != nil {
		flg |= 4
		h = append(h, byte(len(extra)), byte(len(extra)>>8))
		h = append(h, extra...)
	}
	if name != nil {
		flg |= 8
		h = append(append(h, name...), 0)
	}
	if comment != nil {
		flg |= 16
		h = append(append(h, comment...), 0)
	}
	h[3] = flg
	if hcrc {
		c := crc32IEEE(h)
		h = append(h, byte(c), byte(c>>8))
	}
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, 6)
	w.Write(data)
	w.Close()
	h = append(h, b.Bytes()...)
	c := crc32IEEE(data)
	return append(h, byte(c), byte(c>>8), byte(c>>16), byte(c>>24), byte(len(data)), byte(len(data)>>8), byte(len(data)>>16), byte(len(data)>>24))
}

func TestHeaderFields(t *testing.T) {
	data := textData(300<<10, 3)
	long := bytes.Repeat([]byte("n"), 5000) // past compress/gzip's 511 bytes
	for i, gz := range [][]byte{
		headerWith(data, nil, nil, nil, false),
		headerWith(data, []byte("name"), []byte("comment"), []byte("xx"), true),
		headerWith(data, long, long, bytes.Repeat([]byte{7}, 65535), true),
		headerWith(data, nil, nil, []byte{}, true),
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) { check(t, gz, data, 64<<10) })
	}
	bad := headerWith(data, []byte("name"), nil, nil, true)
	bad[len("name")+11]++ // the header CRC
	if _, err := Build(bytes.NewReader(bad), int64(len(bad)), 0, func([]byte) error { return nil }); !errors.Is(err, ErrHeader) {
		t.Fatalf("bad header CRC: %v", err)
	}
}

func build(gz []byte, opts ...Option) error {
	_, err := Build(bytes.NewReader(gz), int64(len(gz)), 64<<10, func([]byte) error { return nil }, opts...)
	return err
}

func TestTrailerAndFraming(t *testing.T) {
	data := textData(200<<10, 4)
	gz := gzipLevel(t, data, 6)
	mod := func(i int) []byte {
		b := bytes.Clone(gz)
		b[len(b)+i] ^= 1
		return b
	}
	for _, c := range []struct {
		name string
		gz   []byte
		want error
	}{
		{"crc", mod(-8), ErrChecksum},
		{"isize", mod(-4), ErrChecksum},
		{"magic", func() []byte { b := bytes.Clone(gz); b[1] = 0; return b }(), ErrHeader},
		{"method", func() []byte { b := bytes.Clone(gz); b[2] = 7; return b }(), ErrHeader},
		{"trailing garbage", append(bytes.Clone(gz), "garbage!!!!!"...), ErrHeader},
		{"trailing zeros", append(bytes.Clone(gz), make([]byte, 512)...), ErrHeader},
		{"truncated trailer", gz[:len(gz)-3], io.ErrUnexpectedEOF},
		{"truncated member after", append(bytes.Clone(gz), gz[:5]...), io.ErrUnexpectedEOF},
		{"empty", nil, io.ErrUnexpectedEOF},
	} {
		if err := build(c.gz); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// TestCorrupt: truncated or damaged streams give errors (never panics),
// as compress/gzip does, and what passes is what compress/gzip reads.
func TestCorrupt(t *testing.T) {
	data := textData(40<<10, 5)
	gz := append(gzipLevel(t, data, 6), gzipLevel(t, data[:5000], 1)...)
	first := len(gz) - len(gzipLevel(t, data[:5000], 1))
	near := func(n, at int) bool { return n > at-300 && n < at+300 }
	for n := range len(gz) {
		if n == first {
			continue // a whole first member
		}
		if !near(n, 0) && !near(n, first) && !near(n, len(gz)) && n%11 != 0 {
			continue
		}
		if err := build(gz[:n]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", n)
		}
	}
	rnd := rand.New(rand.NewPCG(3, 4))
	for range 1000 {
		b := bytes.Clone(gz)
		for range 1 + rnd.IntN(3) {
			b[rnd.IntN(len(b))] ^= byte(1 << rnd.IntN(8))
		}
		var out bytes.Buffer
		_, err := Build(bytes.NewReader(b), int64(len(b)), 16<<10, func(p []byte) error { out.Write(p); return nil })
		zr, zerr := gzip.NewReader(bytes.NewReader(b))
		var want []byte
		if zerr == nil {
			want, zerr = io.ReadAll(zr)
		}
		if (err == nil) != (zerr == nil) {
			t.Fatalf("we say %v, compress/gzip says %v", err, zerr)
		}
		if err == nil && !bytes.Equal(out.Bytes(), want) {
			t.Fatal("output differs from compress/gzip's")
		}
	}
}

func TestLimit(t *testing.T) {
	data := make([]byte, 10<<20) // a small bomb
	gz := gzipLevel(t, data, 9)
	if err := build(gz, Limit(4<<20)); !errors.Is(err, ErrLimit) {
		t.Fatalf("limit: %v", err)
	}
	if err := build(gz, Limit(10<<20)); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	stop := errors.New("stop")
	if _, err := Build(bytes.NewReader(gz), int64(len(gz)), 0, func([]byte) error { return stop }); err != stop {
		t.Fatalf("visit's error: %v", err)
	}
	var in, out int64
	if err := build(gz, Progress(func(i, o int64) { in, out = i, o })); err != nil || out != int64(len(data)) || in != int64(len(gz)) {
		t.Fatalf("progress: %d %d %v", in, out, err)
	}
}

func TestBuilderRead(t *testing.T) {
	data := textData(1<<20, 8)
	gz := gzipLevel(t, data, 6)
	b := NewBuilder(bytes.NewReader(gz), int64(len(gz)), 100<<10)
	defer b.Close()
	if _, err := b.Index(); err == nil {
		t.Fatal("Index before the end")
	}
	got, err := io.ReadAll(b)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("ReadAll: %v", err)
	}
	ix, err := b.Index()
	if err != nil {
		t.Fatal(err)
	}
	checkReads(t, ix, gz, data)
}

func TestReader(t *testing.T) {
	data := textData(3<<20, 9)
	gz := gzipLevel(t, data, 6)
	ix, _ := buildAll(t, gz, 256<<10)
	for _, off := range []int64{0, 1, 300000, int64(len(data)) - 1, int64(len(data))} {
		z, err := ix.NewReader(bytes.NewReader(gz), off)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(z)
		z.Close()
		if err != nil || !bytes.Equal(got, data[off:]) {
			t.Fatalf("from %d: %v", off, err)
		}
	}
	if start, end, ok := ix.Span(300000); !ok || start > 300000 || end <= 300000 {
		t.Fatalf("Span: %d %d %v", start, end, ok)
	}
	if _, _, ok := ix.Span(int64(len(data))); ok {
		t.Fatal("Span past the end")
	}
	if _, err := ix.ReadAt(bytes.NewReader(gz), make([]byte, 1), -1); err == nil {
		t.Fatal("negative offset")
	}
}

// TestReadAtChanged: a stream that is not the one indexed (shorter, or
// other bytes) gives errors, not panics.
func TestReadAtChanged(t *testing.T) {
	data := textData(2<<20, 10)
	gz := gzipLevel(t, data, 6)
	ix, _ := buildAll(t, gz, 128<<10)
	other := gzipLevel(t, textData(2<<20, 11), 6)
	short := gz[:len(gz)/2]
	p := make([]byte, 64<<10)
	for _, off := range []int64{0, 1 << 20, int64(len(data)) - 100} {
		if _, err := ix.ReadAt(bytes.NewReader(short), p, off); err == nil && off > 1<<20 {
			t.Fatalf("truncated stream at %d: no error", off)
		}
		ix.ReadAt(bytes.NewReader(other), p, off) // anything but a panic
	}
}

func TestConcurrentReads(t *testing.T) {
	data := textData(4<<20, 12)
	gz := gzipLevel(t, data, 6)
	ix, _ := buildAll(t, gz, 256<<10)
	r := bytes.NewReader(gz)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(g), 0))
			p := make([]byte, 8192)
			for range 30 {
				off := rnd.Int64N(int64(len(data)))
				n, err := ix.ReadAt(r, p, off)
				if (err != nil && err != io.EOF) || !bytes.Equal(p[:n], data[off:min(off+8192, int64(len(data)))]) {
					errs <- fmt.Errorf("ReadAt %d: %v", off, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestEncoding(t *testing.T) {
	data := textData(3<<20, 13)
	gz := append(gzipLevel(t, data[:1<<20], 6), gzipLevel(t, data[1<<20:], 1)...)
	ix, _ := buildAll(t, gz, 256<<10)
	enc, err := ix.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var back Index
	if err := back.UnmarshalBinary(enc); err != nil {
		t.Fatal(err)
	}
	if back.Size() != ix.Size() || back.CompressedSize() != ix.CompressedSize() || back.Members() != 2 || back.Checkpoints() != ix.Checkpoints() {
		t.Fatal("fields differ")
	}
	checkReads(t, &back, gz, data, 1<<20)
	again, _ := back.MarshalBinary()
	if !bytes.Equal(again, enc) {
		t.Fatal("re-encoding differs")
	}
	t.Logf("%d checkpoints, %d bytes encoded (%.0f per MiB of output)", ix.Checkpoints(), len(enc), float64(len(enc))/float64(len(data))*(1<<20))
	for i := range enc {
		b := bytes.Clone(enc)
		b[i] ^= 0x10
		if err := new(Index).UnmarshalBinary(b); !errors.Is(err, ErrBadIndex) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	for n := range len(enc) {
		if err := new(Index).UnmarshalBinary(enc[:n]); !errors.Is(err, ErrBadIndex) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
}

func TestSectionReader(t *testing.T) {
	data := textData(1<<20, 14)
	gz := gzipLevel(t, data, 6)
	ix, _ := buildAll(t, gz, 128<<10)
	s := ix.ReaderAt(bytes.NewReader(gz))
	got, err := io.ReadAll(io.NewSectionReader(s, 0, s.Size()))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("SectionReader: %v", err)
	}
}
