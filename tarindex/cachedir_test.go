package tarindex

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// put writes a cache file of n bytes, its sidecars as given, all with
// mtime at.
func put(t *testing.T, p string, n int, at time.Time, sidecars ...string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, bytes.Repeat([]byte{'x'}, n), 0o644))
	require.NoError(t, os.Chtimes(p, at, at))
	for _, s := range sidecars {
		require.NoError(t, os.WriteFile(p+s, []byte("sidecar\n"), 0o644))
		require.NoError(t, os.Chtimes(p+s, at, at))
	}
}

func gzipOf(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, err := zw.Write(b)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

func zstdOf(t *testing.T, b []byte) []byte {
	zw, err := zstd.NewWriter(nil)
	require.NoError(t, err)
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("read: not expected") }

func smallTar(t *testing.T) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := range 10 {
		body := strings.Repeat("data", i)
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%d", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}))
		_, err := tw.Write([]byte(body))
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	return buf.Bytes()
}

// age sets the mtime of cache file p and its sidecars.
func age(t *testing.T, p string, at time.Time) {
	t.Helper()
	for _, s := range []string{"", stampSuffix, sourceSuffix} {
		if exists(p + s) {
			require.NoError(t, os.Chtimes(p+s, at, at))
		}
	}
}

func paths(items []CacheItem) []string {
	var ps []string
	for _, it := range items {
		ps = append(ps, it.Path)
	}
	return ps
}

func byItemPath(items []CacheItem) map[string]CacheItem {
	m := map[string]CacheItem{}
	for _, it := range items {
		m[it.Path] = it
	}
	return m
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func blobPath(dir string, i int) string {
	return filepath.Join(dir, "blobs", "sha256", fmt.Sprintf("%064x", i))
}

func TestCacheList(t *testing.T) {
	dir := t.TempDir()
	c := &Cache{Dir: dir}
	items, err := c.List()
	require.NoError(t, err)
	require.Empty(t, items, "an empty directory")
	items, err = (&Cache{Dir: filepath.Join(dir, "missing")}).List()
	require.NoError(t, err)
	require.Empty(t, items, "a missing directory is an empty cache")

	now := time.Now()
	idx := filepath.Join(dir, "index", strings.Repeat("a", 64)+".idx")
	gzi := filepath.Join(dir, "index", strings.Repeat("a", 64)+".gzi")
	zsi := filepath.Join(dir, "index", strings.Repeat("b", 64)+".zsi")
	blob := blobPath(dir, 1)
	keyBlob := filepath.Join(dir, "blobs", "key", strings.Repeat("c", 64))
	marker := filepath.Join(dir, "verified", strings.Repeat("d", 64))
	youngTmp := filepath.Join(dir, "index", ".tmp-x.idx-123")
	oldTmp := filepath.Join(dir, "blobs", "sha256", ".tmp-y-456")
	orphan := filepath.Join(dir, "blobs", "sha256", strings.Repeat("e", 64))
	put(t, idx, 10000, now.Add(-5*time.Hour))
	put(t, gzi, 3000, now.Add(-4*time.Hour))
	put(t, zsi, 3000, now.Add(-3*time.Hour))
	put(t, blob, 50000, now.Add(-6*time.Hour), ".stamp")
	put(t, keyBlob, 20000, now.Add(-2*time.Hour), ".stamp")
	put(t, marker, 0, now.Add(-7*time.Hour))
	put(t, youngTmp, 100, now.Add(-time.Minute))
	put(t, oldTmp, 100, now.Add(-2*staleAfter))
	put(t, orphan+".stamp", 10, now.Add(-8*time.Hour)) // its blob is gone
	put(t, filepath.Join(dir, "locks", "sha256-x.lock"), 0, now)
	put(t, filepath.Join(dir, "unknown", "file"), 10, now)
	c.Note(idx, "/img/app.tar@1536")
	c.Note(blob, "/img/app.tar@4096 sha256:1111")
	c.Note(blob, "/img/other.tar@512 sha256:1111")
	require.NoError(t, os.Chtimes(idx+sourceSuffix, now.Add(-5*time.Hour), now.Add(-5*time.Hour)))
	require.NoError(t, os.Chtimes(blob+sourceSuffix, now.Add(-6*time.Hour), now.Add(-6*time.Hour)))

	items, err = c.List()
	require.NoError(t, err)
	require.Equal(t, []string{orphan, marker, blob, idx, gzi, zsi, keyBlob, oldTmp, youngTmp}, paths(items), "least recently used first; locks and unknown files left out")
	m := byItemPath(items)
	for p, kind := range map[string]string{idx: KindIndex, gzi: KindCheckpoints, zsi: KindCheckpoints, blob: KindDecompressed,
		keyBlob: KindDecompressed, marker: KindVerified, youngTmp: KindTemporary, oldTmp: KindTemporary, orphan: KindDecompressed} {
		require.Equal(t, kind, m[p].Kind, p)
	}
	require.GreaterOrEqual(t, m[blob].Size, int64(50000+2))
	require.GreaterOrEqual(t, m[idx].Size, int64(10000))
	require.Zero(t, m[marker].Size)
	require.Equal(t, "/img/app.tar@4096 sha256:1111; /img/other.tar@512 sha256:1111", m[blob].Source)
	require.Equal(t, "/img/app.tar@1536", m[idx].Source)
	require.Empty(t, m[gzi].Source)
	require.WithinDuration(t, now.Add(-6*time.Hour), m[blob].LastUse, time.Second)
	require.True(t, m[youngTmp].InUse, "a temporary being written")
	require.False(t, m[oldTmp].InUse, "a temporary left by a dead writer")
	for _, p := range []string{idx, blob, keyBlob, marker} {
		require.False(t, m[p].InUse, p)
	}
	require.Equal(t, Total(items), func() (n int64) {
		for _, it := range items {
			n += it.Size
		}
		return n
	}())
}

func TestCacheNote(t *testing.T) {
	dir := t.TempDir()
	c := &Cache{Dir: dir}
	p := blobPath(dir, 1)
	c.Note(p, "missing file")
	require.False(t, exists(p+sourceSuffix), "no note for a file that is not there")
	put(t, p, 10, time.Now())
	for i := range 6 {
		c.Note(p, fmt.Sprintf("source %d\nsecond line", i))
		c.Note(p, fmt.Sprintf("source %d\nsecond line", i)) // once only
	}
	c.Note(p, "  ")
	require.Equal(t, []string{"source 2 second line", "source 3 second line", "source 4 second line", "source 5 second line"}, readSources(p))

	// A sidecar of garbage or too long is an unknown source, not an error.
	require.NoError(t, os.WriteFile(p+sourceSuffix, bytes.Repeat([]byte("y"), 100<<10), 0o644))
	items, err := c.List()
	require.NoError(t, err)
	require.Len(t, items, 1)
	require.Empty(t, items[0].Source)

	require.Equal(t, "/img/app.tar@outer", sourceOf("dev=1,ino=2,size=3,mtime=4,ctime=5,path=/img/app.tar@outer"))
	require.Equal(t, "decompressed:sha256:ab", sourceOf("decompressed:sha256:ab"))
}

// The least recently used go first, sidecars with them, until the cache
// fits; stale temporaries always go, young ones never.
func TestCachePruneLRU(t *testing.T) {
	dir := t.TempDir()
	c := &Cache{Dir: dir}
	now := time.Now()
	for i := range 5 {
		put(t, blobPath(dir, i), 40000, now.Add(-time.Duration(10-i)*time.Hour), ".stamp", ".src")
	}
	idx := filepath.Join(dir, "index", strings.Repeat("a", 64)+".idx")
	put(t, idx, 40000, now.Add(-7*time.Hour+time.Minute), ".src") // between blobs 3 and 4
	youngTmp := filepath.Join(dir, "blobs", "sha256", ".tmp-young")
	oldTmp := filepath.Join(dir, "index", ".tmp-old")
	put(t, youngTmp, 40000, now)
	put(t, oldTmp, 40000, now.Add(-2*staleAfter))
	before, err := c.List()
	require.NoError(t, err)
	size := byItemPath(before)[blobPath(dir, 0)].Size

	// Room for all but the two oldest (and the stale temporary).
	limit := Total(before) - byItemPath(before)[oldTmp].Size - 2*size
	removed, err := c.Prune(limit)
	require.NoError(t, err)
	require.Equal(t, []string{oldTmp, blobPath(dir, 0), blobPath(dir, 1)}, paths(removed))
	for _, p := range paths(removed) {
		for _, s := range []string{"", stampSuffix, sourceSuffix} {
			require.False(t, exists(p+s), p+s)
		}
	}
	after, err := c.List()
	require.NoError(t, err)
	require.Equal(t, limit, Total(after))
	require.Equal(t, []string{blobPath(dir, 2), blobPath(dir, 3), idx, blobPath(dir, 4), youngTmp}, paths(after))

	// Already small enough: nothing goes.
	removed, err = c.Prune(limit)
	require.NoError(t, err)
	require.Empty(t, removed)

	// A use moves an item to the back of the queue.
	c.Touch(blobPath(dir, 2))
	c.Touch(idx)
	require.True(t, isRegular(blobPath(dir, 2)))
	removed, err = c.Prune(Total(after) - 1)
	require.NoError(t, err)
	require.Equal(t, []string{blobPath(dir, 3)}, paths(removed))

	// Zero: everything but the young temporary.
	removed, err = c.Prune(0)
	require.NoError(t, err)
	require.Len(t, removed, 3)
	after, err = c.List()
	require.NoError(t, err)
	require.Equal(t, []string{youngTmp}, paths(after))
}

// Touch records a use on a decompressed copy's stamp, never on the copy:
// the copy stays intact (the next Decompress trusts it).
func TestCacheTouchKeepsStamp(t *testing.T) {
	c := &Cache{Dir: t.TempDir()}
	data := []byte(strings.Repeat("layer bytes ", 1000))
	want := digest.FromBytes(data)
	p, err := c.Decompress("k", want, CompressionGzip, bytes.NewReader(gzipOf(t, data)))
	require.NoError(t, err)
	old := time.Now().Add(-48 * time.Hour)
	require.NoError(t, os.Chtimes(p, old, old))
	require.NoError(t, writeStamp(p)) // as if written two days ago
	require.NoError(t, os.Chtimes(p+stampSuffix, old, old))
	require.NoError(t, os.Chtimes(p+sourceSuffix, old, old))
	require.True(t, intact(p))
	fi, err := os.Stat(p)
	require.NoError(t, err)
	items, err := c.List()
	require.NoError(t, err)
	require.Len(t, items, 1)
	require.WithinDuration(t, old, items[0].LastUse, time.Second)

	c.Touch(p)
	require.True(t, intact(p))
	fi2, err := os.Stat(p)
	require.NoError(t, err)
	require.Equal(t, fi.ModTime(), fi2.ModTime(), "the copy itself is not touched")
	items, err = c.List()
	require.NoError(t, err)
	require.Len(t, items, 1)
	require.WithinDuration(t, time.Now(), items[0].LastUse, time.Minute)
	require.Equal(t, "k "+want.String(), items[0].Source)

	// Decompress finding the copy records a use too, and does not redo it.
	require.NoError(t, os.Chtimes(p+stampSuffix, old, old))
	p2, err := c.Decompress("k", want, CompressionGzip, errReader{})
	require.NoError(t, err)
	require.Equal(t, p, p2)
	items, err = c.List()
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), items[0].LastUse, time.Minute)
}

