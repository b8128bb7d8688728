package tarindex

import (
	"archive/tar"
	"bytes"
	"compress/bzip2"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

// richTar has every kind of entry the saved format must carry, including
// sparse ones (hand-made PAX 0.1 members, so the test needs no GNU tar).
func richTar(t testing.TB, nfiles int) []byte {
	ms := []member{
		{hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "bin/ping", Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 7, Gid: 9, Size: 4,
			ModTime:    time.Unix(1700000000, 999),
			PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20", "SCHILY.xattr.user.foo": "bar"}}, body: "ping"},
		{hdr: tar.Header{Name: "bin/ping6", Typeflag: tar.TypeLink, Linkname: "bin/ping"}},
		{hdr: tar.Header{Name: "lib", Typeflag: tar.TypeSymlink, Linkname: "usr/lib"}},
		{hdr: tar.Header{Name: "dev/tty", Typeflag: tar.TypeChar, Devmajor: 5, Devminor: 0}},
		{hdr: tar.Header{Name: "dev/fifo", Typeflag: tar.TypeFifo}},
	}
	for i := range nfiles {
		ms = append(ms, file(fmt.Sprintf("usr/share/doc/pkg%04d/README", i), strings.Repeat(fmt.Sprint(i), 1+i%300)))
	}
	var buf bytes.Buffer
	body := makeTar(t, tar.FormatPAX, ms...)
	buf.Write(body[:len(body)-1024]) // drop the end marker, append sparse members
	buf.Write(rawPAXMember([][2]string{
		{"GNU.sparse.major", "0"}, {"GNU.sparse.minor", "1"}, {"GNU.sparse.size", "100000"},
		{"GNU.sparse.numblocks", "3"}, {"GNU.sparse.map", "10,5,50000,7,100000,0"},
	}, "sparse/holes", []byte("hellosparsey")))
	buf.Write(rawPAXMember([][2]string{
		{"GNU.sparse.major", "0"}, {"GNU.sparse.minor", "1"}, {"GNU.sparse.size", "4096"},
		{"GNU.sparse.numblocks", "1"}, {"GNU.sparse.map", "4096,0"},
	}, "sparse/allhole", nil))
	buf.Write(make([]byte, 1024))
	return buf.Bytes()
}

func TestCacheIndexRoundTrip(t *testing.T) {
	tb := embed(richTar(t, 500), 3000)
	size := int64(len(tb) - 3000 - 777)
	want, err := Build(bytes.NewReader(tb), 3000, size)
	require.NoError(t, err)
	m := byName(want)
	require.NotNil(t, m["sparse/allhole"].Sparse)
	require.Len(t, m["sparse/holes"].Sparse, 2)
	require.Len(t, m["bin/ping"].Xattrs, 2)

	var warnings []error
	c := &Cache{Dir: t.TempDir(), Warn: func(err error) { warnings = append(warnings, err) }}
	got, err := c.Index("key-1", bytes.NewReader(tb), 3000, size, 0)
	require.NoError(t, err)
	require.Equal(t, want, got)
	sum := sha256.Sum256([]byte("key-1"))
	p := filepath.Join(c.Dir, "index", hex.EncodeToString(sum[:])+".idx")
	st1, err := os.Stat(p)
	require.NoError(t, err)

	loaded, err := c.Index("key-1", bytes.NewReader(tb), 3000, size, 0)
	require.NoError(t, err)
	require.Equal(t, want, loaded)
	require.Empty(t, warnings)
	st2, err := os.Stat(p)
	require.NoError(t, err)
	require.True(t, os.SameFile(st1, st2), "a valid index is loaded, not rewritten")
	requireNoTemps(t, c.Dir)

	// The loaded index reads like the built one.
	hole := byName(loaded)["sparse/holes"]
	buf := make([]byte, 20)
	n, err := hole.ReadAt(tb, buf, 48000+2000-3)
	require.NoError(t, err)
	require.Equal(t, "\x00\x00\x00sparsey\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", string(buf[:n]))
	// Appending to a loaded entry's slices must not clobber its neighbour.
	ping := byName(loaded)["bin/ping"]
	_ = append(ping.Xattrs, Xattr{Name: "evil"})
	require.Equal(t, want.Entries, loaded.Entries)
}

func TestCacheIndexEmptyAndNoDir(t *testing.T) {
	tb := makeTar(t, tar.FormatPAX)
	c := &Cache{Dir: t.TempDir()}
	for range 2 {
		ix, err := c.Index("empty", bytes.NewReader(tb), 0, int64(len(tb)), 0)
		require.NoError(t, err)
		require.Equal(t, &Index{End: 1024}, ix)
	}

	// Without a directory it only builds.
	wd := t.TempDir()
	t.Chdir(wd)
	ix, err := (&Cache{}).Index("k", bytes.NewReader(richTar(t, 3)), 0, int64(len(richTar(t, 3))), 0)
	require.NoError(t, err)
	require.NotEmpty(t, ix.Entries)
	ents, err := os.ReadDir(wd)
	require.NoError(t, err)
	require.Empty(t, ents)

	// A build error is returned and nothing is saved.
	_, err = c.Index("bad", bytes.NewReader([]byte("not a tar")), 0, 9, 0)
	require.ErrorIs(t, err, ErrNotTar)
}

func TestCacheIndexStaleSource(t *testing.T) {
	tb := richTar(t, 50)
	var warned atomic.Int32
	c := &Cache{Dir: t.TempDir(), Warn: func(error) { warned.Add(1) }}
	_, err := c.Index("k", bytes.NewReader(tb), 0, int64(len(tb)), 0)
	require.NoError(t, err)

	// Same key, different bytes: rename a member in place (header checksum
	// fixed up), as an edited tarball with a reused identity would be.
	mod := bytes.Clone(tb)
	i := bytes.Index(mod, []byte("usr/share/doc/pkg0003/README"))
	require.Positive(t, i)
	hdrAt := i - i%blockSize
	copy(mod[i:], "usr/share/doc/pkgXXXX/README")
	fixChecksum(mod[hdrAt : hdrAt+blockSize])
	ix, err := c.Index("k", bytes.NewReader(mod), 0, int64(len(mod)), 0)
	require.NoError(t, err)
	require.Equal(t, int32(1), warned.Load())
	require.Contains(t, byName(ix), "usr/share/doc/pkgXXXX/README")
	require.Equal(t, build(t, mod), ix)

	// Rebuilt and overwritten: the next load is silent.
	_, err = c.Index("k", bytes.NewReader(mod), 0, int64(len(mod)), 0)
	require.NoError(t, err)
	require.Equal(t, int32(1), warned.Load())

	// Same bytes at another base or with another size: rebuilt too.
	shifted := embed(mod, 512)
	ix, err = c.Index("k", bytes.NewReader(shifted), 512, int64(len(mod)), 0)
	require.NoError(t, err)
	require.Equal(t, int32(2), warned.Load())
	require.Equal(t, byName(build(t, mod))["bin/ping"].Offset+512, byName(ix)["bin/ping"].Offset)
}

func fixChecksum(b []byte) {
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
}

func TestCacheIndexCorrupt(t *testing.T) {
	tb := richTar(t, 20)
	want := build(t, tb)
	c := &Cache{Dir: t.TempDir()}
	_, err := c.Index("k", bytes.NewReader(tb), 0, int64(len(tb)), 0)
	require.NoError(t, err)
	sum := sha256.Sum256([]byte("k"))
	p := filepath.Join(c.Dir, "index", hex.EncodeToString(sum[:])+".idx")
	good, err := os.ReadFile(p)
	require.NoError(t, err)

	corruptions := map[string][]byte{
		"empty":     {},
		"garbage":   []byte(strings.Repeat("garbage!", 100)),
		"truncated": good[:len(good)/2],
		"no-crc":    good[:len(good)-4],
		"flipped":   flip(good, len(good)/3),
		"extended":  append(bytes.Clone(good), 0),
	}
	for name, bad := range corruptions {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(p, bad, 0o644))
			var warnings []error
			c.Warn = func(err error) { warnings = append(warnings, err) }
			ix, err := c.Index("k", bytes.NewReader(tb), 0, int64(len(tb)), 0)
			require.NoError(t, err)
			require.Equal(t, want, ix)
			require.Len(t, warnings, 1)
			require.ErrorIs(t, warnings[0], errBadIndex)
			rewritten, err := os.ReadFile(p)
			require.NoError(t, err)
			require.Equal(t, good, rewritten, "rebuilt and saved again")
		})
	}
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x40
	return b
}

