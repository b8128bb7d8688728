package repack

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/imgmount/imgmount/internal/progress"
	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
)

// CompleteOptions says how Complete works.
type CompleteOptions struct {
	// TempDir receives layers decompressed from a base while Complete
	// runs; the caller removes it.
	TempDir  string
	Progress func(string)
	// Tasks, if set, hears the bytes written.
	Tasks progress.Tasks
	Free  func() (int64, error)
	// Context, if set, cancels the work: it stops at its next write,
	// returning the context's error.
	Context context.Context
}

func (o *CompleteOptions) progress(format string, a ...any) { progressf(o.Progress, format, a...) }

// CompleteResult says what Complete wrote.
type CompleteResult struct {
	Images        int             // images in the tarball
	Restored      []digest.Digest // diff_ids of the layer blobs put back
	RestoredBytes int64
	Verified      int // layer blobs checked against their digests
	Size          int64
}

// Complete writes to w the thin tarball src with every layer blob it
// lacks put back from the bases: copied byte for byte when a base holds
// the blob the manifest names, else (for docker save's <id>/layer.tar,
// which may hold the layer uncompressed) the layer decompressed from a
// base. Every layer blob written, the thin tarball's own included, is
// checked against its digest and its diff_id. A layer no base has is an
// error (archive.ErrLayerMissing) naming it and the images that need it.
func Complete(src *archive.Contents, bases []*archive.Contents, w io.Writer, opts CompleteOptions) (*CompleteResult, error) {
	members, err := scanMembers(src)
	if err != nil {
		return nil, err
	}
	layers, err := layersOf(src)
	if err != nil {
		return nil, err
	}
	restores, err := findSources(src.Path, bases, layers.missing)
	if err != nil {
		return nil, err
	}
	if err := checkSpace(opts.Free, completeSize(members, restores), "the output"); err != nil {
		return nil, fmt.Errorf("%s: %w", src.Path, err)
	}
	defer removeDecompressed(restores)
	if err := decompressFromBases(restores, &opts); err != nil {
		return nil, err
	}

	res := &CompleteResult{Images: layers.images}
	opts.progress("copying %s, checking every layer blob", src.Path)
	err = withTask(opts.Context, opts.Tasks, "writing the completed tarball", completeSize(members, restores), w, func(w io.Writer) error {
		written, err := copyVerified(w, src.Path, members, layers.present, res)
		if err != nil {
			return err
		}
		// The blobs put back go after the rest.
		if err := writeRestores(w, sampleHeader(members), restores, written, res, &opts); err != nil {
			return err
		}
		_, err = w.Write(endOfArchive)
		return err
	})
	if err != nil {
		return nil, err
	}
	res.Size += int64(len(endOfArchive))
	return res, nil
}

// blobRef is what a layer blob must hash to: the digest its manifest
// names it by ("" when its name implies none, as for docker save's
// <id>/layer.tar: then it is the uncompressed layer) and the diff_id of
// the layer it holds.
type blobRef struct {
	digest digest.Digest
	diffID digest.Digest
}

// uncompressed tells whether the blob is the layer's tar itself.
func (b blobRef) uncompressed() bool { return b.digest == "" || b.digest == b.diffID }

// storedDigest is the digest of the blob's bytes: the one its manifest
// names, else (the uncompressed layer) its diff_id.
func (b blobRef) storedDigest() digest.Digest {
	if b.digest == "" {
		return b.diffID
	}
	return b.digest
}

// contentKey is the same for two blobs exactly when their bytes are: a
// layer named once by its digest and once by its <id>/layer.tar is
// written once, and linked to the second time.
func (b blobRef) contentKey() string {
	if b.uncompressed() {
		return "tar:" + b.diffID.String()
	}
	return b.digest.String()
}

// verify checks data against the digest and the diff_id.
func (b blobRef) verify(data []byte) error { return verifyBlob(data, b.digest, b.diffID) }

// wanted is a layer blob the thin tarball lacks: where it goes, what it
// must hash to, and which images need it.
type wanted struct {
	name string // the member to write (where the manifest's name, links followed, leads)
	blobRef
	member string // as the manifest names it
	images []string
}

// thinLayers is what the images of a thin tarball need: the layer blobs
// it stores, with what each must hash to, and those it lacks.
type thinLayers struct {
	images  int                  // images in the tarball, those saved without their blobs not counted
	present map[string][]blobRef // stored member → the layer blobs it must be
	missing []*wanted            // in the order the images first name them
	byName  map[string]*wanted   // missing, by the member to write
}