// A held copy is never pruned nor cleared; once released it may be.
func TestCacheHold(t *testing.T) {
	dir := t.TempDir()
	c := &Cache{Dir: dir}
	old := time.Now().Add(-24 * time.Hour)
	for i := range 3 {
		put(t, blobPath(dir, i), 10000, old.Add(time.Duration(i)*time.Minute), ".stamp")
	}
	marker := filepath.Join(dir, "verified", "m")
	put(t, marker, 0, old)
	release, err := c.Hold(blobPath(dir, 0))
	require.NoError(t, err)
	items, err := c.List()
	require.NoError(t, err)
	m := byItemPath(items)
	require.True(t, m[blobPath(dir, 0)].InUse)
	require.False(t, m[blobPath(dir, 1)].InUse)
	require.WithinDuration(t, time.Now(), m[blobPath(dir, 0)].LastUse, time.Minute, "holding is a use")
	require.Equal(t, blobPath(dir, 0), items[len(items)-1].Path)

	removed, err := c.Prune(0)
	require.NoError(t, err)
	require.Equal(t, []string{blobPath(dir, 1), blobPath(dir, 2)}, paths(removed), "the verified marker takes no space and stays")
	require.True(t, intact(blobPath(dir, 0)) || exists(blobPath(dir, 0)))
	removed, err = c.Clear()
	require.NoError(t, err)
	require.Equal(t, []string{marker}, paths(removed))
	require.True(t, exists(blobPath(dir, 0)))

	// A second holder; the copy is free once both let go.
	release2, err := c.Hold(blobPath(dir, 0))
	require.NoError(t, err)
	release()
	release() // idempotent
	removed, err = c.Clear()
	require.NoError(t, err)
	require.Empty(t, removed)
	release2()
	removed, err = c.Clear()
	require.NoError(t, err)
	require.Equal(t, []string{blobPath(dir, 0)}, paths(removed))

	// Pruned before it was held: Hold says so, and Decompress is redone.
	_, err = c.Hold(blobPath(dir, 0))
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.ErrorContains(t, err, blobPath(dir, 0))
	_, err = c.Hold("/etc/passwd")
	require.ErrorContains(t, err, "not a file of the cache")
	_, err = c.Hold(dir)
	require.Error(t, err)
}