// TestDecodeIndexNeverPanics mutates fields behind a valid checksum: the
// CRC is not a security boundary, so every reference must be checked.
func TestDecodeIndexNeverPanics(t *testing.T) {
	tb := richTar(t, 10)
	ix := build(t, tb)
	fp, err := fingerprint(bytes.NewReader(tb), 0, int64(len(tb)))
	require.NoError(t, err)
	good, err := encodeIndex(ix, 0, int64(len(tb)), fp)
	require.NoError(t, err)
	back, err := decodeIndex(good, 0, int64(len(tb)), fp)
	require.NoError(t, err)
	require.Equal(t, ix, back)

	rng := rand.New(rand.NewPCG(7, 7))
	for range 20000 {
		bad := bytes.Clone(good)
		for range 1 + rng.IntN(4) {
			i := rng.IntN(len(bad) - 4)
			if rng.IntN(2) == 0 {
				bad[i] ^= byte(1 << rng.IntN(8))
			} else {
				bad[i] = []byte{0, 0xff, 0x7f, 0x80}[rng.IntN(4)]
			}
		}
		if rng.IntN(10) == 0 {
			bad = bad[:rng.IntN(len(bad))]
		}
		if len(bad) >= 4 {
			body := bad[:len(bad)-4]
			binary.LittleEndian.PutUint32(bad[len(bad)-4:], crc32.Checksum(body, crcTable))
		}
		got, err := decodeIndex(bad, 0, int64(len(tb)), fp)
		if err != nil {
			continue
		}
		for _, e := range got.Entries {
			// Whatever got through must be readable without panicking.
			p := make([]byte, 64)
			_, _ = e.ReadAt(tb, p, 0)
			_ = e.Slice(tb, 0, 64)
		}
	}
}