// layersOf sorts the layers of the images of src into those it stores
// and those it lacks.
func layersOf(src *archive.Contents) (*thinLayers, error) {
	t := &thinLayers{present: map[string][]blobRef{}, byName: map[string]*wanted{}}
	for gi, g := range src.Groups {
		for _, ii := range g.Images {
			im := &src.Images[ii]
			if im.Missing != "" {
				continue
			}
			t.images++
			for _, l := range im.Layers {
				if err := t.add(src, l, src.Name(gi)); err != nil {
					return nil, err
				}
			}
		}
	}
	return t, nil
}

// add records the layer l of the image named image: present when its
// member (links followed) is stored, else missing.
func (t *thinLayers) add(src *archive.Contents, l archive.ContentLayer, image string) error {
	ref := blobRef{digest: l.Digest, diffID: l.DiffID}
	stored, _, end, err := src.Resolve(l.Member)
	switch {
	case err == nil:
		if !slices.Contains(t.present[stored], ref) {
			t.present[stored] = append(t.present[stored], ref)
		}
		return nil
	case !errors.Is(err, archive.ErrMemberAbsent):
		return err
	}
	wt := t.byName[end]
	if wt == nil {
		wt = &wanted{name: end, blobRef: ref, member: l.Member}
		t.byName[end] = wt
		t.missing = append(t.missing, wt)
	} else if wt.blobRef != ref {
		return fmt.Errorf("%s: %s stands for two different layers (%s and %s)", src.Path, end, wt.diffID, l.DiffID)
	}
	if !slices.Contains(wt.images, image) {
		wt.images = append(wt.images, image)
	}
	return nil
}

// blobSource is a layer blob a base tarball holds.
type blobSource struct {
	base   *archive.Contents
	member string // the regular member holding it
	diffID digest.Digest
	digest digest.Digest // of the blob as stored
	comp   tarindex.Compression
}

// size is the blob's size (0 if it cannot be read: writing it will say).
func (s blobSource) size() int64 {
	b, _ := s.base.Bytes(s.member)
	return int64(len(b))
}

// baseBlobs are the layer blobs the bases hold.
type baseBlobs struct {
	bases []*archive.Contents
	// byDigest: by the digest of the blob as stored (for an uncompressed
	// blob, its diff_id), the first base holding it.
	byDigest map[digest.Digest]blobSource
	// byDiffID: every form (one a digest) in which the bases hold each
	// layer.
	byDiffID map[digest.Digest][]blobSource
}

// indexBases lists the layer blobs the bases hold.
func indexBases(bases []*archive.Contents) (*baseBlobs, error) {
	ix := &baseBlobs{bases: bases, byDigest: map[digest.Digest]blobSource{}, byDiffID: map[digest.Digest][]blobSource{}}
	for _, b := range bases {
		for _, im := range b.Images {
			if im.Missing != "" {
				continue
			}
			for _, l := range im.Layers {
				stored, _, _, err := b.Resolve(l.Member)
				if err != nil {
					continue
				}
				s, err := sourceOf(b, stored, l)
				if err != nil {
					return nil, err
				}
				ix.add(s)
			}
		}
	}
	return ix, nil
}

// sourceOf describes the blob of the layer l, which the base b stores as
// the member stored.
func sourceOf(b *archive.Contents, stored string, l archive.ContentLayer) (blobSource, error) {
	blob, err := b.Bytes(stored)
	if err != nil {
		return blobSource{}, err
	}
	s := blobSource{base: b, member: stored, diffID: l.DiffID, digest: l.Digest, comp: compressionOf(blob)}
	if s.digest == "" {
		if s.comp == tarindex.CompressionNone {
			s.digest = l.DiffID
		} else {
			s.digest = digest.FromBytes(blob)
		}
	}
	return s, nil
}

func (ix *baseBlobs) add(s blobSource) {
	if _, ok := ix.byDigest[s.digest]; !ok {
		ix.byDigest[s.digest] = s
	}
	if !slices.ContainsFunc(ix.byDiffID[s.diffID], func(o blobSource) bool { return o.digest == s.digest }) {
		ix.byDiffID[s.diffID] = append(ix.byDiffID[s.diffID], s)
	}
}

// restore is a blob the thin tarball lacks and where it comes from.
type restore struct {
	want *wanted
	from blobSource
	// named: from is the very blob the manifest names, copied as it is.
	// Else it is the same layer in another form, decompressed unless it
	// is the uncompressed layer.
	named bool
	size  int64  // the blob's size; 0 until decompressed, for one that must be
	file  string // the layer decompressed into TempDir, when it is
}

