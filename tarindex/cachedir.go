package tarindex

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The cache directory's upkeep: what is in it (List), what may go (Prune,
// Clear), what must stay (Hold) and where each item came from (Note).
//
// An item is one cache file with its sidecars: ".stamp" (a decompressed
// copy's stat when written, see writeStamp) and ".src" (what it was made
// from, see Note). Its last use is the latest mtime among them. A
// decompressed copy's own mtime is part of its stamp, so a use is recorded
// on the stamp (Touch), never on the copy: touching the copy would make
// the next mount take it for edited and decompress it again.
//
// An item is in use while a process holds a shared flock on its lock file
// under locks/ (Hold; Decompress holds it exclusively while it writes).
// Prune and Clear remove an item only under an exclusive flock taken
// without waiting, so they never remove what a mount maps or a writer is
// writing; and Hold, once it has its lock, checks the file is still there.
// Lock files are never removed: one removed while another process waits on
// it would let two processes hold "the" lock at once.

// The kinds of CacheItem.
const (
	KindIndex        = "index"        // index/<sha256(key)>.idx: a saved tar index
	KindCheckpoints  = "checkpoints"  // index/<sha256(key)>.gzi or .zsi: seek points into a compressed stream
	KindDecompressed = "decompressed" // blobs/...: a decompressed copy of a stream
	KindVerified     = "verified"     // verified/<...>: an empty marker of a digest checked once (VerifyOnce)
	KindTemporary    = "temporary"    // .tmp-*: a file being written, or left by a writer that died
)

// CacheItem is one item of the cache directory.
type CacheItem struct {
	Path    string    // the cache file (its sidecars share its name)
	Kind    string    // one of the Kind constants
	Size    int64     // disk space taken, sidecars included (as du counts it)
	LastUse time.Time // written, loaded or held last
	InUse   bool      // held by a mount (Hold) or being written
	Source  string    // what it was made from, when known (Note); "; " between several
}

// The sidecars of a cache file, by suffix.
const (
	stampSuffix  = ".stamp"
	sourceSuffix = ".src"
)

// pruneGrace: the automatic pruning (Cache.MaxBytes) leaves alone items
// used this recently. A mount decompresses and indexes all its layers
// before it holds them; on a big image that takes minutes, during which
// the first layers must not be evicted to make room for the last.
const pruneGrace = 15 * time.Minute

// maxSources bounds the lines of a ".src" sidecar: a layer shared by many
// tarballs keeps the latest few.
const maxSources = 4

// lockName is the name under locks/ (without ".lock") of the cache file
// p: the one Decompress locks while it writes a blob, "sha256-<hex>" or
// "key-<hex>"; for other files their path under Dir, "/" replaced by "-".
func (c *Cache) lockName(p string) (string, error) {
	rel, err := filepath.Rel(c.Dir, p)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") || filepath.IsAbs(rel) {
		return "", fmt.Errorf("%s is not a file of the cache %s", p, c.Dir)
	}
	rel = filepath.ToSlash(rel)
	if r, ok := strings.CutPrefix(rel, "blobs/"); ok {
		rel = r
	}
	return strings.ReplaceAll(rel, "/", "-"), nil
}

func (c *Cache) lockPath(name string) string {
	return filepath.Join(c.Dir, "locks", name+".lock")
}

// Hold marks the cache file p (a decompressed copy) as in use until
// release is called: Prune and Clear, in any process, leave it alone. It
// takes a shared flock on p's lock file, waiting while a writer or a
// pruner has it, and records a use (Touch). Call it on every decompressed
// copy a mount maps, right after Decompress returns it, and release on
// unmount (closing the process releases it too).
//
// An error wrapping fs.ErrNotExist means p was pruned between Decompress
// and Hold: call Decompress again. A filesystem without flock holds
// nothing (Prune then sees p as free) but is not an error.
func (c *Cache) Hold(p string) (release func(), err error) {
	name, err := c.lockName(p)
	if err != nil {
		return nil, fmt.Errorf("hold: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(c.Dir, "locks"), 0o755); err != nil {
		return nil, fmt.Errorf("hold %s: %w", p, err)
	}
	f, err := os.OpenFile(c.lockPath(name), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("hold %s: %w", p, err)
	}
	// As in lock: without flock, p goes unprotected rather than unusable.
	_ = flock(f, unix.LOCK_SH)
	if _, err := os.Stat(p); err != nil {
		f.Close()
		return nil, fmt.Errorf("hold %s: %w", p, err)
	}
	c.Touch(p)
	var once sync.Once
	return func() { once.Do(func() { f.Close() }) }, nil
}

// flock is unix.Flock on f, retried when a signal interrupts it.
func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}

// Touch records a use of the cache file p now (the mtime of its stamp if
// it has one, else its own): what Prune orders items by. Best effort: a
// failure only makes p look older.
func (c *Cache) Touch(p string) {
	now := time.Now()
	if isRegular(p + stampSuffix) {
		p += stampSuffix
	}
	_ = os.Chtimes(p, now, now)
}

