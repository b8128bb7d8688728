package repack

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

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
	Free     func() (int64, error)
}

func (o *CompleteOptions) progress(format string, a ...any) {
	if o.Progress != nil {
		o.Progress(fmt.Sprintf(format, a...))
	}
}

// CompleteResult says what Complete wrote.
type CompleteResult struct {
	Images        int             // images in the tarball
	Restored      []digest.Digest // diff_ids of the layer blobs put back
	RestoredBytes int64
	Verified      int // layer blobs checked against their digests
	Size          int64
}

// blobSource is a layer blob a base tarball holds.
type blobSource struct {
	base   *archive.Contents
	member string // the regular member holding it
	diffID digest.Digest
	digest digest.Digest // of the blob as stored
	comp   tarindex.Compression
}

// wanted is a layer blob the thin tarball lacks: where it goes, what it
// must hash to, and which images need it.
type wanted struct {
	name   string // the member to write (where the manifest's name, links followed, leads)
	diffID digest.Digest
	digest digest.Digest // "" when the name implies none (docker save's <id>/layer.tar): then the uncompressed layer
	member string        // as the manifest names it
	images []string
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
	res := &CompleteResult{}
	type expect struct{ digest, diffID digest.Digest }
	present := map[string][]expect{}
	var want []*wanted
	byName := map[string]*wanted{}
	for gi, g := range src.Groups {
		for _, ii := range g.Images {
			im := &src.Images[ii]
			if im.Missing != "" {
				continue
			}
			res.Images++
			for _, l := range im.Layers {
				stored, _, end, err := src.Resolve(l.Member)
				switch {
				case err == nil:
					e := expect{l.Digest, l.DiffID}
					if !slices.Contains(present[stored], e) {
						present[stored] = append(present[stored], e)
					}
					continue
				case !errors.Is(err, archive.ErrMemberAbsent):
					return nil, err
				}
				wt := byName[end]
				if wt == nil {
					wt = &wanted{name: end, diffID: l.DiffID, digest: l.Digest, member: l.Member}
					byName[end] = wt
					want = append(want, wt)
				} else if wt.diffID != l.DiffID || wt.digest != l.Digest {
					return nil, fmt.Errorf("%s: %s stands for two different layers (%s and %s)", src.Path, end, wt.diffID, l.DiffID)
				}
				if n := src.Name(gi); !slices.Contains(wt.images, n) {
					wt.images = append(wt.images, n)
				}
			}
		}
	}

	// Where each wanted blob comes from.
	byDigest, byDiffID, err := indexBases(bases)
	if err != nil {
		return nil, err
	}
	type restore struct {
		w    *wanted
		src  blobSource
		file string // the layer decompressed into TempDir, when it is
		size int64
	}
	var restores []restore
	var names []string
	for _, b := range bases {
		names = append(names, b.Path)
	}
	absent := "no base was given (--base)"
	if len(names) > 0 {
		absent = "in none of the bases given (" + strings.Join(names, ", ") + ")"
	}
	var problems []string
	var need int64 = int64(len(endOfArchive))
	for _, m := range members {
		need += m.size()
	}
	for _, wt := range want {
		uncompressed := wt.digest == "" || wt.digest == wt.diffID
		key := wt.digest
		if key == "" {
			key = wt.diffID
		}
		if s, ok := byDigest[key]; ok && (wt.digest != "" || s.comp == tarindex.CompressionNone) {
			b, _ := s.base.Bytes(s.member)
			restores = append(restores, restore{w: wt, src: s, size: int64(len(b))})
			need += int64(len(b)) + 2*blockSize
			continue
		}
		if alts := byDiffID[wt.diffID]; len(alts) > 0 && uncompressed {
			r := restore{w: wt, src: alts[0]}
			for _, a := range alts {
				if a.comp == tarindex.CompressionNone {
					b, _ := a.base.Bytes(a.member)
					r.src, r.size = a, int64(len(b))
				}
			}
			restores = append(restores, r)
			continue
		} else if len(alts) > 0 {
			var have []string
			for _, a := range alts {
				have = append(have, fmt.Sprintf("%s (%s, in %s)", a.digest, a.comp, a.base.Path))
			}
			problems = append(problems, fmt.Sprintf("layer %s (%s, needed by %s): the bases hold it only as %s, not as the blob %s the manifest names (a compressed blob cannot be made again byte for byte: give a base that has that blob)",
				wt.diffID, wt.member, strings.Join(wt.images, ", "), strings.Join(have, "; "), wt.digest))
			continue
		}
		problems = append(problems, fmt.Sprintf("layer %s (%s, needed by %s) is missing: %s", wt.diffID, wt.member, strings.Join(wt.images, ", "), absent))
	}
	switch len(problems) {
	case 0:
	case 1:
		return nil, archive.Errorf(archive.ErrLayerMissing, "%s: %s", src.Path, problems[0])
	default:
		return nil, archive.Errorf(archive.ErrLayerMissing, "%s: %d layers cannot be put back: %s", src.Path, len(problems), strings.Join(problems, "; "))
	}
	if err := checkSpace(opts.Free, need, "the output"); err != nil {
		return nil, fmt.Errorf("%s: %w", src.Path, err)
	}

	// Layers to decompress from a base.
	for i := range restores {
		r := &restores[i]
		if r.size > 0 || r.src.comp == tarindex.CompressionNone {
			continue
		}
		opts.progress("decompressing layer %s from %s", archive.ShortDigest(r.w.diffID), r.src.base.Path)
		b, _ := r.src.base.Bytes(r.src.member)
		file, size, err := decompressVerified(b, r.src.comp, r.w.diffID, opts.TempDir)
		if err != nil {
			return nil, fmt.Errorf("%s: layer %s: %w", r.src.base.Path, r.w.diffID, err)
		}
		defer os.Remove(file)
		r.file, r.size = file, size
	}

	// The thin tarball's own members, the layer blobs checked on the way.
	written := map[string]string{} // content key → member holding it
	contentKey := func(dgst, diffID digest.Digest) string {
		if dgst == "" || dgst == diffID {
			return "tar:" + diffID.String()
		}
		return dgst.String()
	}
	opts.progress("copying %s, checking every layer blob", src.Path)
	for _, m := range members {
		for _, e := range present[m.name] {
			if err := verifyBlob(m.body, e.digest, e.diffID); err != nil {
				return nil, fmt.Errorf("%s: %s: %w", src.Path, m.name, err)
			}
			res.Verified++
			written[contentKey(e.digest, e.diffID)] = m.name
		}
		n, err := m.write(w)
		if err != nil {
			return nil, err
		}
		res.Size += n
	}

	// The blobs put back, after the rest.
	hdrFor := sampleHeader(members)
	for _, r := range restores {
		key := contentKey(r.w.digest, r.w.diffID)
		if prev, ok := written[key]; ok {
			// The same blob under another name (docker save's layer
			// directories): a symlink, as docker save makes.
			rel, err := filepath.Rel(path.Dir(r.w.name), prev)
			if err != nil {
				return nil, err
			}
			b, err := encodeLink(hdrFor(r.w.name), rel)
			if err != nil {
				return nil, err
			}
			if _, err := w.Write(b); err != nil {
				return nil, err
			}
			res.Size += int64(len(b))
			continue
		}
		opts.progress("putting back layer %s from %s", archive.ShortDigest(r.w.diffID), r.src.base.Path)
		n, err := writeRestored(w, hdrFor(r.w.name), r.src, r.file, r.size, r.w)
		if err != nil {
			return nil, err
		}
		res.Verified++
		res.Size += n
		res.Restored = append(res.Restored, r.w.diffID)
		res.RestoredBytes += r.size
		written[key] = r.w.name
	}
	if _, err := w.Write(endOfArchive); err != nil {
		return nil, err
	}
	res.Size += int64(len(endOfArchive))
	return res, nil
}