func TestSampleRanges(t *testing.T) {
	for _, size := range []int64{0, 1, 4096, 2*sampleEdge + middleSamples*sampleMiddle, 1 << 20, 1<<40 + 3} {
		var prevEnd, total int64
		for _, r := range sampleRanges(size) {
			require.GreaterOrEqual(t, r[0], prevEnd, "size %d: ordered, not overlapping", size)
			require.Positive(t, r[1])
			require.LessOrEqual(t, r[1], int64(sampleEdge))
			prevEnd = r[0] + r[1]
			total += r[1]
		}
		require.LessOrEqual(t, prevEnd, size)
		if size <= 2*sampleEdge+middleSamples*sampleMiddle {
			require.Equal(t, size, total, "small sources are hashed whole")
		}
	}
}

// --- Decompress ---

func gzipped(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	_, err := w.Write(b)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return buf.Bytes()
}

func zstded(t testing.TB, b []byte) []byte {
	w, err := zstd.NewWriter(nil)
	require.NoError(t, err)
	defer w.Close()
	return w.EncodeAll(b, nil)
}

// failReader fails the test if the decompressor reads it.
type failReader struct{ t testing.TB }

func (f failReader) Read([]byte) (int, error) {
	f.t.Error("source read although the cache had the file")
	return 0, io.EOF
}

