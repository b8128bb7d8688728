package tarindex

import (
	"compress/bzip2"
	"crypto/sha256"
	_ "crypto/sha512" // lets go-digest verify sha512 digests (OCI allows them)
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Cache keeps saved indexes and decompressed layers under Dir.
//
// Layout:
//
//	index/<sha256(key)>.idx        saved indexes (see saved.go for the format)
//	blobs/<alg>/<hex>              decompressed streams named by their digest
//	blobs/key/<sha256(key)>        decompressed streams with no digest to check
//	locks/                         per-blob lock files (flock), never removed
//
// It is safe for concurrent use by several goroutines and processes: every
// file is written under a temporary name and renamed into place, so a final
// name only ever holds complete content.
type Cache struct {
	Dir string
	// Warn, if set, hears about problems that do not fail the call: a saved
	// index that was stale or corrupt and got rebuilt, or one that could
	// not be saved. The cache is an optimisation; these are for logging.
	Warn func(error)

	// A decompressed stream may grow to MaxRatio times its compressed size
	// (default 100), or MinLimit bytes (default 64 GiB) if that is more,
	// and never past the cache filesystem's free space less a reserve:
	// past that, Decompress stops with ErrTooLarge and removes what it
	// wrote. Real layers compress 2 to 10 times; a bomb (a tiny stream
	// of terabytes) is stopped before it fills the disk.
	MaxRatio int64
	MinLimit int64

	// MaxBytes, if set, bounds the cache directory: after a decompressed
	// copy or an index is written, the least recently used items are
	// removed until the cache takes at most MaxBytes, sparing those in
	// use and those used in the last minutes (see cachedir.go).
	MaxBytes int64

	mu     sync.Mutex
	hashes map[string]*earlyHash // sha256 of regions being indexed, for VerifyOnce
	swept  sync.Once
}

// ErrTooLarge: a compressed stream decompresses to more than the cache
// allows it: Cache.MaxRatio times its compressed size or Cache.MinLimit,
// whichever is more (a decompression bomb), whether indexed in place
// (IndexCompressed, IndexOuter) or decompressed into the cache
// (Decompress, which also stops at the cache filesystem's free space less
// a reserve, and applies the ratio only to a source that tells its size).
var ErrTooLarge = errors.New("decompresses to more than allowed")

// limit is how many bytes the decompressed copy of src may take: src's
// compressed size is known when it tells it (bytes.Reader does).
func (c *Cache) limit(src io.Reader) int64 {
	limit := int64(math.MaxInt64)
	if s, ok := src.(interface{ Size() int64 }); ok {
		limit = c.inflateLimit(s.Size())
	}
	var st unix.Statfs_t
	if unix.Statfs(c.Dir, &st) == nil {
		total, free := int64(st.Blocks)*st.Bsize, int64(st.Bavail)*st.Bsize
		reserve := min(1<<30, total/20) // what others on the filesystem keep
		limit = min(limit, max(free-reserve, 0))
	}
	return limit
}

// earlyHash is the sha256 of a region, computed in the background while
// its index is built (see Index and VerifyOnce).
type earlyHash struct {
	done chan struct{}
	stop atomic.Bool
	size int64
	sum  digest.Digest // "" if stopped or failed
}

func (c *Cache) warn(err error) {
	if c.Warn != nil {
		c.Warn(err)
	}
}

func keyName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// Index returns the index of the tar stream in [base, base+size) of r,
// loading it from the cache when a valid saved copy exists under key, else
// building it and saving it. key must identify the bytes (e.g. the file's
// device, inode, size and mtime plus base); a saved index is still checked
// against the source and rebuilt when stale or corrupt, never trusted.
// With Dir empty it just builds. Failing to save is not an error (see Warn).
// maxEntries bounds the entries as BuildMax does, for saved indexes too.
func (c *Cache) Index(key string, r io.ReaderAt, base, size int64, maxEntries int) (*Index, error) {
	if c.Dir == "" {
		return BuildMax(r, base, size, maxEntries)
	}
	fp, err := fingerprint(r, base, size)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", key, err)
	}
	p := filepath.Join(c.Dir, "index", keyName(key)+".idx")
	if ix, err := loadIndex(p, base, size, fp); err == nil {
		c.Touch(p)
		if maxEntries > 0 && ix.Cost() > maxEntries {
			return nil, tooMany(maxEntries)
		}
		return ix, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		c.warn(fmt.Errorf("saved index for %s (%s), rebuilding: %w", key, p, err))
	}
	// A region inside a larger file (base > 0: an uncompressed layer in
	// its tarball) is hashed on the first mount too, by VerifyOnce. Doing
	// it now, on the other core, overlaps the hash with the index build,
	// and the hash's sequential reads fetch the pages Build will need.
	var eh *earlyHash
	if base > 0 {
		eh = c.startHash(key, r, base, size)
	}
	ix, err := BuildMax(r, base, size, maxEntries)
	if err != nil {
		if eh != nil {
			c.takeHash(key)
			eh.cancel()
		}
		return nil, err
	}
	c.sweepOnce()
	if err := saveIndex(p, ix, base, size, fp); err != nil {
		c.warn(fmt.Errorf("save index for %s: %w", key, err))
	} else {
		c.saved(sourceOf(key), p)
	}
	return ix, nil
}