// TestCacheHoldChild is the other process of TestCacheHoldOtherProcess:
// it holds a copy until its stdin closes.
func TestCacheHoldChild(t *testing.T) {
	p := os.Getenv("IMGMOUNT_TEST_HOLD")
	if p == "" {
		t.Skip("run by TestCacheHoldOtherProcess")
	}
	release, err := (&Cache{Dir: os.Getenv("IMGMOUNT_TEST_HOLD_DIR")}).Hold(p)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("held")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	release()
}

func TestCacheHoldOtherProcess(t *testing.T) {
	dir := t.TempDir()
	c := &Cache{Dir: dir}
	old := time.Now().Add(-24 * time.Hour)
	put(t, blobPath(dir, 0), 10000, old, ".stamp")
	put(t, blobPath(dir, 1), 10000, old, ".stamp")

	cmd := exec.Command(os.Args[0], "-test.run=^TestCacheHoldChild$")
	cmd.Env = append(os.Environ(), "IMGMOUNT_TEST_HOLD="+blobPath(dir, 0), "IMGMOUNT_TEST_HOLD_DIR="+dir)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "held\n", line)

	items, err := c.List()
	require.NoError(t, err)
	require.True(t, byItemPath(items)[blobPath(dir, 0)].InUse)
	removed, err := c.Clear()
	require.NoError(t, err)
	require.Equal(t, []string{blobPath(dir, 1)}, paths(removed))
	require.True(t, exists(blobPath(dir, 0)))

	require.NoError(t, stdin.Close())
	require.NoError(t, cmd.Wait())
	removed, err = c.Clear()
	require.NoError(t, err)
	require.Equal(t, []string{blobPath(dir, 0)}, paths(removed))
}

