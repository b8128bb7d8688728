// Package cow is the writable, copy-on-write view of an image (View): the
// read-only union tree of its layers (overlay/union) below, and an upper
// directory above that receives every change. An entry of the tree is
// copied up into the upper directory before it changes; a deletion leaves
// a whiteout. fusefs serves a View as a writable mount.
//
// The upper directory is itself an OCI layer directory: upperdir.go holds
// its format, and layer.go its writer, WriteUpperLayer, which makes a layer
// tar of it (overlay/repack commits with it). Where the mount runs without
// privilege, what it cannot apply (owners, modes, devices, xattrs of
// namespaces it cannot write) is recorded in xattrs of that format
// (metastore.go).
//
// cow.go has the View, how it resolves a path and what it reads; copyup.go
// copy-up; origin.go where copied-up entries keep their inode numbers;
// file.go open files, Setattr and xattrs; ops.go creating and removing
// entries; rename.go renames; xattr.go the calls on an upper entry
// (target) and the xattr reads shared with layer.go.
package cow

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/imgmount/imgmount/overlay/union"
	"github.com/imgmount/imgmount/tarindex"
	"golang.org/x/sys/unix"
)

// View is the writable view of an image: the union tree below, read-only,
// and an upper directory above that receives every change (see upperdir.go
// for its format). It is path based: every call names a path relative to
// the root ("" for the root itself, "a/b" below it) and looks up in the
// upper directory what is there. Only descriptors of upper directories are
// cached (dirs), never what they hold, so nothing is cached that a crash
// could lose. Paths are resolved beneath the upper directory's file
// descriptor one component at a time without following symlinks, so
// nothing outside it is ever touched.
//
// Errors are unix.Errno values (wrapped with context where the failure is
// not the caller's doing): what the filesystem should answer.
type View struct {
	tree *union.Tree
	dir  string // the upper directory, for messages
	root int    // O_PATH descriptor of the upper directory
	// metaStore applies owners, modes, devices and xattrs: for real when
	// the process runs as root, else recording what it cannot apply (see
	// metastore.go).
	metaStore metaStore

	// mu serialises changes (including copy-up) against each other and
	// against lookups, which must never see half a copy-up.
	mu sync.RWMutex

	lockFD int // holds the flock on the upper directory

	// rootLow is the lower root, nil if the upper root is opaque (which
	// nothing done through the mount can change).
	rootLow *union.Node

	// dirs caches, by path, upper directories resolve walked to: an O_PATH
	// descriptor and the lower directory visible beneath. Most requests
	// name a path whose parent the previous one used (tar creating files
	// in one directory), so this saves a walk from the root each time.
	// Entries are added under the read lock (dirMu guards the map) and
	// removed only under the write lock, when no loc can be using them.
	dirMu sync.Mutex
	dirs  map[string]cachedDir

	// Rebased is true when the upper directory was made over other layers
	// than this tree's (see checkLower).
	Rebased bool

	// lowerOpen has, by lower inode number, what the open lower files of
	// one lower file share (lowerFile), under lowerMu.
	lowerMu   sync.Mutex
	lowerOpen map[uint64]*lowerShared

	// tempSeq numbers the temporary names of copy-ups (createTemp).
	tempSeq atomic.Uint64

	aliasOnce sync.Once
	aliases   map[uint64][]*union.Node // lower hardlink groups by inode
}

// Stat is what the view reports for a path (the kernel's stat layout).
type Stat = unix.Stat_t

// Owner is who creates an entry (the caller of the FUSE request).
type Owner struct{ UID, GID uint32 }

const (
	// upperInoBit marks inode numbers of entries that exist only in the
	// upper directory (the upper inode with this bit set), so they never
	// collide with the lower tree's small numbers.
	upperInoBit = 1 << 62
	copyChunk   = 1 << 20
)

// ErrReservedName is returned for names the upper directory's format
// reserves (".wh." prefix).
var ErrReservedName = fmt.Errorf("names starting with %s are reserved for whiteouts: %w", union.WhiteoutPrefix, unix.EPERM)