func loadIndex(p string, base, size int64, fp [32]byte) (*Index, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return decodeFrom(f, fi.Size(), base, size, fp)
}

func saveIndex(p string, ix *Index, base, size int64, fp [32]byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	// No fsync: after a crash a torn index fails its checksum and is rebuilt.
	return writeAtomic(p, func(f *os.File) error {
		return writeIndex(f, ix, base, size, fp)
	}, false)
}

// writeAtomic writes a temporary file beside dst with fill and renames it to
// dst; on any error the temporary file is removed. With durable set the data
// is synced before the rename, so that after a crash dst is either absent or
// complete (rename alone does not order data before the name on ext4/xfs).
func writeAtomic(dst string, fill func(*os.File) error, durable bool) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(dst), tmpPrefix(filepath.Base(dst)))
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = fill(tmp); err != nil {
		return err
	}
	if durable {
		if err = tmp.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", tmp.Name(), err)
		}
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), dst); err != nil {
		return err
	}
	if durable {
		syncDir(filepath.Dir(dst))
	}
	return nil
}

func tmpPrefix(name string) string { return ".tmp-" + name + "-" }

// syncDir makes a rename durable. Best effort: some filesystems refuse
// fsync on directories, and the rename itself has already succeeded.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// Decompress returns the path of a cache file holding the decompressed
// stream src (compressed with comp), creating it if needed. If want is not
// empty the decompressed bytes must hash to it (else an error wrapping
// ErrDigestMismatch, and nothing is left in the cache); the file is then
// named by want, so later calls find it without decompressing. If want is
// empty the file is named by key.
//
// An existing file is trusted by its name alone: files only reach their
// final name by a rename after verification and an fsync, so the name
// proves the content (rehashing a layer on every mount would cost as much
// as decompressing it). Concurrent calls for the same name, in this process
// or others, wait on a lock file and the later ones find the finished file.
// Gzip input may hold several concatenated members (pigz, appended streams).
func (c *Cache) Decompress(key string, want digest.Digest, comp Compression, src io.Reader) (string, error) {
	if c.Dir == "" {
		return "", fmt.Errorf("decompress %s: no cache directory", key)
	}
	rel, err := blobName(key, want)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(c.Dir, "blobs", rel)
	if intact(dst) {
		c.Touch(dst)
		return dst, nil
	}
	c.sweepOnce()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", fmt.Errorf("cache: %w", err)
	}
	locked, unlock := c.lock(strings.ReplaceAll(rel, "/", "-"))
	defer unlock()
	if intact(dst) {
		c.Touch(dst)
		return dst, nil // another caller finished it while we waited
	}
	if locked {
		removeStale(dst) // temporaries of a writer that died holding this lock
	}
	os.Remove(dst) // changed since it was written: decompress it again
	limit := c.limit(src)
	err = writeAtomic(dst, func(f *os.File) error {
		return decompressTo(f, want, comp, src, limit)
	}, true)
	if err != nil {
		return "", fmt.Errorf("decompressing %s: %w", comp, err) // the caller names the blob; the key is the cache's business
	}
	if err := writeStamp(dst); err != nil {
		return "", fmt.Errorf("decompress %s: %w", key, err)
	}
	c.saved(strings.TrimSpace(sourceOf(key)+" "+want.String()), dst)
	return dst, nil
}