// Note records that the cache file p was made from source (a tarball
// path, a layer digest), for List. A source already noted is kept once;
// a file shared by many sources keeps the latest few. Best effort: the
// note is a ".src" sidecar beside p, and a missing or unreadable one only
// leaves the source unknown.
func (c *Cache) Note(p, source string) {
	source = strings.TrimSpace(strings.ReplaceAll(source, "\n", " "))
	if source == "" || !isRegular(p) {
		return
	}
	old := readSources(p)
	for _, s := range old {
		if s == source {
			return
		}
	}
	lines := append(old, source)
	if len(lines) > maxSources {
		lines = lines[len(lines)-maxSources:]
	}
	err := writeAtomic(p+sourceSuffix, func(f *os.File) error {
		_, err := f.WriteString(strings.Join(lines, "\n") + "\n")
		return err
	}, false)
	if err != nil {
		c.warn(fmt.Errorf("note the source of %s: %w", p, err))
	}
}

// readSources reads the ".src" sidecar of p: its lines, nil if none.
func readSources(p string) []string {
	b, err := os.ReadFile(p + sourceSuffix)
	if err != nil || len(b) > 64<<10 {
		return nil
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// sourceOf is what a cache key says of where its bytes came from: the
// part after the file identity's "path=" (the tarball and what follows,
// e.g. "@<offset>"), else the key itself.
func sourceOf(key string) string {
	if i := strings.LastIndex(key, "path="); i >= 0 {
		return key[i+len("path="):]
	}
	return key
}

// List returns the items of the cache directory, least recently used
// first. A missing directory is an empty cache. Files it does not know
// (another version's) are left out; so are the lock files.
func (c *Cache) List() ([]CacheItem, error) {
	items, err := c.scan(true)
	if err != nil {
		return nil, err
	}
	for i := range items {
		if items[i].Kind != KindTemporary {
			items[i].InUse = c.inUse(items[i].Path)
		}
	}
	return items, nil
}

// scan walks the cache directory into items, least recently used first,
// without looking at locks (InUse is set for temporaries only), reading
// the sources if asked (a read per item, which pruning does without).
func (c *Cache) scan(sources bool) ([]CacheItem, error) {
	if c.Dir == "" {
		return nil, errors.New("cache: no cache directory")
	}
	byPath := map[string]*CacheItem{}
	var order []string
	add := func(main, kind string, fi fs.FileInfo) {
		it := byPath[main]
		if it == nil {
			it = &CacheItem{Path: main, Kind: kind}
			byPath[main] = it
			order = append(order, main)
		}
		it.Size += diskUsage(fi)
		if t := fi.ModTime(); t.After(it.LastUse) {
			it.LastUse = t
		}
	}
	stale := time.Now().Add(-staleAfter)
	for _, top := range []string{"index", "blobs", "verified"} {
		root := filepath.Join(c.Dir, top)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // gone meanwhile (a concurrent prune), or never made
				}
				return err
			}
			if d.IsDir() || !d.Type().IsRegular() {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			name := d.Name()
			if strings.HasPrefix(name, ".tmp-") {
				add(p, KindTemporary, fi)
				byPath[p].InUse = fi.ModTime().After(stale)
				return nil
			}
			main := p
			for _, suf := range []string{stampSuffix, sourceSuffix} {
				if m, ok := strings.CutSuffix(p, suf); ok {
					main = m
					break
				}
			}
			add(main, kindOf(top, main), fi)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("cache %s: %w", root, err)
		}
	}
	items := make([]CacheItem, 0, len(order))
	for _, p := range order {
		it := byPath[p]
		if sources && it.Kind != KindTemporary {
			it.Source = strings.Join(readSources(p), "; ")
		}
		items = append(items, *it)
	}
	sort.SliceStable(items, func(i, j int) bool {
		if !items[i].LastUse.Equal(items[j].LastUse) {
			return items[i].LastUse.Before(items[j].LastUse)
		}
		return items[i].Path < items[j].Path
	})
	return items, nil
}

// kindOf is the kind of the cache file main, found under top.
func kindOf(top, main string) string {
	switch top {
	case "blobs":
		return KindDecompressed
	case "verified":
		return KindVerified
	}
	switch filepath.Ext(main) {
	case ".gzi", ".zsi":
		return KindCheckpoints
	}
	return KindIndex
}

// diskUsage is the space fi takes on disk, as du counts it; its length
// where the filesystem does not say.
func diskUsage(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}

// inUse tells whether another holder has the lock of cache file p. A lock
// file that does not exist has no holder (Hold creates it).
func (c *Cache) inUse(p string) bool {
	name, err := c.lockName(p)
	if err != nil {
		return false
	}
	f, err := os.Open(c.lockPath(name))
	if err != nil {
		return false
	}
	defer f.Close()
	return flock(f, unix.LOCK_EX|unix.LOCK_NB) == unix.EWOULDBLOCK
}

