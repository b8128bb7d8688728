package archive

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/imgmount/imgmount/internal/progress"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
)

// maxJSONSize bounds the JSON documents we parse out of an archive
// (manifest.json, index.json, manifests, configs). Real ones are kilobytes.
const maxJSONSize = 64 << 20

// maxLinkHops bounds symlink/hardlink chains inside an outer tarball.
const maxLinkHops = 40

// errMemberAbsent reports a member that an archive does not hold (or that a
// link inside it points to but nothing provides).
var errMemberAbsent = errors.New("not in the tarball")

// sentinelError carries an exported sentinel (ErrLayerMissing, ...) for
// errors.Is without repeating its text in the message.
type sentinelError struct {
	sentinel error
	err      error
}

func (e *sentinelError) Error() string   { return e.err.Error() }
func (e *sentinelError) Unwrap() []error { return []error{e.sentinel, e.err} }

// Errorf formats an error (%w allowed) that also matches sentinel, one of
// the Err* values above, with errors.Is: every package that finds a corrupt
// layer or a missing one tags its error this way.
func Errorf(sentinel error, format string, a ...any) error {
	return &sentinelError{sentinel: sentinel, err: fmt.Errorf(format, a...)}
}

// archive is one opened image source: an outer tarball, its uncompressed
// bytes mapped and its members indexed by name; or a directory (an OCI
// layout, an extracted docker save), whose members are its files, each
// mapped on its first lookup.
type archive struct {
	path  string // as the caller gave it; used in messages
	ident string // identity of the file: dev, inode, size, mtime, absolute path
	// src reads the uncompressed outer tar, size bytes; data maps it, unless
	// the tarball is compressed and read in place (then data is nil and
	// members holds what the indexing pass learnt of each member).
	src  io.ReaderAt
	size int64
	data []byte
	// file is the open tarball when data maps it as it is (uncompressed):
	// repack copies layer blobs from it with copy_file_range, and an open
	// descriptor is the very inode data maps, where a path could be
	// replaced since.
	file    *os.File
	members map[int64]tarindex.Member
	entries []tarindex.Entry
	byName  map[string]int // cleaned name → index in entries (the last one wins, as extraction does)
	format  Format
	closers cleanup
	// noEnd is set when the tar lacks its end-of-archive marker (two zero
	// blocks): archive/tar accepts that, but it often means a truncated copy.
	noEnd bool
	// dir, when set, is the archive's directory: data, entries and byName
	// are then unused.
	dir *dirSource
}

// blobRef locates one member's content: size bytes at off in src, the
// whole tarball or the member's own file. data, when not nil, maps the
// same bytes as src (a slice of it is zero copy).
type blobRef struct {
	name  string // the member that holds the bytes (after following links)
	src   io.ReaderAt
	data  []byte
	ident string   // cache identity of src: the tarball's or the member file's
	file  *os.File // the file data maps, when it is open (archive.file); nil otherwise
	off   int64
	size  int64
	// member is what the pass over a compressed outer tarball learnt of
	// it (its digest, its tar index), or nil.
	member *tarindex.Member
}

// mapped is the member's content as a slice of the mapping, or nil when
// it is read in place from a compressed tarball.
func (b blobRef) mapped() []byte {
	if b.data == nil {
		return nil
	}
	return b.data[b.off : b.off+b.size]
}

// reader reads the member's content.
func (b blobRef) reader() *io.SectionReader { return io.NewSectionReader(b.src, b.off, b.size) }

// read returns a small member's content (a JSON document): the mapping's
// slice, or a copy read in place.
func (b blobRef) read() ([]byte, error) {
	if m := b.mapped(); m != nil {
		return m, nil
	}
	if b.size > maxJSONSize {
		return nil, fmt.Errorf("member %s: %d bytes is too large for a JSON document", b.name, b.size)
	}
	p := make([]byte, b.size)
	if _, err := b.reader().ReadAt(p, 0); err != nil && !(err == io.EOF && b.size == 0) {
		return nil, fmt.Errorf("member %s: %w", b.name, err)
	}
	return p, nil
}