// A stamp beside each cached blob records its size, inode, mtime and ctime
// as written (the ctime catches an edit that restored the mtime). A blob whose stat no longer matches was changed after it was
// verified (edited, truncated, replaced): it is decompressed again rather
// than served, without the cost of rehashing it on every mount.
func stampOf(p string) (string, bool) {
	fi, err := os.Lstat(p)
	if err != nil || !fi.Mode().IsRegular() {
		return "", false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", false
	}
	return fmt.Sprintf("%d %d %d %d\n", fi.Size(), st.Ino, fi.ModTime().UnixNano(), st.Ctim.Nano()), true
}

func writeStamp(blob string) error {
	stamp, ok := stampOf(blob)
	if !ok {
		return fmt.Errorf("stat %s: not a regular file", blob)
	}
	return writeAtomic(blob+".stamp", func(f *os.File) error {
		_, err := f.WriteString(stamp)
		return err
	}, true)
}

func intact(blob string) bool {
	stamp, ok := stampOf(blob)
	if !ok {
		return false
	}
	saved, err := os.ReadFile(blob + ".stamp")
	return err == nil && string(saved) == stamp
}

// VerifyOnce checks that data hashes to want, unless a check of the same
// bytes under key already succeeded. key must change whenever the bytes may
// have (e.g. a file's device, inode, size and mtime plus an offset). It is
// how uncompressed layers get their diff_id checked on the first mount only.
// Without a cache directory it checks every time.
func (c *Cache) VerifyOnce(key string, want digest.Digest, data []byte) error {
	if err := want.Validate(); err != nil {
		return fmt.Errorf("verify %s: digest %q: %w", key, want, err)
	}
	marker := c.verifiedMarker(key, want)
	if marker != "" && isRegular(marker) {
		if eh := c.takeHash(key); eh != nil {
			eh.cancel()
		}
		return nil
	}
	var got digest.Digest
	if eh := c.takeHash(key); eh != nil {
		if want.Algorithm() == digest.SHA256 && eh.size == int64(len(data)) {
			<-eh.done
			got = eh.sum
		} else {
			eh.cancel()
		}
	}
	if got == "" {
		h := want.Algorithm().Hash()
		h.Write(data)
		got = digest.NewDigest(want.Algorithm(), h)
	}
	if got != want {
		return fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, got, want)
	}
	c.rememberVerified(marker)
	return nil
}

// verifiedMarker is the file whose presence says the bytes under key
// hashed to want ("" without a cache directory).
func (c *Cache) verifiedMarker(key string, want digest.Digest) string {
	if c.Dir == "" {
		return ""
	}
	return filepath.Join(c.Dir, "verified", keyName(key+"|"+want.String()))
}

// rememberVerified creates marker (nothing for ""). Failing to is not an
// error: the check passed, and forgetting it costs a rehash later.
func (c *Cache) rememberVerified(marker string) {
	if marker == "" || os.MkdirAll(filepath.Dir(marker), 0o755) != nil {
		return
	}
	_ = writeAtomic(marker, func(*os.File) error { return nil }, false)
}

// blobName is the path under blobs/ for a stream. want comes from image
// metadata, i.e. from the tarball: it is validated before it names a file,
// since "sha256:../../x" must not escape the cache.
func blobName(key string, want digest.Digest) (string, error) {
	if want == "" {
		return filepath.Join("key", keyName(key)), nil
	}
	if err := want.Validate(); err != nil {
		return "", fmt.Errorf("decompress %s: digest %q: %w", key, want, err)
	}
	return filepath.Join(want.Algorithm().String(), want.Encoded()), nil
}