// needsDecompressing tells whether the layer must be decompressed from
// the base's blob to be written.
func (r *restore) needsDecompressing() bool {
	return r.size == 0 && r.from.comp != tarindex.CompressionNone
}

// findSources finds in the bases where each missing blob comes from. The
// blobs none can give back make one error (archive.ErrLayerMissing)
// saying why for each.
func findSources(where string, bases []*archive.Contents, missing []*wanted) ([]*restore, error) {
	ix, err := indexBases(bases)
	if err != nil {
		return nil, err
	}
	var restores []*restore
	var problems []string
	for _, wt := range missing {
		r, problem := ix.source(wt)
		if problem != "" {
			problems = append(problems, problem)
			continue
		}
		restores = append(restores, r)
	}
	switch len(problems) {
	case 0:
		return restores, nil
	case 1:
		return nil, archive.Errorf(archive.ErrLayerMissing, "%s: %s", where, problems[0])
	}
	return nil, archive.Errorf(archive.ErrLayerMissing, "%s: %d layers cannot be put back: %s", where, len(problems), strings.Join(problems, "; "))
}

// source is where the bases give wt back from: the blob the manifest
// names, byte for byte, else, for an uncompressed layer, that layer in
// any form (an uncompressed one preferred). When they cannot, problem
// says why in one sentence.
func (ix *baseBlobs) source(wt *wanted) (r *restore, problem string) {
	if s, ok := ix.byDigest[wt.storedDigest()]; ok && (wt.digest != "" || s.comp == tarindex.CompressionNone) {
		return &restore{want: wt, from: s, named: true, size: s.size()}, ""
	}
	alts := ix.byDiffID[wt.diffID]
	switch {
	case len(alts) == 0:
		return nil, fmt.Sprintf("layer %s (%s, needed by %s) is missing: %s", wt.diffID, wt.member, strings.Join(wt.images, ", "), ix.absent())
	case !wt.uncompressed():
		var have []string
		for _, a := range alts {
			have = append(have, fmt.Sprintf("%s (%s, in %s)", a.digest, a.comp, a.base.Path))
		}
		return nil, fmt.Sprintf("layer %s (%s, needed by %s): the bases hold it only as %s, not as the blob %s the manifest names (a compressed blob cannot be made again byte for byte: give a base that has that blob)",
			wt.diffID, wt.member, strings.Join(wt.images, ", "), strings.Join(have, "; "), wt.digest)
	}
	r = &restore{want: wt, from: alts[0]}
	for _, a := range alts {
		if a.comp == tarindex.CompressionNone {
			r.from, r.size = a, a.size()
		}
	}
	return r, ""
}

// absent says where a layer no base holds was looked for.
func (ix *baseBlobs) absent() string {
	if len(ix.bases) == 0 {
		return "no base was given (--base)"
	}
	var names []string
	for _, b := range ix.bases {
		names = append(names, b.Path)
	}
	return "in none of the bases given (" + strings.Join(names, ", ") + ")"
}

// completeSize is the bytes Complete is known to write before it starts:
// the thin tarball's members and the blobs copied as they are (a layer
// to decompress is not counted: its size is known only once it is).
func completeSize(members []rawMember, restores []*restore) int64 {
	need := tarSize(members)
	for _, r := range restores {
		if r.named {
			need += r.size + 2*blockSize
		}
	}
	return need
}

// decompressFromBases decompresses into opts.TempDir the layers that must
// be, checking each against its diff_id; removeDecompressed removes them.
func decompressFromBases(restores []*restore, opts *CompleteOptions) error {
	for _, r := range restores {
		if !r.needsDecompressing() {
			continue
		}
		opts.progress("decompressing layer %s from %s", archive.ShortDigest(r.want.diffID), r.from.base.Path)
		b, _ := r.from.base.Bytes(r.from.member)
		file, size, err := decompressVerified(opts.Context, b, r.from.comp, r.want.diffID, opts.TempDir)
		if err != nil {
			return fmt.Errorf("%s: layer %s: %w", r.from.base.Path, r.want.diffID, err)
		}
		r.file, r.size = file, size
	}
	return nil
}

// removeDecompressed removes the files decompressFromBases wrote.
func removeDecompressed(restores []*restore) {
	for _, r := range restores {
		if r.file != "" {
			os.Remove(r.file)
		}
	}
}

