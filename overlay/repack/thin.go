package repack

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"

	"github.com/imgmount/imgmount/internal/progress"
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
	// Tasks, if set, hears the bytes written.
	Tasks progress.Tasks
	// Free, if set, tells the bytes free where the output goes.
	Free func() (int64, error)
	// Context, if set, cancels the work: it stops at its next write,
	// returning the context's error.
	Context context.Context
}

func (o *ThinOptions) progress(format string, a ...any) { progressf(o.Progress, format, a...) }

// have is what the receiver holds (nothing, unless Have says).
func (o *ThinOptions) have() *Have {
	if o.Have == nil {
		return NewHave()
	}
	return o.Have
}

// progressf tells progress, if set, about a long step.
func progressf(progress func(string), format string, a ...any) {
	if progress != nil {
		progress(fmt.Sprintf(format, a...))
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
	keep, err := keptGroups(src, opts.Images)
	if err != nil {
		return nil, err
	}
	res := &ThinResult{}
	res.Images, res.Dropped = groupNames(src, keep)
	use, err := memberUses(src, keep, opts.have())
	if err != nil {
		return nil, err
	}
	res.Absent = use.absent
	drop, err := use.dropped(src, members, keep, res)
	if err != nil {
		return nil, err
	}
	var rewritten map[string]rawMember
	if len(res.Dropped) > 0 {
		if rewritten, err = rewriteLists(src, keep, members); err != nil {
			return nil, err
		}
	}
	out := thinMembers(members, drop, rewritten)

	res.Size = tarSize(out)
	if err := checkSpace(opts.Free, res.Size, "the output"); err != nil {
		return nil, fmt.Errorf("%s: %w", src.Path, err)
	}
	opts.progress("leaving out %d layer blobs (%s) of %s", len(res.Omitted), archive.HumanSize(res.OmittedBytes), src.Path)
	if err := withTask(opts.Context, opts.Tasks, "writing the thin tarball", res.Size, w, func(w io.Writer) error {
		return writeTar(w, out)
	}); err != nil {
		return nil, err
	}
	return res, nil
}

// keptGroups tells which groups of src Thin keeps: those the queries
// name, or every one when there is no query.
func keptGroups(src *archive.Contents, queries []string) ([]bool, error) {
	keep := make([]bool, len(src.Groups))
	if len(queries) == 0 {
		for i := range keep {
			keep[i] = true
		}
	}
	for _, q := range queries {
		gs, err := src.Match(q)
		if err != nil {
			return nil, err
		}
		for _, g := range gs {
			keep[g] = true
		}
	}
	return keep, nil
}

// groupNames are the names of the groups kept and of those dropped.
func groupNames(src *archive.Contents, keep []bool) (kept, dropped []string) {
	for gi := range src.Groups {
		if keep[gi] {
			kept = append(kept, src.Name(gi))
		} else {
			dropped = append(dropped, src.Name(gi))
		}
	}
	return kept, dropped
}

// memberUse is which members the images of a tarball use, and which
// layer blobs of the kept images the receiver has.
type memberUse struct {
	// owned: by group, the members its images use: metadata, layer
	// blobs, the links to them and docker save's layer directories.
	owned      [][]string
	kept       map[string]bool          // the members a kept group uses
	needed     map[string]bool          // stored layer blobs a kept image needs sent
	had        map[string]digest.Digest // stored layer blobs of kept images the receiver has → diff_id
	absent     []digest.Digest          // diff_ids of the kept layers whose blobs the tarball already lacks
	absentSeen map[digest.Digest]bool
}

// memberUses sorts the members of src by the images using them.
func memberUses(src *archive.Contents, keep []bool, have *Have) (*memberUse, error) {
	u := &memberUse{
		owned: make([][]string, len(src.Groups)), kept: map[string]bool{}, needed: map[string]bool{},
		had: map[string]digest.Digest{}, absentSeen: map[digest.Digest]bool{},
	}
	for gi, g := range src.Groups {
		for _, ii := range g.Images {
			if err := u.addImage(src, gi, &src.Images[ii], keep[gi], have); err != nil {
				return nil, err
			}
		}
		if keep[gi] {
			for _, m := range u.owned[gi] {
				u.kept[m] = true
			}
		}
	}
	return u, nil
}

// addImage records the members the image im of group gi uses and, when
// the group is kept, which of its layer blobs the receiver has (the
// whole chain below them included).
func (u *memberUse) addImage(src *archive.Contents, gi int, im *archive.ContentImage, kept bool, have *Have) error {
	u.owned[gi] = append(u.owned[gi], im.Metadata...)
	var leftOut []bool
	if kept {
		leftOut = have.LeftOut(im.DiffIDs)
	}
	for i, l := range im.Layers {
		stored, links, _, err := src.Resolve(l.Member)
		switch {
		case errors.Is(err, archive.ErrMemberAbsent):
			if kept && !u.absentSeen[l.DiffID] {
				u.absentSeen[l.DiffID] = true
				u.absent = append(u.absent, l.DiffID)
			}
		case err != nil:
			return err
		}
		u.owned[gi] = append(u.owned[gi], links...)
		u.owned[gi] = append(u.owned[gi], legacyLayerDirs(append(links, l.Member))...)
		if stored == "" {
			continue
		}
		u.owned[gi] = append(u.owned[gi], stored)
		u.owned[gi] = append(u.owned[gi], legacyLayerDirs([]string{stored})...)
		switch {
		case !kept:
		case leftOut[i]:
			u.had[stored] = l.DiffID
		default:
			u.needed[stored] = true
		}
	}
	return nil
}

// dropped is the members Thin leaves out: the layer blobs the receiver
// has (counted in res), the members only dropped groups use, and the
// members that go with them.
func (u *memberUse) dropped(src *archive.Contents, members []rawMember, keep []bool, res *ThinResult) (map[string]bool, error) {
	drop := map[string]bool{}
	if err := u.leaveOutHad(src, drop, res); err != nil {
		return nil, err
	}
	u.dropUnkept(drop, keep)
	dropDependents(src, members, drop)
	return drop, nil
}

// leaveOutHad adds to drop the layer blobs the receiver has (but those a
// kept image it lacks shares) and counts them in res.
func (u *memberUse) leaveOutHad(src *archive.Contents, drop map[string]bool, res *ThinResult) error {
	for stored, d := range u.had {
		if u.needed[stored] {
			continue
		}
		drop[stored] = true
		b, err := src.Bytes(stored)
		if err != nil {
			return err
		}
		res.Omitted = append(res.Omitted, d)
		res.OmittedBytes += int64(len(b))
	}
	return nil
}

// dropUnkept adds to drop the members only dropped groups use.
func (u *memberUse) dropUnkept(drop map[string]bool, keep []bool) {
	for gi, owned := range u.owned {
		if keep[gi] {
			continue
		}
		for _, m := range owned {
			if !u.kept[m] {
				drop[m] = true
			}
		}
	}
}

// dropDependents adds to drop the members that go with those dropped:
// the files of a dropped docker save layer directory, and the hard links
// to a dropped member.
func dropDependents(src *archive.Contents, members []rawMember, drop map[string]bool) {
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
}

// thinMembers are the members Thin writes: those not dropped, the lists
// of images as rewritten.
func thinMembers(members []rawMember, drop map[string]bool, rewritten map[string]rawMember) []rawMember {
	var out []rawMember
	for _, m := range members {
		if drop[m.name] {
			continue
		}
		if r, ok := rewritten[m.name]; ok {
			m = r
		}
		out = append(out, m)
	}
	return out
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