// New opens (creating if missing) the upper directory dir over tree.
func New(tree *union.Tree, dir string) (*View, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("upper directory: %w", err)
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("upper directory %s: %w", dir, err)
	}
	c := &View{tree: tree, dir: dir, root: fd, lockFD: -1, metaStore: newMetaStore(), dirs: map[string]cachedDir{}, lowerOpen: map[uint64]*lowerShared{}}
	if err := c.lock(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := c.checkUpper(); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.adoptRoot(); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.checkLower(); err != nil {
		c.Close()
		return nil, err
	}
	if !c.opaque(c.root) {
		c.rootLow = tree.Root
	}
	return c, nil
}

// lock takes an exclusive lock on the upper directory for as long as the
// view is open: two mounts writing one upper directory would each trust
// what they last saw of it.
func (c *View) lock() error {
	fd, err := unix.Openat(c.root, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("upper directory %s: %w", c.dir, err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("upper directory %s is in use by another imgmount mount (unmount it first, or commit through its mountpoint)", c.dir)
		}
		return fmt.Errorf("upper directory %s: locking it: %w", c.dir, err)
	}
	c.lockFD = fd
	return nil
}

// adoptRoot gives a new upper directory the owner, mode and times of the
// image's root, as a copy-up would, so that the mount's root looks like the
// image's until it is changed. An upper directory used before carries the
// origin mark and is left as it is.
func (c *View) adoptRoot() error {
	if _, err := getxattrPath(procPath(c.root, "."), originXattr); err == nil {
		return nil
	}
	fd, err := unix.Openat(c.root, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("upper directory %s: %w", c.dir, err)
	}
	defer unix.Close(fd)
	m := nodeMeta(c.tree.Root)
	if err := c.apply(fdTarget(fd), m); err != nil {
		return fmt.Errorf("upper directory %s: giving it the image root's attributes: %w", c.dir, err)
	}
	if err := fdTarget(fd).setxattr(originXattr, []byte(strconv.FormatUint(m.origin, 10))); err != nil {
		return fmt.Errorf("upper directory %s: recording its origin: %w", c.dir, err)
	}
	return nil
}