func TestDecompress(t *testing.T) {
	content := bytes.Repeat([]byte("layer tar bytes "), 50000)
	d := digest.FromBytes(content)
	for _, tc := range []struct {
		comp Compression
		data []byte
	}{
		{CompressionNone, content},
		{CompressionGzip, gzipped(t, content)},
		{CompressionZstd, zstded(t, content)},
		{CompressionGzip, append(gzipped(t, content[:1000]), gzipped(t, content[1000:])...)}, // multi-member (pigz -i, cat a.gz b.gz)
	} {
		t.Run(tc.comp.String(), func(t *testing.T) {
			c := &Cache{Dir: t.TempDir()}
			p, err := c.Decompress("k", d, tc.comp, bytes.NewReader(tc.data))
			require.NoError(t, err)
			require.Equal(t, filepath.Join(c.Dir, "blobs", "sha256", d.Encoded()), p)
			got, err := os.ReadFile(p)
			require.NoError(t, err)
			require.True(t, bytes.Equal(content, got))
			p2, err := c.Decompress("other key", d, tc.comp, failReader{t})
			require.NoError(t, err)
			require.Equal(t, p, p2)
			requireNoTemps(t, c.Dir)
		})
	}
}

func TestDecompressBzip2(t *testing.T) {
	// The standard library has no bzip2 writer; any valid stream will do.
	const hello = "BZh91AY&SY\xabk\xa1\xf1\x00\x00\x02\xd9\x80\x00\x10@\x00\x10\x00\x12d\xc0\x10 \x001\x00\xd3M\x04\x00\x1e\xa3\xefNQ\xa2\x07\x8b\xb9\"\x9c(HU\xb5\xd0\xf8\x80" // printf 'hello bzip2\\n' | bzip2
	want, err := io.ReadAll(bzip2.NewReader(strings.NewReader(hello)))
	require.NoError(t, err)
	require.Equal(t, "hello bzip2\n", string(want))
	c := &Cache{Dir: t.TempDir()}
	p, err := c.Decompress("k", digest.FromBytes(want), CompressionBzip2, strings.NewReader(hello))
	require.NoError(t, err)
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, want, got)
}

func TestDecompressByKey(t *testing.T) {
	c := &Cache{Dir: t.TempDir()}
	p1, err := c.Decompress("tarball@1", "", CompressionGzip, bytes.NewReader(gzipped(t, []byte("one"))))
	require.NoError(t, err)
	p2, err := c.Decompress("tarball@2", "", CompressionGzip, bytes.NewReader(gzipped(t, []byte("two"))))
	require.NoError(t, err)
	require.NotEqual(t, p1, p2)
	p1b, err := c.Decompress("tarball@1", "", CompressionGzip, failReader{t})
	require.NoError(t, err)
	require.Equal(t, p1, p1b)
	b, err := os.ReadFile(p1)
	require.NoError(t, err)
	require.Equal(t, "one", string(b))
}

func TestDecompressFailuresLeaveNothing(t *testing.T) {
	content := bytes.Repeat([]byte("some layer "), 10000)
	good := gzipped(t, content)
	corrupt := bytes.Clone(good)
	for i := 100; i < 200; i++ {
		corrupt[i] ^= 0x55
	}
	badCRC := bytes.Clone(good)
	badCRC[len(badCRC)-6] ^= 1 // the gzip trailer's CRC-32
	for name, tc := range map[string]struct {
		comp Compression
		src  []byte
		want digest.Digest
		is   error
		msg  string
	}{
		"digest mismatch gzip": {CompressionGzip, good, digest.FromString("something else"), ErrDigestMismatch, ""},
		"digest mismatch zstd": {CompressionZstd, zstded(t, content), digest.FromString("x"), ErrDigestMismatch, ""},
		"digest mismatch none": {CompressionNone, content, digest.FromString("x"), ErrDigestMismatch, ""},
		"corrupt gzip data":    {CompressionGzip, corrupt, digest.FromBytes(content), nil, "corrupt"},
		"gzip bad crc":         {CompressionGzip, badCRC, digest.FromBytes(content), gzip.ErrChecksum, "corrupt"},
		"truncated gzip":       {CompressionGzip, good[:len(good)/2], digest.FromBytes(content), io.ErrUnexpectedEOF, "corrupt or truncated"},
		"not gzip at all":      {CompressionGzip, []byte("plain text, not gzip"), "", gzip.ErrHeader, "corrupt gzip"},
		"gzip trailing junk":   {CompressionGzip, append(bytes.Clone(good), "junk after the stream"...), "", nil, "corrupt"},
		"truncated zstd":       {CompressionZstd, zstded(t, content)[:50], digest.FromBytes(content), nil, "zstd"},
		"xz unsupported":       {CompressionXz, []byte{0xfd, '7', 'z'}, "", nil, "not supported"},
	} {
		t.Run(name, func(t *testing.T) {
			c := &Cache{Dir: t.TempDir()}
			p, err := c.Decompress("k", tc.want, tc.comp, bytes.NewReader(tc.src))
			require.Error(t, err)
			require.Empty(t, p)
			if tc.is != nil {
				require.ErrorIs(t, err, tc.is)
			}
			require.ErrorContains(t, err, tc.msg)
			requireNoBlobs(t, c.Dir)
		})
	}
}