// digest hashes the member's content with alg.
func (b blobRef) digest(alg digest.Algorithm) (digest.Digest, error) {
	if m := b.mapped(); m != nil {
		return alg.FromBytes(m), nil
	}
	return alg.FromReader(b.reader())
}

// key names the blob's bytes in the cache: the same bytes of the same
// file get the same key, a rewritten file another.
func (b blobRef) key() string { return b.ident + "@" + strconv.FormatInt(b.off, 10) }

// what the archive is, for messages: "tarball" or "directory".
func (ar *archive) what() string {
	if ar.dir != nil {
		return "directory"
	}
	return "tarball"
}

func (ar *archive) close() error { return ar.closers.run() }

// fileIdentity names the bytes of a file for cache keys: a different file,
// or the same file rewritten, gets a different identity. The ctime is in it
// because an edit in place that restores the mtime (touch -r, tar -x)
// still moves the ctime, which no user can set.
func fileIdentity(abs string, fi os.FileInfo) string {
	var dev, ino uint64
	var ctime int64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		dev, ino, ctime = uint64(st.Dev), st.Ino, st.Ctim.Nano()
	}
	return fmt.Sprintf("dev=%d,ino=%d,size=%d,mtime=%d,ctime=%d,path=%s", dev, ino, fi.Size(), fi.ModTime().UnixNano(), ctime, abs)
}

// archiveOptions say how openArchive reads a tarball.
type archiveOptions struct {
	cache      *tarindex.Cache // nil: no saved index, nothing decompressed
	maxEntries int
	// inPlace reads a gzip tarball (or zstd of several frames) where it
	// lies, through checkpoints and spans; otherwise it is decompressed
	// into the cache and mapped (what callers that need the tarball's
	// bytes as a slice, thin and complete, ask for).
	inPlace bool
	spans   *tarindex.Spans
	tasks   progress.Tasks
}