// tryLock takes the exclusive lock of cache file p without waiting. ok is
// false when another holds it; with no lock file, or on a filesystem
// without flock, ok is true and release does nothing.
func (c *Cache) tryLock(p string) (ok bool, release func()) {
	name, err := c.lockName(p)
	if err != nil {
		return false, nil
	}
	f, err := os.Open(c.lockPath(name))
	if err != nil {
		return true, func() {}
	}
	if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err == unix.EWOULDBLOCK {
		f.Close()
		return false, nil
	}
	return true, func() { f.Close() }
}

// Prune removes the least recently used items until the cache takes at
// most limit bytes, and the temporaries that writers left more than an
// hour ago (staleAfter). It never removes an item in use (Hold, or being
// written), a temporary younger than that, nor a verified marker (which
// takes no space): the cache may stay above limit when those fill it.
// Removing continues past a failure; the failures are returned together,
// with what was removed.
func (c *Cache) Prune(limit int64) (removed []CacheItem, err error) {
	return c.prune(max(limit, 0), nil)
}

// Clear removes every item not in use: Prune(0), verified markers
// included.
func (c *Cache) Clear() (removed []CacheItem, err error) {
	return c.prune(-1, nil)
}

// prune is Prune; limit -1 is Clear. keep, if set, spares items besides
// those in use.
func (c *Cache) prune(limit int64, keep func(CacheItem) bool) (removed []CacheItem, err error) {
	items, err := c.scan(keep == nil) // the automatic pruning returns nothing to show
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var errs []error
	remove := func(it CacheItem) bool {
		if err := removeItem(it); err != nil {
			errs = append(errs, err)
			return false
		}
		removed = append(removed, it)
		return true
	}
	var total int64
	var lru []CacheItem
	for _, it := range items {
		switch {
		case it.Kind == KindTemporary:
			if it.InUse || !remove(it) {
				total += it.Size
			}
			continue
		case it.Kind == KindVerified && limit >= 0:
		case keep != nil && keep(it):
		default:
			lru = append(lru, it)
		}
		total += it.Size
	}
	for _, it := range lru {
		if limit >= 0 && total <= limit {
			break
		}
		ok, release := c.tryLock(it.Path)
		if !ok {
			continue
		}
		if remove(it) {
			total -= it.Size
		}
		release()
	}
	return removed, errors.Join(errs...)
}

// removeItem removes an item's file, then its sidecars: a crash between
// them leaves sidecars without their file, which the next scan lists and
// removes as the same item, never a file without its stamp taken for
// intact. A file that cannot be removed keeps its sidecars.
func removeItem(it CacheItem) error {
	var errs []error
	for i, p := range []string{it.Path, it.Path + stampSuffix, it.Path + sourceSuffix} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("cache: remove %s: %w", p, err))
			if i == 0 {
				break
			}
		}
		if it.Kind == KindTemporary {
			break
		}
	}
	return errors.Join(errs...)
}

// saved is what the code that writes a cache file calls once it is in
// place: it notes the file's source and prunes the cache to MaxBytes.
func (c *Cache) saved(source string, written ...string) {
	for _, p := range written {
		c.Note(p, source)
	}
	c.enforceBound(written...)
}

// enforceBound prunes the cache to MaxBytes, if set, after fresh was
// written: fresh and whatever was used in the last pruneGrace stay, even
// over the bound (a mount in progress needs them). Failures go to Warn.
// Only one process prunes at a time; the others skip it.
func (c *Cache) enforceBound(fresh ...string) {
	if c.MaxBytes <= 0 || c.Dir == "" {
		return
	}
	locked, unlock := c.tryBoundLock()
	if !locked {
		return // another process is pruning now
	}
	defer unlock()
	recent := time.Now().Add(-pruneGrace)
	_, err := c.prune(c.MaxBytes, func(it CacheItem) bool {
		return slices.Contains(fresh, it.Path) || it.LastUse.After(recent)
	})
	if err != nil {
		c.warn(fmt.Errorf("keeping the cache under %d bytes: %w", c.MaxBytes, err))
	}
}

// tryBoundLock takes the lock that makes automatic pruning one process at
// a time, without waiting.
func (c *Cache) tryBoundLock() (bool, func()) {
	dir := filepath.Join(c.Dir, "locks")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, nil
	}
	f, err := os.OpenFile(filepath.Join(dir, ".prune.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return false, nil
	}
	if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return false, nil
	}
	return true, func() { f.Close() }
}

// Total is the disk space items take.
func Total(items []CacheItem) int64 {
	var n int64
	for _, it := range items {
		if n > math.MaxInt64-it.Size {
			return math.MaxInt64
		}
		n += it.Size
	}
	return n
}