// copyVerified writes the thin tarball's own members as they are,
// checking on the way each layer blob it stores. written maps the
// content key of each blob checked to the member holding it.
func copyVerified(w io.Writer, where string, members []rawMember, present map[string][]blobRef, res *CompleteResult) (written map[string]string, err error) {
	written = map[string]string{}
	for _, m := range members {
		for _, ref := range present[m.name] {
			if err := ref.verify(m.body); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", where, m.name, err)
			}
			res.Verified++
			written[ref.contentKey()] = m.name
		}
		n, err := m.write(w)
		if err != nil {
			return nil, err
		}
		res.Size += n
	}
	return written, nil
}

// writeRestores writes the blobs put back, each checked on the way. A
// blob equal to one already written (docker save's layer directories
// name a layer once more) becomes a symlink to it, as docker save makes.
func writeRestores(w io.Writer, hdrFor func(name string) *tar.Header, restores []*restore, written map[string]string, res *CompleteResult, opts *CompleteOptions) error {
	for _, r := range restores {
		key := r.want.contentKey()
		if prev, ok := written[key]; ok {
			n, err := writeLink(w, hdrFor(r.want.name), prev)
			if err != nil {
				return err
			}
			res.Size += n
			continue
		}
		opts.progress("putting back layer %s from %s", archive.ShortDigest(r.want.diffID), r.from.base.Path)
		n, err := writeRestored(w, hdrFor(r.want.name), r)
		if err != nil {
			return err
		}
		res.Verified++
		res.Size += n
		res.Restored = append(res.Restored, r.want.diffID)
		res.RestoredBytes += r.size
		written[key] = r.want.name
	}
	return nil
}

// writeLink writes h as a symlink to the member target and returns the
// bytes written.
func writeLink(w io.Writer, h *tar.Header, target string) (int64, error) {
	rel, err := filepath.Rel(path.Dir(h.Name), target)
	if err != nil {
		return 0, err
	}
	b, err := encodeLink(h, rel)
	if err != nil {
		return 0, err
	}
	if _, err := w.Write(b); err != nil {
		return 0, err
	}
	return int64(len(b)), nil
}

// sampleHeader gives the header of a member put back: the owner, mode and
// time of a member of the same directory (docker save's json beside
// layer.tar), else of the other blobs or of the tarball's lists.
func sampleHeader(members []rawMember) func(name string) *tar.Header {
	return func(name string) *tar.Header {
		dir := path.Dir(name)
		var best *tar.Header
		for _, m := range members {
			if m.hdr.Typeflag != tar.TypeReg {
				continue
			}
			if path.Dir(m.name) == dir && dir != "." {
				best = m.hdr
				break
			}
			if best == nil && (m.name == "manifest.json" || m.name == "index.json") {
				best = m.hdr
			}
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644}
		if best != nil {
			h.Mode, h.Uid, h.Gid, h.Uname, h.Gname, h.ModTime = best.Mode, best.Uid, best.Gid, best.Uname, best.Gname, best.ModTime
		}
		return h
	}
}

// writeRestored writes one blob put back: the base's bytes, or the layer
// decompressed from them. It checks the blob against its digests on the
// way and returns the bytes written.
func writeRestored(w io.Writer, h *tar.Header, r *restore) (int64, error) {
	if r.file != "" {
		return writeDecompressed(w, h, r)
	}
	b, err := r.from.base.Bytes(r.from.member)
	if err != nil {
		return 0, err
	}
	if err := r.want.verify(b); err != nil {
		return 0, fmt.Errorf("%s: %s: %w", r.from.base.Path, r.from.member, err)
	}
	h.Size = int64(len(b))
	header, err := headerBlocks(h)
	if err != nil {
		return 0, err
	}
	return writeBlocks(w, header, h.Size, writeBytes(b))
}

// writeDecompressed writes the layer decompressFromBases wrote, checking
// that it is still the layer it checked.
func writeDecompressed(w io.Writer, h *tar.Header, r *restore) (int64, error) {
	h.Size = r.size
	header, err := headerBlocks(h)
	if err != nil {
		return 0, err
	}
	return writeBlocks(w, header, r.size, func(w io.Writer) error {
		hw := newCountingHash()
		if _, err := copyFile(io.MultiWriter(w, hw), r.file); err != nil {
			return err
		}
		if hw.n != r.size || hw.digest() != r.want.diffID {
			return archive.Errorf(archive.ErrDiffIDMismatch, "%s: the layer decompressed from %s changed while it was copied", r.file, r.from.base.Path)
		}
		return nil
	})
}