// openArchive maps the tarball at p and indexes its members (a compressed
// one read in place, or decompressed into the cache first, as opts say);
// or, when p is a directory, opens it for lookups (openDir).
func openArchive(p string, opts archiveOptions) (_ *archive, err error) {
	f, fi, err := openTarball(p)
	if err != nil {
		return nil, err
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	abs, err := filepath.Abs(p)
	if err != nil {
		abs = p
	}
	if fi.IsDir() {
		return openDir(p, abs, fi)
	}
	ar := &archive{path: p, ident: fileIdentity(abs, fi)}
	defer func() {
		if err != nil {
			ar.close()
		}
	}()
	comp, err := compressionOfFile(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if comp != tarindex.CompressionNone && opts.inPlace {
		if err := ar.openInPlace(comp, opts); err != nil {
			return nil, err
		}
		return ar, nil
	}
	mapPath, err := ar.uncompressed(f, comp, opts.cache)
	if err != nil {
		return nil, err
	}
	m, err := tarindex.MapFile(mapPath)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	ar.closers.add(m.Close)
	ar.data, ar.src, ar.size = m.Data, m.Reader(), int64(len(m.Data))
	if mapPath == p {
		ar.file, f = f, nil
		ar.closers.add(ar.file.Close)
	}
	if len(ar.data) == 0 {
		return nil, Errorf(ErrNotImage, "%s: empty file", p)
	}
	if err := ar.indexMembers(opts.cache, comp, opts.maxEntries); err != nil {
		return nil, err
	}
	return ar, nil
}

// compressionOfFile reads how f is compressed from its first bytes.
func compressionOfFile(f *os.File) (tarindex.Compression, error) {
	head := make([]byte, 8)
	n, err := f.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return tarindex.CompressionNone, err
	}
	return tarindex.DetectCompression(head[:n]), nil
}

// openInPlace indexes a compressed tarball where it lies: one pass
// inflates it, records checkpoints, indexes its members and the layer
// tars among them, and hashes each member (IndexOuter); its reads then
// inflate from the nearest checkpoint. A stream that cannot be entered
// mid-way (zstd of one frame) is decompressed into the cache instead.
func (ar *archive) openInPlace(comp tarindex.Compression, opts archiveOptions) error {
	m, err := tarindex.MapFile(ar.path)
	if err != nil {
		return fmt.Errorf("%s: %w", ar.path, err)
	}
	ar.closers.add(m.Close)
	blob := m.Reader()
	if !tarindex.CanSeek(blob, blob.Size(), comp) {
		return ar.openDecompressed(comp, opts)
	}
	cache := opts.cache
	if cache == nil {
		cache = &tarindex.Cache{}
	}
	if opts.spans == nil {
		opts.spans = tarindex.NewSpans(0)
	}
	task := progress.Start(opts.tasks, fmt.Sprintf("indexing %s (%s %s)", filepath.Base(ar.path), HumanSize(blob.Size()), comp), blob.Size())
	out, err := cache.IndexOuter(ar.ident, blob, blob.Size(), comp, tarindex.CompressedOptions{MaxEntries: opts.maxEntries, Progress: inputProgress(task)})
	task.Done(err)
	p := fmt.Sprintf("%s (%s-compressed)", ar.path, comp)
	switch {
	case err == nil:
	case errors.Is(err, tarindex.ErrTooManyEntries):
		return Errorf(ErrTooLarge, "%s: more than %d members, past the memory budget (--max-memory)", p, opts.maxEntries)
	case errors.Is(err, tarindex.ErrTooLarge):
		return Errorf(ErrTooLarge, "%s: %w (--max-ratio)", p, err)
	case errors.Is(err, tarindex.ErrNotTar):
		return Errorf(ErrNotImage, "%s: %w", p, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%s: truncated tarball (incomplete copy or download?): %w", p, err)
	default:
		return fmt.Errorf("%s: corrupt or truncated %s data: %w", p, comp, err)
	}
	ar.src = tarindex.NewCompressed(p, out.Seek, blob, opts.spans)
	ar.size = out.Seek.Size()
	ar.members = out.Members
	return ar.setMembers(out.Index)
}

// openDecompressed is openArchive's way for a compressed tarball that is
// not read in place: decompressed into the cache, then mapped.
func (ar *archive) openDecompressed(comp tarindex.Compression, opts archiveOptions) error {
	f, err := os.Open(ar.path)
	if err != nil {
		return err
	}
	defer f.Close()
	mapPath, err := ar.uncompressed(f, comp, opts.cache)
	if err != nil {
		return err
	}
	m, err := tarindex.MapFile(mapPath)
	if err != nil {
		return fmt.Errorf("%s: %w", ar.path, err)
	}
	ar.closers.add(m.Close)
	ar.data, ar.src, ar.size = m.Data, m.Reader(), int64(len(m.Data))
	if len(ar.data) == 0 {
		return Errorf(ErrNotImage, "%s: empty file", ar.path)
	}
	return ar.indexMembers(opts.cache, comp, opts.maxEntries)
}

// openTarball opens p, refusing anything but a regular file or a
// directory.
func openTarball(p string) (*os.File, os.FileInfo, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	switch {
	case err != nil:
	case fi.IsDir():
	case !fi.Mode().IsRegular():
		err = Errorf(ErrNotImage, "%s: not a regular file", p)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// uncompressed returns the path of the tarball's uncompressed bytes: the
// tarball itself, or its decompressed copy in the cache; and how the
// tarball is compressed.
func (ar *archive) uncompressed(f *os.File, comp tarindex.Compression, cache *tarindex.Cache) (string, error) {
	p := ar.path
	switch comp {
	case tarindex.CompressionNone:
		return p, nil
	case tarindex.CompressionGzip, tarindex.CompressionZstd:
	default:
		return "", fmt.Errorf("%s: %s-compressed tarballs are not supported; decompress it first", p, comp)
	}
	if cache == nil {
		return "", fmt.Errorf("%s: a %s-compressed tarball needs a cache directory to decompress into", p, comp)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	// The stored size goes with the stream so that the cache holds it to
	// the bomb limit (--max-ratio), as it does a layer.
	src := sizedReader{Reader: bufio.NewReaderSize(f, 1<<20), size: fi.Size()}
	mapPath, err := cache.Decompress(ar.ident, "", comp, src)
	switch {
	case err == nil:
		return mapPath, nil
	case errors.Is(err, tarindex.ErrTooLarge):
		return "", Errorf(ErrTooLarge, "%s: decompressing: %w", p, err)
	case isCacheIOError(err):
		return "", fmt.Errorf("%s: decompressing into the cache: %w", p, err)
	default:
		return "", fmt.Errorf("%s: corrupt or truncated %s data: %w", p, comp, err)
	}
}

// sizedReader is a stream that says how many bytes it holds.
type sizedReader struct {
	io.Reader
	size int64
}

func (r sizedReader) Size() int64 { return r.size }

// isCacheIOError tells a failure to write the cache (disk full, permissions)
// from a failure of the compressed data.
func isCacheIOError(err error) bool {
	var pe *fs.PathError
	var le *os.LinkError
	return errors.As(err, &pe) || errors.As(err, &le)
}

// indexMembers indexes the mapped tarball's members by name. comp is how
// the tarball was compressed, for messages.
func (ar *archive) indexMembers(cache *tarindex.Cache, comp tarindex.Compression, maxEntries int) error {
	p := ar.path
	if comp != tarindex.CompressionNone {
		p = fmt.Sprintf("%s (%s-compressed)", p, comp)
	}
	var ix *tarindex.Index
	var err error
	if cache != nil {
		ix, err = cache.Index(ar.ident+"@outer", ar.src, 0, ar.size, maxEntries)
	} else {
		ix, err = tarindex.BuildMax(ar.src, 0, ar.size, maxEntries)
	}
	switch {
	case err == nil:
	case errors.Is(err, tarindex.ErrTooManyEntries):
		return Errorf(ErrTooLarge, "%s: more than %d members, past the memory budget (--max-memory)", p, maxEntries)
	case errors.Is(err, tarindex.ErrNotTar):
		return Errorf(ErrNotImage, "%s: %w", p, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%s: truncated tarball (incomplete copy or download?): %w", ar.path, err)
	default:
		return fmt.Errorf("%s: reading the tarball: %w", ar.path, err)
	}
	return ar.setMembers(ix)
}

// setMembers takes the outer tar's index: its members by name, refusing
// duplicates.
func (ar *archive) setMembers(ix *tarindex.Index) error {
	if len(ix.Entries) == 0 {
		return Errorf(ErrNotImage, "%s: empty tar archive", ar.path)
	}
	ar.noEnd = ix.End < 1024 || ix.End > ar.size || !ar.zeroAt(ix.End-1024, 1024)
	ar.entries = ix.Entries
	ar.byName = make(map[string]int, len(ix.Entries))
	var dups []string
	for i := range ix.Entries {
		e := &ix.Entries[i]
		if j, ok := ar.byName[e.Name]; ok && (e.Type != tarindex.TypeDir || ix.Entries[j].Type != tarindex.TypeDir) {
			dups = append(dups, e.Name)
		}
		ar.byName[e.Name] = i
	}
	if len(dups) > 0 {
		// Tools disagree on which copy counts (skopeo and umoci take the
		// first, tar -x and docker load the last): one tarball could show
		// a reviewer one image and a runtime another.
		return Errorf(ErrNotImage, "%s: %s more than once in the tarball (tools disagree on which copy counts, so imgmount refuses it)", ar.path, listSome(dups, 5))
	}
	return nil
}

// listSome quotes the first max names, then says how many more there are.
func listSome(names []string, max int) string {
	var b strings.Builder
	for i, n := range names {
		if i == max {
			fmt.Fprintf(&b, " and %d more", len(names)-max)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(n))
	}
	return b.String()
}

// has tells whether name resolves to a regular member.
func (ar *archive) has(name string) bool {
	_, err := ar.lookup(name)
	return err == nil
}

// lookup finds the regular member called name, following symlinks
// (relative to the link's directory; absolute ones from the archive root)
// and hardlinks inside the archive. It never leaves the archive. The error
// wraps errMemberAbsent when nothing provides the member.
func (ar *archive) lookup(name string) (blobRef, error) {
	orig := name
	name, err := tarindex.CleanName(name)
	if err != nil {
		return blobRef{}, fmt.Errorf("member %q: %w", orig, err)
	}
	if ar.dir != nil {
		return ar.dir.lookup(orig, name)
	}
	for hop := 0; hop <= maxLinkHops; hop++ {
		i, ok := ar.byName[name]
		if !ok {
			if name != orig {
				return blobRef{}, fmt.Errorf("%s (a link to %s): %w", orig, name, errMemberAbsent)
			}
			return blobRef{}, fmt.Errorf("%s: %w", orig, errMemberAbsent)
		}
		e := &ar.entries[i]
		switch e.Type {
		case tarindex.TypeReg:
			if e.Sparse != nil {
				return blobRef{}, fmt.Errorf("member %s: is a sparse file", name)
			}
			if e.Offset < 0 || e.Offset+e.Size > ar.size {
				return blobRef{}, fmt.Errorf("member %s: extends past the end of the tarball", name)
			}
			b := blobRef{name: name, src: ar.src, data: ar.data, ident: ar.ident, file: ar.file, off: e.Offset, size: e.Size}
			if m, ok := ar.members[e.Offset]; ok {
				b.member = &m
			}
			return b, nil
		case tarindex.TypeHardlink:
			name = e.Linkname
		case tarindex.TypeSymlink:
			target := e.Linkname
			if !strings.HasPrefix(target, "/") {
				target = path.Join(path.Dir(name), target)
			}
			next, err := tarindex.CleanName(target)
			if err != nil {
				return blobRef{}, fmt.Errorf("member %s: symlink to %q: %w", name, e.Linkname, err)
			}
			name = next
		default:
			return blobRef{}, fmt.Errorf("member %s: is a %s, not a file", name, e.Type)
		}
	}
	return blobRef{}, fmt.Errorf("member %s: too many levels of links", orig)
}

// checkNamedDigest checks a member whose name promises a digest (a blob
// path, a legacy config name) against it: an index, manifest or config
// stored under another blob's name would otherwise show one image while
// naming another, as skopeo and docker load refuse to.
func (ar *archive) checkNamedDigest(name string, b blobRef) error {
	want := namedDigest(name)
	if want == "" || !want.Algorithm().Available() {
		return nil
	}
	got, err := b.digest(want.Algorithm())
	if err != nil {
		return fmt.Errorf("%s: %s: %w", ar.path, name, err)
	}
	if got != want {
		return Errorf(ErrDigestMismatch, "%s: %s holds content whose digest is %s", ar.path, name, got)
	}
	return nil
}

// readJSON decodes the member name into v; what says what it is ("image
// config") when the name does not. Errors name the archive and the member;
// malformed JSON is an error, never a panic.
func (ar *archive) readJSON(what, name string, v any) error {
	label := name
	if what != "" {
		label = what + " " + name
	}
	b, err := ar.lookup(name)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", ar.path, label, err)
	}
	if b.size > maxJSONSize {
		return fmt.Errorf("%s: %s: %d bytes is too large for a JSON document", ar.path, label, b.size)
	}
	if err := ar.checkNamedDigest(name, b); err != nil {
		return err
	}
	raw, err := b.read()
	if err != nil {
		return fmt.Errorf("%s: %s: %w", ar.path, label, err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%s: %s: malformed JSON: %w", ar.path, label, err)
	}
	return nil
}

// hint names a member that suggests the image was archived one directory
// down (e.g. "myimage/index.json"), for the not-an-image message.
func (ar *archive) hint() string {
	if ar.noEnd {
		return " (the tarball has no end-of-archive marker: is it truncated?)"
	}
	if ar.dir != nil {
		return ar.dir.hint()
	}
	for _, e := range ar.entries {
		base := path.Base(e.Name)
		if (base == "manifest.json" || base == "index.json") && e.Name != base {
			return fmt.Sprintf(" (it has %s: was the image archived inside a directory?)", e.Name)
		}
	}
	return ""
}

// zeroAt tells whether the n bytes at off are all zero (the end marker).
func (ar *archive) zeroAt(off int64, n int) bool {
	b := make([]byte, n)
	if _, err := ar.src.ReadAt(b, off); err != nil {
		return false
	}
	return allZero(b)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