// indexBases lists the layer blobs the bases hold: by the digest of the
// blob (for an uncompressed blob, its diff_id), and by diff_id.
func indexBases(bases []*archive.Contents) (map[digest.Digest]blobSource, map[digest.Digest][]blobSource, error) {
	byDigest := map[digest.Digest]blobSource{}
	byDiffID := map[digest.Digest][]blobSource{}
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
				blob, err := b.Bytes(stored)
				if err != nil {
					return nil, nil, err
				}
				s := blobSource{base: b, member: stored, diffID: l.DiffID, digest: l.Digest, comp: tarindex.DetectCompression(blob[:min(len(blob), 8)])}
				if s.digest == "" {
					if s.comp == tarindex.CompressionNone {
						s.digest = l.DiffID
					} else {
						s.digest = digest.FromBytes(blob)
					}
				}
				if _, ok := byDigest[s.digest]; !ok {
					byDigest[s.digest] = s
				}
				if !slices.ContainsFunc(byDiffID[l.DiffID], func(o blobSource) bool { return o.digest == s.digest }) {
					byDiffID[l.DiffID] = append(byDiffID[l.DiffID], s)
				}
			}
		}
	}
	return byDigest, byDiffID, nil
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

// writeRestored writes one blob put back: from the base's bytes, or from
// the decompressed file. It checks the blob against its digests on the
// way and returns the bytes written.
func writeRestored(w io.Writer, h *tar.Header, s blobSource, file string, size int64, wt *wanted) (int64, error) {
	var body []byte
	if file == "" {
		b, err := s.base.Bytes(s.member)
		if err != nil {
			return 0, err
		}
		if err := verifyBlob(b, wt.digest, wt.diffID); err != nil {
			return 0, fmt.Errorf("%s: %s: %w", s.base.Path, s.member, err)
		}
		body = b
		size = int64(len(b))
	}
	h.Size = size
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(h); err != nil {
		return 0, err
	}
	if _, err := w.Write(buf.Bytes()); err != nil {
		return 0, err
	}
	n := int64(buf.Len())
	if body != nil {
		if _, err := w.Write(body); err != nil {
			return 0, err
		}
	} else {
		f, err := os.Open(file)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		hw := newCountingHash()
		if _, err := io.Copy(io.MultiWriter(w, hw), f); err != nil {
			return 0, err
		}
		if hw.n != size || hw.digest() != wt.diffID {
			return 0, archive.Errorf(archive.ErrDiffIDMismatch, "%s: the layer decompressed from %s changed while it was copied", file, s.base.Path)
		}
	}
	n += size
	if pad := roundBlock(size) - size; pad > 0 {
		if _, err := w.Write(make([]byte, pad)); err != nil {
			return 0, err
		}
		n += pad
	}
	return n, nil
}
