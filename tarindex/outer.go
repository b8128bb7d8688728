package tarindex

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	digest "github.com/opencontainers/go-digest"
)

// Member is what the one pass over a compressed outer tarball learnt of one
// of its regular members: the sha256 of its content and, when the member
// is itself a tar (a layer of docker save), its index, with offsets in the
// outer's decompressed stream.
type Member struct {
	Digest digest.Digest
	Tar    *Index // nil when the member is no tar, or not one indexable in one forward pass
}

// Outer is a compressed tarball indexed in place (docker save | gzip): its
// members' index, the entry points of its stream, and its members.
type Outer struct {
	Index   *Index
	Seek    Seekable
	Members map[int64]Member // by the offset of the member's content
}

// IndexOuter indexes a compressed tarball (blob[0:size), compressed with
// comp) in one pass that inflates it, records checkpoints, indexes its
// members, hashes each one, and indexes the members that are tars (the
// layers of docker save) on the way, on another goroutine each: nothing is
// decompressed to disk and nothing is read twice. The result is saved
// under Dir, when set, and loaded by later calls as IndexCompressed does.
// maxEntries bounds the outer's entries and each member tar's.
func (c *Cache) IndexOuter(key string, blob io.ReaderAt, size int64, comp Compression, opts CompressedOptions) (*Outer, error) {
	var fp [32]byte
	var base string
	if c.Dir != "" {
		var err error
		if fp, err = fingerprint(blob, 0, size); err != nil {
			return nil, fmt.Errorf("index %s: %w", key, err)
		}
		base = filepath.Join(c.Dir, "index", keyName("outer:"+key))
		out, err := loadOuter(base, comp, size, fp)
		if err == nil {
			c.Touch(base + ".idx")
			return out, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			c.warn(fmt.Errorf("saved index of %s (%s), rebuilding: %w", key, base, err))
		}
	}
	b, err := newSeekableBuilder(blob, size, comp, c.inflateLimit(size), opts.Progress)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	ix, members, usize, err := indexOuterStream(b, opts.MaxEntries)
	if errors.Is(err, errLimit) {
		return nil, bombError(c.inflateLimit(size), size)
	}
	if err != nil {
		return nil, err
	}
	seek, err := b.Index()
	if err != nil {
		return nil, err
	}
	if seek.Size() != usize {
		return nil, fmt.Errorf("decompressed %d bytes, checkpoints say %d", usize, seek.Size())
	}
	out := &Outer{Index: ix, Seek: seek, Members: members}
	if base != "" {
		c.sweepOnce()
		if err := saveOuter(base, out, comp, size, fp); err != nil {
			c.warn(fmt.Errorf("save the index of %s: %w", key, err))
		} else {
			written := []string{base + ".idx", base + seekExt(comp), base + ".members"}
			for off, m := range out.Members {
				if m.Tar != nil {
					written = append(written, memberIndexPath(base, off))
				}
			}
			c.saved(sourceOf(key), written...)
		}
	}
	return out, nil
}

// errLimit matches the decoders' bomb errors.
var errLimit = errors.New("inflate limit")

// byteCounter counts what archive/tar has read: after Next, the offset
// of the member's content.
type byteCounter struct {
	r io.Reader
	n int64
}

func (c *byteCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF {
		err = &decodeError{err}
	}
	return n, err
}

// decodeError is a failure of the compressed stream itself (corrupt,
// truncated), told apart from a stream that decodes but holds no tar.
type decodeError struct{ err error }

func (e *decodeError) Error() string { return e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

// indexOuterStream is IndexOuter's pass over the decompressed stream r.
func indexOuterStream(r io.Reader, maxEntries int) (*Index, map[int64]Member, int64, error) {
	limit := budget{max: maxEntries}
	cr := &byteCounter{r: bufio.NewReaderSize(r, 1<<20)}
	tr := tar.NewReader(cr)
	ix := &Index{}
	members := map[int64]Member{}
	buf := make([]byte, 1<<20)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if isLimit(err) {
				return nil, nil, 0, errLimit
			}
			var de *decodeError
			if len(ix.Entries) == 0 && !errors.As(err, &de) {
				return nil, nil, 0, fmt.Errorf("%w: %v", ErrNotTar, err)
			}
			if len(ix.Entries) == 0 {
				return nil, nil, 0, fmt.Errorf("the first member: %w", err)
			}
			return nil, nil, 0, fmt.Errorf("after member %q: %w", ix.Entries[len(ix.Entries)-1].Name, truncated(err))
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		if hdr.Typeflag == tar.TypeGNUSparse || sparseKindOf(hdr) != sparseNone {
			return nil, nil, 0, fmt.Errorf("member %q: a sparse member in a compressed tarball is not supported", hdr.Name)
		}
		e, err := entryFromHeader(hdr)
		if err != nil {
			return nil, nil, 0, err
		}
		e.Offset = cr.n
		if err := limit.take(&e); err != nil {
			return nil, nil, 0, err
		}
		ix.Entries = append(ix.Entries, e)
		if e.Type != TypeReg {
			continue
		}
		m, err := scanMember(tr, e.Offset, e.Size, buf, maxEntries)
		if err != nil {
			if isLimit(err) {
				return nil, nil, 0, errLimit
			}
			return nil, nil, 0, fmt.Errorf("member %q: %w", e.Name, truncated(err))
		}
		members[e.Offset] = m
	}
	ix.End = cr.n
	// What follows the end marker (zero padding) is read for the
	// checkpoints and the trailer checks.
	if _, err := io.CopyBuffer(io.Discard, cr, buf); err != nil {
		if isLimit(err) {
			return nil, nil, 0, errLimit
		}
		return nil, nil, 0, err
	}
	return ix, members, cr.n, nil
}