func isRegular(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.Mode().IsRegular()
}

// staleAfter is how long a temporary file may go unwritten before a later
// run takes its writer for dead (killed mid-decompression) and removes it.
// A live writer touches its file continuously.
const staleAfter = time.Hour

// sweepOnce sweeps the cache's stale temporary files (sweepTemps) the first
// time this Cache writes anything: a run killed while it wrote leaves one.
func (c *Cache) sweepOnce() {
	c.swept.Do(func() { sweepTemps(c.Dir, time.Now().Add(-staleAfter)) })
}

// sweepTemps removes temporary files of the cache's directories that were
// last written before cutoff: what interrupted writers left, whose names
// no later call would otherwise look for.
func sweepTemps(dir string, cutoff time.Time) {
	for _, pattern := range []string{"*/" + tmpPrefix("*") + "*", "*/*/" + tmpPrefix("*") + "*"} {
		old, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, p := range old {
			if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() && fi.ModTime().Before(cutoff) {
				os.Remove(p)
			}
		}
	}
}

func removeStale(dst string) {
	old, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), tmpPrefix(filepath.Base(dst))+"*"))
	for _, p := range old {
		os.Remove(p)
	}
}

// lock takes an exclusive flock on a per-name lock file and returns whether
// it did and how to release it. Locking is an optimisation (it saves a
// second decompression of the same layer); correctness comes from the
// atomic rename, so a filesystem without flock just goes unlocked.
func (c *Cache) lock(name string) (bool, func()) {
	dir := filepath.Join(c.Dir, "locks")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, func() {}
	}
	f, err := os.OpenFile(filepath.Join(dir, name+".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return false, func() {}
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return false, func() {}
	}
	return true, func() { f.Close() } // closing the file releases the lock
}