func TestDecompressRejectsBadDigests(t *testing.T) {
	root := t.TempDir()
	c := &Cache{Dir: filepath.Join(root, "cache")}
	for _, d := range []digest.Digest{"sha256:../../../escape", "sha256:abc", "md5:d41d8cd98f00b204e9800998ecf8427e", "nonsense"} {
		_, err := c.Decompress("k", d, CompressionNone, strings.NewReader("x"))
		require.Error(t, err, d)
	}
	_, err := os.Stat(filepath.Join(root, "escape"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	_, err = (&Cache{}).Decompress("k", "", CompressionNone, strings.NewReader("x"))
	require.ErrorContains(t, err, "no cache directory")
}

func TestDecompressSHA512(t *testing.T) {
	c := &Cache{Dir: t.TempDir()}
	d := digest.SHA512.FromString("content")
	p, err := c.Decompress("k", d, CompressionNone, strings.NewReader("content"))
	require.NoError(t, err)
	require.Equal(t, filepath.Join(c.Dir, "blobs", "sha512", d.Encoded()), p)
}

func TestDecompressConcurrent(t *testing.T) {
	content := bytes.Repeat([]byte("concurrent "), 200000)
	data := gzipped(t, content)
	d := digest.FromBytes(content)
	c := &Cache{Dir: t.TempDir()}
	var reads atomic.Int32
	var wg sync.WaitGroup
	paths := make([]string, 8)
	errs := make([]error, 8)
	for i := range paths {
		wg.Go(func() {
			src := &countingReader{r: bytes.NewReader(data), first: &reads}
			paths[i], errs[i] = c.Decompress("k", d, CompressionGzip, src)
		})
	}
	wg.Wait()
	for i := range paths {
		require.NoError(t, errs[i])
		require.Equal(t, paths[0], paths[i])
	}
	require.Equal(t, int32(1), reads.Load(), "the lock lets one caller decompress; the others find its file")
	got, err := os.ReadFile(paths[0])
	require.NoError(t, err)
	require.True(t, bytes.Equal(content, got))
	requireNoTemps(t, c.Dir)
}

// TestDecompressRemovesStaleTemps: a writer killed mid-way leaves its
// temporary file; the next writer for the same blob clears it.
func TestDecompressRemovesStaleTemps(t *testing.T) {
	c := &Cache{Dir: t.TempDir()}
	d := digest.FromString("x")
	dir := filepath.Join(c.Dir, "blobs", "sha256")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	stale := filepath.Join(dir, tmpPrefix(d.Encoded())+"12345")
	require.NoError(t, os.WriteFile(stale, []byte("partial"), 0o644))
	_, err := c.Decompress("k", d, CompressionNone, strings.NewReader("x"))
	require.NoError(t, err)
	requireNoTemps(t, c.Dir)
}

type countingReader struct {
	r     io.Reader
	once  sync.Once
	first *atomic.Int32
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.once.Do(func() { c.first.Add(1) })
	return c.r.Read(p)
}

func requireNoTemps(t *testing.T, dir string) {
	t.Helper()
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".tmp-") {
			return errors.New("temporary file left behind: " + p)
		}
		return nil
	}))
}