// A copy being written (Decompress holds its lock) is not removed, nor
// is its temporary.
func TestCachePruneSkipsWriter(t *testing.T) {
	dir := t.TempDir()
	c := &Cache{Dir: dir}
	put(t, blobPath(dir, 0), 10000, time.Now().Add(-24*time.Hour), ".stamp")
	locked, unlock := c.lock(fmt.Sprintf("sha256-%064x", 0))
	require.True(t, locked)
	removed, err := c.Clear()
	require.NoError(t, err)
	require.Empty(t, removed)
	unlock()
	removed, err = c.Clear()
	require.NoError(t, err)
	require.Len(t, removed, 1)
}

// Cache.MaxBytes: writing a copy prunes the least recently used, sparing
// the new copy and whatever was used in the last minutes.
func TestCacheMaxBytes(t *testing.T) {
	dir := t.TempDir()
	var warnings []error
	c := &Cache{Dir: dir, Warn: func(err error) { warnings = append(warnings, err) }}
	now := time.Now()
	put(t, blobPath(dir, 0), 100000, now.Add(-3*time.Hour), ".stamp")
	put(t, blobPath(dir, 1), 100000, now.Add(-2*time.Hour), ".stamp")
	put(t, blobPath(dir, 2), 100000, now.Add(-pruneGrace/2), ".stamp") // a mount opening now
	items, err := c.List()
	require.NoError(t, err)
	c.MaxBytes = Total(items) // full

	data := []byte(strings.Repeat("new layer ", 5000))
	p, err := c.Decompress("dev=1,ino=2,path=/img/new.tar@512", digest.FromBytes(data), CompressionGzip, bytes.NewReader(gzipOf(t, data)))
	require.NoError(t, err)
	require.True(t, intact(p))
	require.False(t, exists(blobPath(dir, 0)), "the oldest made room")
	require.True(t, exists(blobPath(dir, 1)))
	items, err = c.List()
	require.NoError(t, err)
	require.LessOrEqual(t, Total(items), c.MaxBytes)
	require.Equal(t, "/img/new.tar@512 "+digest.FromBytes(data).String(), byItemPath(items)[p].Source)

	// Bigger than the bound: only the recent stay, over it.
	c.MaxBytes = 1
	data2 := []byte(strings.Repeat("another layer ", 5000))
	p2, err := c.Decompress("k2", digest.FromBytes(data2), CompressionZstd, bytes.NewReader(zstdOf(t, data2)))
	require.NoError(t, err)
	items, err = c.List()
	require.NoError(t, err)
	require.ElementsMatch(t, []string{blobPath(dir, 2), p, p2}, paths(items))
	require.Empty(t, warnings)

	// Saving an index prunes too; loading it records a use.
	for _, q := range []string{p, p2, blobPath(dir, 2)} {
		age(t, q, now.Add(-time.Hour))
	}
	tb := smallTar(t)
	_, err = c.Index("dev=1,path=/img/x.tar@0", bytes.NewReader(tb), 0, int64(len(tb)), 0)
	require.NoError(t, err)
	items, err = c.List()
	require.NoError(t, err)
	require.Len(t, items, 1)
	idx := items[0]
	require.Equal(t, KindIndex, idx.Kind)
	require.Equal(t, "/img/x.tar@0", idx.Source)
	age(t, idx.Path, now.Add(-time.Hour))
	_, err = c.Index("dev=1,path=/img/x.tar@0", bytes.NewReader(tb), 0, int64(len(tb)), 0)
	require.NoError(t, err)
	items, err = c.List()
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), items[0].LastUse, time.Minute)

	// Without a bound nothing is pruned.
	c.MaxBytes = 0
	put(t, blobPath(dir, 9), 100000, now.Add(-3*time.Hour), ".stamp")
	_, err = c.Decompress("k3", "", CompressionGzip, bytes.NewReader(gzipOf(t, data)))
	require.NoError(t, err)
	require.True(t, exists(blobPath(dir, 9)))
}

// Failures to remove are reported with the path, and pruning goes on.
func TestCachePruneErrors(t *testing.T) {
	dir := t.TempDir()
	c := &Cache{Dir: dir}
	old := time.Now().Add(-24 * time.Hour)
	idx := filepath.Join(dir, "index", "a.idx")
	put(t, idx, 1000, old)
	// A sidecar's name taken by a directory that is not empty: not even
	// root removes it.
	put(t, filepath.Join(idx+sourceSuffix, "x"), 10, time.Now())
	put(t, blobPath(dir, 0), 1000, old.Add(time.Minute), ".stamp")
	removed, err := c.Prune(0)
	require.Error(t, err)
	require.ErrorContains(t, err, "cache: remove "+idx+sourceSuffix+":")
	require.True(t, errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST), "%v", err)
	require.Equal(t, []string{blobPath(dir, 0), filepath.Join(idx+sourceSuffix, "x")}, paths(removed))
	require.False(t, exists(idx), "the file itself went first")
}