// decompressTo decodes src into w, hashing the output, and checks the hash
// against want when it is set.
//
// The decoder runs in a goroutine of its own, a few buffers ahead of the
// hashing and writing done here, so that on two cores decompression (the
// slowest step) never waits for them. When w is a file, its written pages
// are handed to writeback as they accumulate (sync_file_range), so that the
// fsync before the rename finds little left to write.
func decompressTo(w io.Writer, want digest.Digest, comp Compression, src io.Reader, limit int64) error {
	rd, closeFn, err := openDecoder(comp, src)
	if err != nil {
		return err
	}
	alg := digest.SHA256
	if want != "" {
		alg = want.Algorithm()
	}
	dg := alg.Digester()

	type chunk struct {
		b   []byte
		n   int
		err error
	}
	free := make(chan []byte, decodeBuffers)
	full := make(chan chunk, decodeBuffers)
	stop := make(chan struct{})
	for range decodeBuffers {
		free <- make([]byte, decodeBufSize)
	}
	go func() {
		defer close(full)
		for {
			var b []byte
			select {
			case b = <-free:
			case <-stop:
				return
			}
			n, err := fillFrom(rd, b)
			select {
			case full <- chunk{b, n, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		close(stop)
		for range full { // the decoder is done with rd before it is closed
		}
		closeFn()
	}()

	f, _ := w.(*os.File)
	var written, handed int64
	for c := range full {
		if c.n > 0 {
			if written+int64(c.n) > limit {
				return fmt.Errorf("%w: past %d bytes, the most a stream of its size may take here (Cache.MaxRatio) or the cache's free space allows", ErrTooLarge, limit)
			}
			if _, err := w.Write(c.b[:c.n]); err != nil {
				return fmt.Errorf("write cache file: %w", err)
			}
			dg.Hash().Write(c.b[:c.n])
			written += int64(c.n)
			if f != nil && written-handed >= writebackStep {
				// Best effort: only a hint to start writing back.
				_ = unix.SyncFileRange(int(f.Fd()), handed, written-handed, unix.SYNC_FILE_RANGE_WRITE)
				handed = written
			}
		}
		if c.err == io.EOF {
			break
		}
		if c.err != nil {
			return fmt.Errorf("corrupt or truncated %s stream: %w", comp, c.err)
		}
		free <- c.b
	}
	if want != "" && dg.Digest() != want {
		return fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, dg.Digest(), want)
	}
	return nil
}

const (
	decodeBuffers = 4
	decodeBufSize = 1 << 20
	writebackStep = 8 << 20
)

// fillFrom reads from r until b is full or r fails; io.EOF is returned as
// it is, with the bytes read before it.
func fillFrom(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// openDecoder returns a reader of the decompressed stream and its cleanup.
func openDecoder(comp Compression, src io.Reader) (io.Reader, func(), error) {
	switch comp {
	case CompressionNone:
		return src, func() {}, nil
	case CompressionGzip:
		zr, err := gzip.NewReader(src) // multistream by default: members are concatenated
		if err != nil {
			return nil, nil, fmt.Errorf("corrupt gzip stream: header: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case CompressionZstd:
		zr, err := zstd.NewReader(src)
		if err != nil {
			return nil, nil, fmt.Errorf("zstd reader: %w", err)
		}
		return zr, zr.Close, nil
	case CompressionBzip2:
		return bzip2.NewReader(src), func() {}, nil
	}
	return nil, nil, fmt.Errorf("%s compression is not supported", comp)
}

// startHash hashes [base, base+size) of r in a goroutine, for a later
// VerifyOnce of key. A second call for a key still pending replaces it.
func (c *Cache) startHash(key string, r io.ReaderAt, base, size int64) *earlyHash {
	eh := &earlyHash{done: make(chan struct{}), size: size}
	c.mu.Lock()
	if c.hashes == nil {
		c.hashes = map[string]*earlyHash{}
	}
	old := c.hashes[key]
	c.hashes[key] = eh
	c.mu.Unlock()
	if old != nil {
		old.cancel()
	}
	go func() {
		defer close(eh.done)
		h := sha256.New()
		if hashRange(h, r, base, size, &eh.stop) == nil { // else VerifyOnce hashes the bytes itself
			eh.sum = digest.NewDigest(digest.SHA256, h)
		}
	}()
	return eh
}

// errStopped: a hash was stopped before its end.
var errStopped = errors.New("stopped")

// hashRange writes [base, base+size) of r into h, read in chunks (a
// mapping's pages given back behind it), until stop is set.
func hashRange(h hash.Hash, r io.ReaderAt, base, size int64, stop *atomic.Bool) error {
	buf := make([]byte, 256<<10)
	drop := newDropBehind(r, base)
	defer func() { drop.done(base + size) }()
	for off := int64(0); off < size; drop.passed(base + off) {
		if stop != nil && stop.Load() {
			return errStopped
		}
		n := int(min(int64(len(buf)), size-off))
		if err := readFullAt(r, buf[:n], base+off); err != nil {
			return err
		}
		h.Write(buf[:n])
		off += int64(n)
	}
	return nil
}

// VerifyAt is VerifyOnce of [base, base+size) of r, read in chunks rather
// than as one slice: a compressed layer's own bytes against the digest
// that names them.
func (c *Cache) VerifyAt(key string, want digest.Digest, r io.ReaderAt, base, size int64) error {
	if err := want.Validate(); err != nil {
		return fmt.Errorf("verify %s: digest %q: %w", key, want, err)
	}
	marker := c.verifiedMarker(key, want)
	if marker != "" && isRegular(marker) {
		return nil
	}
	h := want.Algorithm().Hash()
	if err := hashRange(h, r, base, size, nil); err != nil {
		return fmt.Errorf("verify %s: %w", key, err)
	}
	if got := digest.NewDigest(want.Algorithm(), h); got != want {
		return fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, got, want)
	}
	c.rememberVerified(marker)
	return nil
}

// cancel stops the hash and waits until it no longer reads: the caller
// may unmap what it was reading.
func (eh *earlyHash) cancel() {
	eh.stop.Store(true)
	<-eh.done
}

// takeHash removes and returns the background hash started for key, if
// any.
func (c *Cache) takeHash(key string) *earlyHash {
	c.mu.Lock()
	defer c.mu.Unlock()
	eh := c.hashes[key]
	delete(c.hashes, key)
	return eh
}
