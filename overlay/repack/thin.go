package repack

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"

	"github.com/imgmount/imgmount/overlay/archive"
	digest "github.com/opencontainers/go-digest"
)

// ThinOptions says what Thin leaves out.
type ThinOptions struct {
	// Have is what the receiver holds; the blobs of its layers are left
	// out.
	Have *Have
	// Images, if set, keeps only the images these queries name (as
	// --image: a tag or a digest prefix; every platform of a matched
	// image); the others are dropped with every member only they use.
	Images []string
	// Progress, if set, hears about long steps.
	Progress func(string)
	// Free, if set, tells the bytes free where the output goes.
	Free func() (int64, error)
}

func (o *ThinOptions) progress(format string, a ...any) {
	if o.Progress != nil {
		o.Progress(fmt.Sprintf(format, a...))
	}
}

// ThinResult says what Thin wrote.
type ThinResult struct {
	Images       []string        // the images kept, as messages name them
	Dropped      []string        // the images dropped (Images asked for others)
	Omitted      []digest.Digest // diff_ids of the layer blobs left out
	OmittedBytes int64           // their stored size
	Absent       []digest.Digest // diff_ids whose blobs the input already left out
	Size         int64           // bytes written
}

// Thin writes to w the tarball src with the layer blobs opts.Have has
// left out (and, with opts.Images, only the images named). The configs,
// manifests and index stay as they are (byte for byte), so the images
// keep their IDs and manifest digests; manifest.json still lists the
// left-out layers, which docker load takes from its store and imgmount
// from --base. Links in the tarball to a left-out blob stay (dangling)
// if symbolic, and go if hard (a hard link to nothing cannot be
// extracted). A compressed tarball is written uncompressed.
func Thin(src *archive.Contents, w io.Writer, opts ThinOptions) (*ThinResult, error) {
	members, err := scanMembers(src)
	if err != nil {
		return nil, err
	}
	keep := make([]bool, len(src.Groups))
	if len(opts.Images) == 0 {
		for i := range keep {
			keep[i] = true
		}
	}
	for _, q := range opts.Images {
		gs, err := src.Match(q)
		if err != nil {
			return nil, err
		}
		for _, g := range gs {
			keep[g] = true
		}
	}
	have := opts.Have
	if have == nil {
		have = NewHave()
	}
	res := &ThinResult{}
	needed := map[string]bool{}                // stored members a kept layer needs
	omittable := map[string]digest.Digest{}    // stored members the receiver has → diff_id
	ownedKept := map[string]bool{}             // members the kept images use
	owned := make([][]string, len(src.Groups)) // members each group uses
	absent := map[digest.Digest]bool{}
	for gi, g := range src.Groups {
		if keep[gi] {
			res.Images = append(res.Images, src.Name(gi))
		} else {
			res.Dropped = append(res.Dropped, src.Name(gi))
		}
		for _, ii := range g.Images {
			im := &src.Images[ii]
			owned[gi] = append(owned[gi], im.Metadata...)
			var leftOut []bool
			if keep[gi] {
				leftOut = have.LeftOut(im.DiffIDs)
			}
			for i, l := range im.Layers {
				stored, links, _, err := src.Resolve(l.Member)
				switch {
				case errors.Is(err, archive.ErrMemberAbsent):
					if keep[gi] && !absent[l.DiffID] {
						absent[l.DiffID] = true
						res.Absent = append(res.Absent, l.DiffID)
					}
				case err != nil:
					return nil, err
				}
				owned[gi] = append(owned[gi], links...)
				owned[gi] = append(owned[gi], legacyLayerDirs(append(links, l.Member))...)
				if stored == "" {
					continue
				}
				owned[gi] = append(owned[gi], stored)
				owned[gi] = append(owned[gi], legacyLayerDirs([]string{stored})...)
				switch {
				case !keep[gi]:
				case leftOut[i]:
					omittable[stored] = l.DiffID
				default:
					needed[stored] = true
				}
			}
		}
		if keep[gi] {
			for _, m := range owned[gi] {
				ownedKept[m] = true
			}
		}
	}

	drop := map[string]bool{}
	for stored, d := range omittable {
		if needed[stored] {
			continue
		}
		drop[stored] = true
		b, err := src.Bytes(stored)
		if err != nil {
			return nil, err
		}
		res.Omitted = append(res.Omitted, d)
		res.OmittedBytes += int64(len(b))
	}
	for gi := range src.Groups {
		if keep[gi] {
			continue
		}
		for _, m := range owned[gi] {
			if !ownedKept[m] {
				drop[m] = true
			}
		}
	}
	dropDirs := map[string]bool{}
	for m := range drop {
		if isLegacyLayerDir(m) {
			dropDirs[m] = true
		}
	}
	for _, m := range members {
		if m.name == "" || drop[m.name] {
			continue
		}
		if dropDirs[path.Dir(m.name)] {
			drop[m.name] = true
			continue
		}
		if m.hdr.Typeflag == tar.TypeLink {
			// A hard link to a member left out cannot be extracted.
			if stored, _, _, err := src.Resolve(m.name); err == nil && drop[stored] {
				drop[m.name] = true
			}
		}
	}

	rewritten := map[string][]byte{}
	if len(res.Dropped) > 0 {
		if rewritten, err = rewriteLists(src, keep, members); err != nil {
			return nil, err
		}
	}
	var total int64 = int64(len(endOfArchive))
	for _, m := range members {
		switch {
		case drop[m.name]:
		case rewritten[m.name] != nil:
			total += int64(len(rewritten[m.name]))
		default:
			total += m.size()
		}
	}
	if err := checkSpace(opts.Free, total, "the output"); err != nil {
		return nil, fmt.Errorf("%s: %w", src.Path, err)
	}
	opts.progress("leaving out %d layer blobs (%s) of %s", len(res.Omitted), archive.HumanSize(res.OmittedBytes), src.Path)
	for _, m := range members {
		switch {
		case drop[m.name]:
		case rewritten[m.name] != nil:
			if _, err := w.Write(rewritten[m.name]); err != nil {
				return nil, err
			}
		default:
			if _, err := m.write(w); err != nil {
				return nil, err
			}
		}
	}
	if _, err := w.Write(endOfArchive); err != nil {
		return nil, err
	}
	res.Size = total
	return res, nil
}

// legacyLayerDirs are the docker save layer directories (<64 hex>/) that
// the members names (<dir>/layer.tar) sit in.
func legacyLayerDirs(names []string) []string {
	var out []string
	for _, n := range names {
		if d := path.Dir(n); path.Base(n) == "layer.tar" && isLegacyLayerDir(d) {
			out = append(out, d)
		}
	}
	return out
}

// isLegacyLayerDir tells whether name is a docker save layer directory.
func isLegacyLayerDir(name string) bool {
	if len(name) != 64 {
		return false
	}
	for _, r := range name {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}