// scanMember reads one member's content from tr: hashing it, and, when its
// first block is a tar header, indexing it as a tar on another goroutine
// fed through a pipe.
func scanMember(tr io.Reader, off, size int64, buf []byte, maxEntries int) (Member, error) {
	h := sha256.New()
	var w io.Writer = h
	var pw *io.PipeWriter
	var inner chan innerResult
	first := buf[:min(size, blockSize)]
	if _, err := io.ReadFull(tr, first); err != nil {
		return Member{}, err
	}
	if size >= 2*blockSize && looksLikeTarHeader(first) {
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		inner = make(chan innerResult, 1)
		go func() {
			ix, _, err := IndexStream(pr, maxEntries)
			pr.CloseWithError(errInnerDone) // unblocks the writer if the parser stopped early
			inner <- innerResult{ix, err}
		}()
		w = io.MultiWriter(h, &lenientWriter{w: pw})
	}
	w.Write(first)
	_, err := io.CopyBuffer(w, tr, buf[blockSize:])
	if pw != nil {
		pw.CloseWithError(err) // nil: EOF for the parser
	}
	if err != nil {
		if inner != nil {
			<-inner
		}
		return Member{}, err
	}
	m := Member{Digest: digest.NewDigest(digest.SHA256, h)}
	if inner != nil {
		res := <-inner
		if errors.Is(res.err, ErrTooManyEntries) {
			return Member{}, res.err
		}
		if res.err == nil && res.ix != nil {
			res.ix.rebase(off)
			m.Tar = res.ix
		}
	}
	return m, nil
}

type innerResult struct {
	ix  *Index
	err error
}

var errInnerDone = errors.New("member parser done")

// lenientWriter feeds the member parser until it stops; after that (it
// gave up on a member that is no tar after all) the member is still read
// to its end for the hash.
type lenientWriter struct {
	w    io.Writer
	dead bool
}

func (l *lenientWriter) Write(p []byte) (int, error) {
	if !l.dead {
		if _, err := l.w.Write(p); err != nil {
			l.dead = true
		}
	}
	return len(p), nil
}

// looksLikeTarHeader: a header block whose checksum is right.
func looksLikeTarHeader(b []byte) bool {
	if len(b) < blockSize {
		return false
	}
	var blk [blockSize]byte
	copy(blk[:], b)
	_, ok := parseBlock(&blk)
	return ok
}

// rebase moves an index built at offset 0 of a member to base.
func (ix *Index) rebase(base int64) {
	for i := range ix.Entries {
		e := &ix.Entries[i]
		e.Offset += base
		for j := range e.Sparse {
			e.Sparse[j].Physical += base
		}
	}
	ix.End += base
}

// The saved outer: <base>.gzi (or .zsi) and <base>.idx as saveCompressed
// writes them, and <base>.members: for each regular member, its content
// offset and digest, and, for member tars, their index in <base>.<offset>.idx
// (the saved.go format, with the outer's fingerprint).
func saveOuter(base string, out *Outer, comp Compression, csize int64, fp [32]byte) error {
	offs := make([]int64, 0, len(out.Members))
	for off := range out.Members {
		offs = append(offs, off)
	}
	sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
	var b bytes.Buffer
	for _, off := range offs {
		m := out.Members[off]
		tarFlag := "-"
		if m.Tar != nil {
			tarFlag = "tar"
			if err := saveIndex(memberIndexPath(base, off), m.Tar, 0, out.Seek.Size(), fp); err != nil {
				return err
			}
		}
		fmt.Fprintf(&b, "%d %s %s\n", off, m.Digest, tarFlag)
	}
	var crc [4]byte
	binary.LittleEndian.PutUint32(crc[:], crc32.Checksum(b.Bytes(), crcTable))
	b.Write(crc[:])
	if err := writeAtomic(base+".members", func(f *os.File) error {
		_, err := f.Write(b.Bytes())
		return err
	}, false); err != nil {
		return err
	}
	// Last: the checkpoints and outer index exist only beside the rest.
	return saveCompressed(base, out.Index, out.Seek, comp, csize, fp)
}

func memberIndexPath(base string, off int64) string {
	return base + "." + strconv.FormatInt(off, 10) + ".idx"
}

func loadOuter(base string, comp Compression, csize int64, fp [32]byte) (*Outer, error) {
	ix, seek, err := loadCompressed(base, comp, csize, fp)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(base + ".members")
	if err != nil {
		return nil, err
	}
	if len(b) < 4 || crc32.Checksum(b[:len(b)-4], crcTable) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, fmt.Errorf("%w: members checksum", errBadSeek)
	}
	out := &Outer{Index: ix, Seek: seek, Members: map[int64]Member{}}
	for _, line := range bytes.Split(bytes.TrimSuffix(b[:len(b)-4], []byte("\n")), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var off int64
		var d, tarFlag string
		if _, err := fmt.Sscanf(string(line), "%d %s %s", &off, &d, &tarFlag); err != nil {
			return nil, fmt.Errorf("%w: members: %v", errBadSeek, err)
		}
		m := Member{Digest: digest.Digest(d)}
		if m.Digest.Validate() != nil {
			return nil, fmt.Errorf("%w: members: digest %q", errBadSeek, d)
		}
		if tarFlag == "tar" {
			if m.Tar, err = loadIndex(memberIndexPath(base, off), 0, seek.Size(), fp); err != nil {
				return nil, err
			}
		}
		out.Members[off] = m
	}
	return out, nil
}