// lowerKey identifies the lower tree by its layers.
func lowerKey(t *union.Tree) string {
	h := sha256.New()
	for _, l := range t.Layers {
		fmt.Fprintln(h, l.DiffID)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// checkLower records which layers the upper directory's edits apply to. An
// upper directory made over other layers still works (its edits apply over
// these, like a rebase), but the inode numbers its copied-up entries kept
// are those of the other tree and could collide with this one's: they are
// dropped, and Rebased says so.
func (c *View) checkLower() error {
	key := lowerKey(c.tree)
	root := procPath(c.root, ".")
	old, err := getxattrPath(root, lowerXattr)
	if err == nil && string(old) == key {
		return nil
	}
	if err == nil {
		c.Rebased = true
		werr := filepath.WalkDir(c.dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsDir() && !d.Type().IsRegular() {
				return err // nothing else can carry user.* xattrs
			}
			// The root's origin only says it adopted the image root's
			// attributes (adoptRoot): its inode number is the tree's.
			if p != c.dir {
				if err := unix.Lremovexattr(p, originXattr); err != nil && !errors.Is(err, unix.ENODATA) {
					return err
				}
			}
			if !d.IsDir() {
				return nil
			}
			names, err := listxattrPath(p)
			if err != nil {
				return err
			}
			for _, n := range names {
				if isChildOriginKey(n) {
					if err := unix.Lremovexattr(p, n); err != nil && !errors.Is(err, unix.ENODATA) {
						return err
					}
				}
			}
			return nil
		})
		if werr != nil {
			return fmt.Errorf("upper directory %s was made over other layers; forgetting their inode numbers: %w", c.dir, werr)
		}
	}
	if err := unix.Setxattr(root, lowerXattr, []byte(key), 0); err != nil {
		return fmt.Errorf("upper directory %s: recording its image: %w", c.dir, err)
	}
	return nil
}

// checkUpper makes sure the upper directory can hold what the view needs:
// O_TMPFILE (atomic copy-up) and user xattrs (bookkeeping).
func (c *View) checkUpper() error {
	fd, err := unix.Openat(c.root, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("upper directory %s: its filesystem cannot create unnamed temporary files (O_TMPFILE), which copy-up needs: %w", c.dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Fsetxattr(fd, originXattr, []byte("0"), 0); err != nil {
		return fmt.Errorf("upper directory %s: its filesystem does not store user extended attributes, which the upper directory needs: %w", c.dir, err)
	}
	return nil
}

// Close releases the upper directory and its lock.
func (c *View) Close() error {
	if c.root < 0 {
		return nil
	}
	c.forgetAll()
	err := errors.Join(unix.Close(c.lockFD), unix.Close(c.root))
	c.root, c.lockFD = -1, -1
	return err
}

// Tree is the lower tree.
func (c *View) Tree() *union.Tree { return c.tree }

// loc is one resolved path.
type loc struct {
	path string
	// parent is an O_PATH descriptor of the upper directory holding the
	// entry, or -1 when the parent exists only below. owned tells whether
	// close must close it.
	parent int
	owned  bool
	name   string
	up     *unix.Stat_t // the upper entry, nil if none
	low    *union.Node  // the lower entry visible at this path, nil if none
	// parentLow is the parent's lower directory when its lower children are
	// visible (nil when the parent is upper-only or opaque).
	parentLow *union.Node
	whiteout  bool // the upper parent holds .wh.<name>, hiding a lower entry of that name
}

func (l *loc) exists() bool { return l.up != nil || l.low != nil }

func (l *loc) isDir() bool {
	if l.up != nil {
		return l.up.Mode&unix.S_IFMT == unix.S_IFDIR
	}
	return l.low != nil && l.low.IsDir()
}

func (l *loc) close() {
	if l.owned && l.parent >= 0 {
		unix.Close(l.parent)
	}
	l.parent, l.owned = -1, false
}

func splitPath(p string) []string {
	if p == "" || p == "." {
		return nil
	}
	return strings.Split(p, "/")
}

func parentPath(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

// present tells whether dirfd holds name (not following symlinks).
func present(dirfd int, name string) bool {
	var st unix.Stat_t
	return unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

func (c *View) opaque(dirfd int) bool { return present(dirfd, union.OpaqueMarker) }

// lowerChild is the lower child of a visible lower directory, or nil.
func lowerChild(dir *union.Node, name string) *union.Node {
	if dir == nil || !dir.IsDir() {
		return nil
	}
	return dir.Lookup(name)
}

// resolve works out what is at path. The caller must close the loc.
//
// Every request goes through here: the parent directory comes from the
// cache when it can (parentDir), and only the last component is looked up
// afresh (lookupEntry).
func (c *View) resolve(path string) (*loc, error) {
	if path == "" || path == "." {
		var st unix.Stat_t
		if err := unix.Fstat(c.root, &st); err != nil {
			return nil, fmt.Errorf("upper directory %s: %w", c.dir, err)
		}
		return &loc{path: "", parent: -1, up: &st, low: c.rootLow}, nil
	}
	fd, owned, low, name := c.root, false, c.rootLow, path
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		var err error
		if fd, owned, low, err = c.parentDir(path[:i]); err != nil {
			return nil, err
		}
		name = path[i+1:]
	}
	l := &loc{path: path, parent: fd, owned: owned, name: name, parentLow: low}
	if err := c.lookupEntry(l); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

// parentDir finds the directory of the view at dirPath ("a", "a/b": the
// root is no parent to find): its upper O_PATH descriptor, -1 when it exists
// only below (owned tells whether the caller must close it), and its lower
// directory when its lower children are visible. It comes from the cache,
// else from a walk down from the root, whose end is then cached.
func (c *View) parentDir(dirPath string) (fd int, owned bool, low *union.Node, err error) {
	if cd, ok := c.cachedDir(dirPath); ok {
		return cd.fd, false, cd.low, nil
	}
	fd, low = c.root, c.rootLow
	for _, comp := range strings.Split(dirPath, "/") {
		next, nextLow, err := c.walkStep(fd, low, comp)
		if owned {
			unix.Close(fd)
		}
		if err != nil {
			return -1, false, nil, err
		}
		fd, owned, low = next, next >= 0, nextLow
	}
	if owned && c.remember(dirPath, fd, low) {
		owned = false // the cache has it now
	}
	return fd, owned, low, nil
}

// walkStep goes from a directory of the view (its upper descriptor fd, -1
// if none, and its visible lower directory low) down to its child comp,
// which must be a directory of the view, and gives the same of it; the
// caller closes next.
func (c *View) walkStep(fd int, low *union.Node, comp string) (next int, nextLow *union.Node, err error) {
	if strings.HasPrefix(comp, union.WhiteoutPrefix) {
		return -1, nil, unix.ENOENT
	}
	next, nextLow = -1, lowerChild(low, comp)
	if fd >= 0 {
		// One openat tells a directory (opened), a non-directory
		// (ENOTDIR, ELOOP for a symlink) and nothing (ENOENT).
		var err error
		next, err = unix.Openat(fd, comp, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		switch {
		case err == nil:
			// The lower directory merges in unless the upper one is
			// opaque (asked only when there is one below).
			if nextLow != nil && (!nextLow.IsDir() || c.opaque(next)) {
				nextLow = nil
			}
		case errors.Is(err, unix.ENOENT):
			next = -1
			if nextLow != nil && present(fd, union.WhiteoutPrefix+comp) {
				nextLow = nil
			}
		case errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
			return -1, nil, unix.ENOTDIR
		default:
			return -1, nil, fmt.Errorf("upper directory %s: opening %s: %w", c.dir, comp, err)
		}
	}
	switch {
	case next < 0 && nextLow == nil:
		return -1, nil, unix.ENOENT
	case next < 0 && !nextLow.IsDir():
		return -1, nil, unix.ENOTDIR
	}
	return next, nextLow, nil
}

// lookupEntry fills in l, whose parent is resolved, with what the view has
// under l.name: the upper entry, a whiteout of it, the lower entry that
// shows.
func (c *View) lookupEntry(l *loc) error {
	if strings.HasPrefix(l.name, union.WhiteoutPrefix) {
		// Never visible; creating one is refused by the callers.
		return nil
	}
	low := lowerChild(l.parentLow, l.name)
	if l.parent >= 0 {
		var st unix.Stat_t
		err := unix.Fstatat(l.parent, l.name, &st, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case err == nil:
			l.up = &st
		case errors.Is(err, unix.ENOENT):
			// A whiteout matters only where it hides a lower entry:
			// a name new to the view (every name tar creates) costs
			// one fstatat, not two.
			l.whiteout = low != nil && present(l.parent, union.WhiteoutPrefix+l.name)
		default:
			return fmt.Errorf("upper directory %s: %s: %w", c.dir, l.path, err)
		}
	}
	if !l.whiteout {
		l.low = low
	}
	if l.up != nil && l.low != nil {
		// An upper entry hides the lower one, but for a directory over a
		// directory, whose children merge unless the upper one is opaque.
		if l.up.Mode&unix.S_IFMT != unix.S_IFDIR || !l.low.IsDir() {
			l.low = nil
		} else if fd, err := unix.Openat(l.parent, l.name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
			if c.opaque(fd) {
				l.low = nil
			}
			unix.Close(fd)
		}
	}
	return nil
}

// cachedDir is one entry of View.dirs.
type cachedDir struct {
	fd  int
	low *union.Node
}

const dirCacheMax = 4096

func (c *View) cachedDir(p string) (cachedDir, bool) {
	c.dirMu.Lock()
	defer c.dirMu.Unlock()
	cd, ok := c.dirs[p]
	return cd, ok
}

// remember caches an upper directory's descriptor; false if the cache
// already has the path (the caller keeps and closes fd).
func (c *View) remember(p string, fd int, low *union.Node) bool {
	c.dirMu.Lock()
	defer c.dirMu.Unlock()
	if _, ok := c.dirs[p]; ok {
		return false
	}
	c.dirs[p] = cachedDir{fd: fd, low: low}
	return true
}

// forget drops the cached directories at p and below it: they moved, went
// or became opaque. Called under the write lock.
func (c *View) forget(p string) {
	c.dirMu.Lock()
	defer c.dirMu.Unlock()
	for k, cd := range c.dirs {
		if k == p || strings.HasPrefix(k, p+"/") {
			unix.Close(cd.fd)
			delete(c.dirs, k)
		}
	}
}

func (c *View) forgetAll() {
	c.dirMu.Lock()
	defer c.dirMu.Unlock()
	for k, cd := range c.dirs {
		unix.Close(cd.fd)
		delete(c.dirs, k)
	}
}

// beginChange takes the write lock for a change, and empties the
// directory cache when it has grown large (only now is no descriptor of
// it in use).
func (c *View) beginChange() {
	c.mu.Lock()
	c.dirMu.Lock()
	full := len(c.dirs) > dirCacheMax
	c.dirMu.Unlock()
	if full {
		c.forgetAll()
	}
}

// resolveExisting is resolve that answers ENOENT for nothing there.
func (c *View) resolveExisting(path string) (*loc, error) {
	l, err := c.resolve(path)
	if err != nil {
		return nil, err
	}
	if !l.exists() {
		l.close()
		return nil, unix.ENOENT
	}
	return l, nil
}

// reading runs fn on what is at path (which must exist) under the read
// lock.
func (c *View) reading(path string, fn func(l *loc) error) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	l, err := c.resolveExisting(path)
	if err != nil {
		return err
	}
	defer l.close()
	return fn(l)
}

// procPath names an entry of an O_PATH directory descriptor through
// /proc/self/fd, for the calls that have no *at form (xattrs on symlinks,
// chmod). The final component is looked up by the call itself.
func procPath(dirfd int, name string) string {
	p := "/proc/self/fd/" + strconv.Itoa(dirfd)
	if name != "" {
		p += "/" + name
	}
	return p
}

// Lookup reports what is at path.
func (c *View) Lookup(path string) (st Stat, err error) {
	err = c.reading(path, func(l *loc) error {
		st, err = c.stat(l)
		return err
	})
	return st, err
}

// stat gives the view's attributes of a resolved, existing path.
func (c *View) stat(l *loc) (Stat, error) {
	if l.up == nil {
		return union.NodeStat(l.low), nil
	}
	st := *l.up
	if l.low != nil {
		// A merged directory: its link count would depend on both layers;
		// 1 says "unknown" to find and friends, as overlayfs says it.
		st.Nlink = 1
	}
	if l.parent < 0 {
		// The root: its inode number is the tree's.
		rootIno := c.tree.Root.Ino
		if v, err := getxattrPath(procPath(c.root, "."), StatXattr); err == nil {
			applyOverride(&st, string(v))
		}
		st.Ino = rootIno
		return st, nil
	}
	applyXattrs(nameTarget(l.parent, l.name), &st)
	return st, nil
}

// applyXattrs adjusts an upper entry's stat by its bookkeeping xattrs: the
// inode number it was copied up from, and the owner/mode override. An
// entry that cannot carry them (a symlink, fifo or device) has only an
// origin, kept by its directory.
func applyXattrs(t target, st *Stat) {
	if !holdsUserXattrs(st.Mode) {
		var origin uint64
		if t.fd < 0 {
			origin = childOrigin(t.dirfd, t.name, st.Ino)
		}
		if origin != 0 {
			st.Ino = origin
		} else {
			st.Ino |= upperInoBit
		}
		return
	}
	st.Ino |= upperInoBit
	// One listxattr answers the common case (neither is there) in one
	// call instead of two failed getxattrs.
	names, err := t.listxattr()
	if err != nil {
		return
	}
	for _, n := range names {
		switch n {
		case originXattr:
			if v, err := t.getxattr(originXattr); err == nil {
				if ino, err := strconv.ParseUint(string(v), 10, 64); err == nil && ino != 0 {
					st.Ino = ino
				}
			}
		case StatXattr:
			if v, err := t.getxattr(StatXattr); err == nil {
				applyOverride(st, string(v))
			}
		}
	}
}

// applyOverride applies a StatXattr value to st (ignored if malformed).
func applyOverride(st *Stat, v string) {
	o, err := ParseStatOverride(v, modeToGo(st.Mode))
	if err != nil {
		return
	}
	st.Uid, st.Gid = o.UID, o.GID
	st.Mode = goToMode(o.Mode)
	if o.Mode&os.ModeDevice != 0 {
		st.Rdev = unix.Mkdev(o.Major, o.Minor)
	}
}

// DirEntry is one name in a directory listing.
type DirEntry struct {
	Name string
	Mode uint32 // S_IF* type bits
	Ino  uint64
}

// ReadDir lists a directory of the view, sorted by name, without "." and
// "..".
func (c *View) ReadDir(path string) (ents []DirEntry, err error) {
	err = c.reading(path, func(l *loc) error {
		if !l.isDir() {
			return unix.ENOTDIR
		}
		ents, err = c.readDir(l)
		return err
	})
	return ents, err
}

func (c *View) readDir(l *loc) ([]DirEntry, error) {
	var out []DirEntry
	seen := map[string]bool{}
	if l.up != nil {
		dfd, err := c.openUpperDir(l)
		if err != nil {
			return nil, err
		}
		f := os.NewFile(uintptr(dfd), l.path)
		ents, err := f.ReadDir(-1)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("upper directory %s: listing %s: %w", c.dir, l.path, err)
		}
		for _, e := range ents {
			name := e.Name()
			if strings.HasPrefix(name, union.WhiteoutPrefix) {
				if name != union.OpaqueMarker {
					seen[name[len(union.WhiteoutPrefix):]] = true
				}
				continue
			}
			seen[name] = true
			var st unix.Stat_t
			if err := unix.Fstatat(int(f.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				continue // gone meanwhile
			}
			applyXattrs(nameTarget(int(f.Fd()), name), &st)
			out = append(out, DirEntry{Name: name, Mode: st.Mode & unix.S_IFMT, Ino: st.Ino})
		}
		f.Close()
	}
	if l.low != nil {
		for _, ch := range l.low.Children() {
			if !seen[ch.Name] {
				out = append(out, DirEntry{Name: ch.Name, Mode: union.NodeType(ch), Ino: ch.Ino})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// openUpperDir opens an existing upper directory for reading.
func (c *View) openUpperDir(l *loc) (int, error) {
	var fd int
	var err error
	if l.parent < 0 {
		fd, err = unix.Openat(c.root, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	} else {
		fd, err = unix.Openat(l.parent, l.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return -1, fmt.Errorf("upper directory %s: opening %s: %w", c.dir, l.path, err)
	}
	return fd, nil
}

// Readlink gives a symlink's target.
func (c *View) Readlink(path string) (target string, err error) {
	err = c.reading(path, func(l *loc) error {
		if l.up == nil {
			if l.low.Entry == nil || l.low.Entry.Type != tarindex.TypeSymlink {
				return unix.EINVAL
			}
			target = l.low.Entry.Linkname
			return nil
		}
		buf := make([]byte, 4096)
		n, err := unix.Readlinkat(l.parent, l.name, buf)
		target = string(buf[:max(n, 0)])
		return err
	})
	return target, err
}

// Statfs reports the upper directory's filesystem.
func (c *View) Statfs() (unix.Statfs_t, error) {
	var st unix.Statfs_t
	err := unix.Fstatfs(c.root, &st)
	return st, err
}

// modeToGo converts S_IF* type bits to an fs.FileMode type.
func modeToGo(m uint32) os.FileMode {
	var t os.FileMode
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		t = os.ModeDir
	case unix.S_IFLNK:
		t = os.ModeSymlink
	case unix.S_IFIFO:
		t = os.ModeNamedPipe
	case unix.S_IFSOCK:
		t = os.ModeSocket
	case unix.S_IFCHR:
		t = os.ModeDevice | os.ModeCharDevice
	case unix.S_IFBLK:
		t = os.ModeDevice
	}
	t |= os.FileMode(m & 0o777)
	if m&unix.S_ISUID != 0 {
		t |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		t |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		t |= os.ModeSticky
	}
	return t
}

// goToMode is the inverse of modeToGo.
func goToMode(m os.FileMode) uint32 {
	var t uint32
	switch m.Type() {
	case os.ModeDir:
		t = unix.S_IFDIR
	case os.ModeSymlink:
		t = unix.S_IFLNK
	case os.ModeNamedPipe:
		t = unix.S_IFIFO
	case os.ModeSocket:
		t = unix.S_IFSOCK
	case os.ModeDevice | os.ModeCharDevice:
		t = unix.S_IFCHR
	case os.ModeDevice:
		t = unix.S_IFBLK
	default:
		t = unix.S_IFREG
	}
	return t | uint32(permBits(m))
}

// UpperInUse tells whether a mount has the upper directory dir open (and
// locked). Reading it then would race with the mount's own writes: commit
// through the mountpoint instead, which flushes first.
func UpperInUse(dir string) bool {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return errors.Is(unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB), unix.EWOULDBLOCK)
}