// requireNoBlobs checks that no regular file exists under blobs/ (lock
// files live elsewhere and hold no content).
func requireNoBlobs(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(filepath.Join(dir, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			return errors.New("file left in the cache: " + p)
		}
		return nil
	})
	require.NoError(t, err)
}

func BenchmarkBuild(b *testing.B) {
	tb := richTar(b, 20000)
	b.SetBytes(int64(len(tb)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Build(bytes.NewReader(tb), 0, int64(len(tb))); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLoadIndex(b *testing.B) {
	tb := richTar(b, 20000)
	c := &Cache{Dir: b.TempDir()}
	if _, err := c.Index("k", bytes.NewReader(tb), 0, int64(len(tb)), 0); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Index("k", bytes.NewReader(tb), 0, int64(len(tb)), 0); err != nil {
			b.Fatal(err)
		}
	}
}

// Temporaries that no later call would look for (an interrupted
// decompression of a tarball since changed or removed) are swept once
// they have gone unwritten for an hour; fresh ones, maybe another
// process's work in progress, are left alone.
func TestDecompressSweepsOldTemps(t *testing.T) {
	c := &Cache{Dir: t.TempDir()}
	dir := filepath.Join(c.Dir, "blobs", "key")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	old := filepath.Join(dir, tmpPrefix("abandoned")+"1")
	fresh := filepath.Join(dir, tmpPrefix("in-progress")+"2")
	for _, p := range []string{old, fresh} {
		require.NoError(t, os.WriteFile(p, []byte("partial"), 0o644))
	}
	long := time.Now().Add(-2 * time.Hour)
	require.NoError(t, os.Chtimes(old, long, long))
	_, err := c.Decompress("k", digest.FromString("x"), CompressionNone, strings.NewReader("x"))
	require.NoError(t, err)
	require.NoFileExists(t, old)
	require.FileExists(t, fresh)
}

// Saving an index sweeps them too: since compressed layers are read in
// place, a mount seldom decompresses anything.
func TestIndexSweepsOldTemps(t *testing.T) {
	c := &Cache{Dir: t.TempDir()}
	dir := filepath.Join(c.Dir, "index")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	old := filepath.Join(dir, tmpPrefix("abandoned.idx")+"1")
	require.NoError(t, os.WriteFile(old, []byte("partial"), 0o644))
	long := time.Now().Add(-2 * time.Hour)
	require.NoError(t, os.Chtimes(old, long, long))
	tb := makeTar(t, tar.FormatPAX, file("a", "x"))
	_, err := c.Index("k", bytes.NewReader(tb), 0, int64(len(tb)), 0)
	require.NoError(t, err)
	require.NoFileExists(t, old)
}

// A decompression bomb (64 MiB of zeros in 64 KiB of gzip) stops at its
// limit, leaving nothing in the cache.
func TestDecompressBomb(t *testing.T) {
	zeros := make([]byte, 64<<20)
	bomb := gzipped(t, zeros)
	c := &Cache{Dir: t.TempDir(), MinLimit: 1 << 20}
	_, err := c.Decompress("bomb", digest.FromBytes(zeros), CompressionGzip, bytes.NewReader(bomb))
	require.ErrorIs(t, err, ErrTooLarge)
	requireNoTemps(t, c.Dir)
	blobs, _ := filepath.Glob(filepath.Join(c.Dir, "blobs", "*", "*"))
	require.Empty(t, blobs)

	c.MaxRatio = 2000 // 64 KiB × 2000 holds it
	_, err = c.Decompress("bomb", digest.FromBytes(zeros), CompressionGzip, bytes.NewReader(bomb))
	require.NoError(t, err)
}
