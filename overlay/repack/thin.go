package repack

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/tarindex"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
)

// Thin and Complete copy an image tarball member by member: Thin leaves
// out the layer blobs a receiver already has, Complete puts them back
// from base tarballs. Every other member (configs, manifests, index.json,
// manifest.json, repositories, the layer directories' json and VERSION)
// is copied as it is, header and data blocks byte for byte, so image IDs
// and manifest digests do not change.

// Have is what a receiving side holds: layers by diff_id, and where known
// the chains they sit in. docker load takes a layer from its store only
// when the layer and everything below it match (it looks the layer up by
// its chain ID), so a layer is left out only when its whole chain is had.
type Have struct {
	// ChainIDs are the chain IDs (OCI image spec: ChainID(L0) = DiffID(L0),
	// ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))) of
	// every prefix of every image the receiver holds.
	ChainIDs map[digest.Digest]bool
	// DiffIDs are diff_ids from plain lists, whose chains are unknown: a
	// layer is taken as had when it and every layer below it are listed.
	DiffIDs map[digest.Digest]bool
	// All is every diff_id seen, chained or not (what `imgmount have`
	// prints).
	All map[digest.Digest]bool
}

// NewHave is an empty Have.
func NewHave() *Have {
	return &Have{ChainIDs: map[digest.Digest]bool{}, DiffIDs: map[digest.Digest]bool{}, All: map[digest.Digest]bool{}}
}

// ChainIDs are the chain IDs of every prefix of the layers diffIDs.
func ChainIDs(diffIDs []digest.Digest) []digest.Digest {
	out := make([]digest.Digest, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		out[i] = digest.FromString(out[i-1].String() + " " + d.String())
	}
	return out
}

// AddImage records an image the receiver holds: its layers, base first.
func (h *Have) AddImage(diffIDs []digest.Digest) {
	for i, c := range ChainIDs(diffIDs) {
		h.ChainIDs[c] = true
		h.All[diffIDs[i]] = true
	}
}

// AddDiffID records a diff_id whose chain is unknown.
func (h *Have) AddDiffID(d digest.Digest) {
	h.DiffIDs[d] = true
	h.All[d] = true
}

// Merge adds o to h.
func (h *Have) Merge(o *Have) {
	for d := range o.ChainIDs {
		h.ChainIDs[d] = true
	}
	for d := range o.DiffIDs {
		h.DiffIDs[d] = true
	}
	for d := range o.All {
		h.All[d] = true
	}
}

// LeftOut tells, for each layer of an image (base first), whether the
// receiver has it: its chain ID is had, or it and every layer below it
// are in a plain list.
func (h *Have) LeftOut(diffIDs []digest.Digest) []bool {
	out := make([]bool, len(diffIDs))
	chains := ChainIDs(diffIDs)
	plain := true
	for i, d := range diffIDs {
		plain = plain && h.DiffIDs[d]
		out[i] = plain || h.ChainIDs[chains[i]]
	}
	return out
}

// HaveList is the JSON form of a Have, as `imgmount have --json` prints
// it: every diff_id, and the chain IDs.
type HaveList struct {
	DiffIDs  []digest.Digest `json:"diff_ids"`
	ChainIDs []digest.Digest `json:"chain_ids,omitempty"`
}

// List is h in its JSON form, sorted.
func (h *Have) List() HaveList {
	l := HaveList{DiffIDs: sortedDigests(h.All), ChainIDs: sortedDigests(h.ChainIDs)}
	if l.DiffIDs == nil {
		l.DiffIDs = []digest.Digest{}
	}
	return l
}

func sortedDigests(m map[digest.Digest]bool) []digest.Digest {
	var out []digest.Digest
	for d := range m {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// ParseHave reads a list of what a receiver has, in any of the forms
// people have at hand: the JSON `imgmount have --json` prints
// ({"diff_ids": [...], "chain_ids": [...]}; without chain_ids the
// diff_ids count as a plain list), the JSON `docker image inspect` prints
// (its RootFS.Layers), or plain text: one diff_id (sha256:...) a line,
// blank lines and lines starting with # ignored. name is for messages.
func ParseHave(b []byte, name string) (*Have, error) {
	h := NewHave()
	trimmed := bytes.TrimSpace(b)
	switch {
	case len(trimmed) == 0:
		return h, nil
	case trimmed[0] == '{':
		var l HaveList
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(trimmed, &l); err != nil {
			return nil, fmt.Errorf("%s: not the JSON imgmount have prints: %w", name, err)
		}
		if err := json.Unmarshal(trimmed, &keys); err != nil {
			return nil, fmt.Errorf("%s: not the JSON imgmount have prints: %w", name, err)
		}
		if _, ok := keys["diff_ids"]; !ok {
			return nil, fmt.Errorf("%s: a JSON object without diff_ids (want what imgmount have --json prints)", name)
		}
		_, chained := keys["chain_ids"]
		for i, d := range l.DiffIDs {
			if err := d.Validate(); err != nil {
				return nil, fmt.Errorf("%s: diff_ids[%d] %q: %w", name, i, d, err)
			}
			if chained {
				h.All[d] = true
			} else {
				h.AddDiffID(d)
			}
		}
		for i, d := range l.ChainIDs {
			if err := d.Validate(); err != nil {
				return nil, fmt.Errorf("%s: chain_ids[%d] %q: %w", name, i, d, err)
			}
			h.ChainIDs[d] = true
		}
	case trimmed[0] == '[':
		var imgs []struct {
			RootFS struct{ Layers []digest.Digest }
		}
		if err := json.Unmarshal(trimmed, &imgs); err != nil {
			return nil, fmt.Errorf("%s: not the JSON docker image inspect prints: %w", name, err)
		}
		for i, im := range imgs {
			for _, d := range im.RootFS.Layers {
				if err := d.Validate(); err != nil {
					return nil, fmt.Errorf("%s: image %d: layer %q: %w", name, i, d, err)
				}
			}
			h.AddImage(im.RootFS.Layers)
		}
	default:
		for n, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			d := digest.Digest(line)
			if err := d.Validate(); err != nil {
				return nil, fmt.Errorf("%s: line %d: %q is not a diff_id (want sha256: and 64 hex digits): %w", name, n+1, line, err)
			}
			h.AddDiffID(d)
		}
	}
	return h, nil
}

// HaveOf is what the tarball c can supply: the layers of each of its
// images that it stores, up to the first it leaves out.
func HaveOf(c *archive.Contents) *Have {
	h := NewHave()
	for _, im := range c.Images {
		if im.Missing != "" {
			continue
		}
		n := 0
		for _, l := range im.Layers {
			if !c.Has(l.Member) {
				break
			}
			n++
		}
		h.AddImage(im.DiffIDs[:n])
	}
	return h
}

// rawMember is one member of an image source as Thin and Complete copy
// it: a tarball's member as stored (header blocks, extended headers
// included, and padded data), or a file of a directory, whose header is
// made from its stat.
type rawMember struct {
	hdr  *tar.Header
	name string // cleaned as archive cleans it ("" for a global header)
	raw  []byte // the header and data blocks as the tarball stores them; nil for a directory's file
	body []byte // the data
}

// encoded is the member as it is written.
func (m *rawMember) encoded() ([]byte, []byte, error) {
	if m.raw != nil {
		return m.raw, nil, nil
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// WriteHeader writes the header blocks at once; the data and its
	// padding are the caller's.
	if err := tw.WriteHeader(m.hdr); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", m.name, err)
	}
	return buf.Bytes(), m.body, nil
}

// size is the bytes the member takes written.
func (m *rawMember) size() int64 {
	if m.raw != nil {
		return int64(len(m.raw))
	}
	h, _, err := m.encoded()
	if err != nil {
		return 0 // writing it will say
	}
	return int64(len(h)) + roundBlock(int64(len(m.body)))
}

// write writes the member.
func (m *rawMember) write(w io.Writer) (int64, error) {
	h, body, err := m.encoded()
	if err != nil {
		return 0, err
	}
	if _, err := w.Write(h); err != nil {
		return 0, err
	}
	n := int64(len(h))
	if body != nil {
		if _, err := w.Write(body); err != nil {
			return 0, err
		}
		pad := roundBlock(int64(len(body))) - int64(len(body))
		if _, err := w.Write(make([]byte, pad)); err != nil {
			return 0, err
		}
		n += int64(len(body)) + pad
	}
	return n, nil
}

// scanMembers lists the members of the image source c.
func scanMembers(c *archive.Contents) ([]rawMember, error) {
	if c.Dir {
		return scanDir(c)
	}
	return scanTar(c.Data, c.Path)
}

// scanTar lists the members of the tar in data. Only headers are read:
// the data is skipped.
func scanTar(data []byte, where string) ([]rawMember, error) {
	br := bytes.NewReader(data)
	tr := tar.NewReader(br)
	var out []rawMember
	var pos int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: reading the tarball: %w", where, err)
		}
		dataAt := br.Size() - int64(br.Len())
		var size int64
		switch hdr.Typeflag {
		case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo, tar.TypeXGlobalHeader:
		case tar.TypeGNUSparse:
			return nil, fmt.Errorf("%s: member %s: a sparse file in an image tarball", where, hdr.Name)
		default:
			if _, ok := hdr.PAXRecords["GNU.sparse.map"]; ok {
				return nil, fmt.Errorf("%s: member %s: a sparse file in an image tarball", where, hdr.Name)
			}
			if _, ok := hdr.PAXRecords["GNU.sparse.major"]; ok {
				return nil, fmt.Errorf("%s: member %s: a sparse file in an image tarball", where, hdr.Name)
			}
			size = hdr.Size
		}
		end := roundBlock(dataAt + size)
		if end > int64(len(data)) {
			return nil, fmt.Errorf("%s: member %s extends past the end of the tarball", where, hdr.Name)
		}
		m := rawMember{hdr: hdr, raw: data[pos:end], body: data[dataAt : dataAt+size]}
		if hdr.Typeflag != tar.TypeXGlobalHeader {
			if m.name, err = tarindex.CleanName(hdr.Name); err != nil {
				return nil, fmt.Errorf("%s: member %q: %w", where, hdr.Name, err)
			}
		}
		out = append(out, m)
		pos = end
	}
}

// scanDir lists the files of the directory c as members, in name order:
// directories, regular files and symlinks, owned by root, with their
// modes and times.
func scanDir(c *archive.Contents) ([]rawMember, error) {
	var out []rawMember
	err := filepath.WalkDir(c.Path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(c.Path, p)
		if err != nil || rel == "." {
			return err
		}
		name := filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		h := &tar.Header{Name: name, Mode: int64(fi.Mode().Perm()), ModTime: fi.ModTime().Truncate(time.Second), Format: tar.FormatPAX}
		m := rawMember{hdr: h, name: name}
		switch {
		case fi.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, name+"/"
		case fi.Mode()&fs.ModeSymlink != 0:
			h.Typeflag = tar.TypeSymlink
			if h.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			h.Typeflag = tar.TypeReg
			if m.body, err = c.Bytes(name); err != nil {
				return err
			}
			h.Size = int64(len(m.body))
			if m.body == nil {
				m.body = []byte{}
			}
		default:
			return fmt.Errorf("%s: %s is a %s, which an image directory does not hold", c.Path, name, fi.Mode().Type())
		}
		out = append(out, m)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func roundBlock(n int64) int64 { return (n + blockSize - 1) / blockSize * blockSize }

// encodeMember is a regular member named like hdr, with body as its data:
// header and padded data blocks.
func encodeMember(hdr *tar.Header, body []byte) ([]byte, error) {
	h := &tar.Header{
		Typeflag: tar.TypeReg, Name: hdr.Name, Mode: hdr.Mode, Uid: hdr.Uid, Gid: hdr.Gid,
		Uname: hdr.Uname, Gname: hdr.Gname, ModTime: hdr.ModTime, Size: int64(len(body)),
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(h); err != nil {
		return nil, err
	}
	if _, err := tw.Write(body); err != nil {
		return nil, err
	}
	if err := tw.Flush(); err != nil { // pads; Close would add the end marker
		return nil, err
	}
	return buf.Bytes(), nil
}

// endOfArchive is the two zero blocks that end a tar.
var endOfArchive = make([]byte, 2*blockSize)

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

// rewriteLists rewrites the lists of images (index.json, manifest.json,
// repositories) to name only the kept groups: the members as they are to
// be written, by name.
func rewriteLists(src *archive.Contents, keep []bool, members []rawMember) (map[string][]byte, error) {
	keptDigests := map[digest.Digest]bool{}
	keptConfigs := map[digest.Digest]bool{}
	keptTags := map[string]bool{}
	for gi, g := range src.Groups {
		if !keep[gi] {
			continue
		}
		if g.Digest != "" {
			keptDigests[g.Digest] = true
		}
		for _, t := range g.Tags {
			keptTags[t] = true
		}
		for _, ii := range g.Images {
			keptConfigs[src.Images[ii].Ref.ConfigDigest] = true
		}
	}
	out := map[string][]byte{}
	for _, m := range members {
		var body []byte
		var err error
		switch m.name {
		case "index.json":
			body, err = filterIndex(src, keptDigests)
		case "manifest.json":
			body, err = filterDockerManifest(src, keptConfigs)
		case "repositories":
			body, err = filterRepositories(src, keptTags)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		if body == nil {
			continue
		}
		if out[m.name], err = encodeMember(m.hdr, body); err != nil {
			return nil, fmt.Errorf("%s: rewriting %s: %w", src.Path, m.name, err)
		}
	}
	return out, nil
}

// filterIndex is index.json listing only the manifests keep names; nil if
// the tarball has no index.json (or it is a link, left as it is).
func filterIndex(src *archive.Contents, keep map[digest.Digest]bool) ([]byte, error) {
	var idx map[string]json.RawMessage
	if err := src.ReadJSON("index.json", &idx); err != nil {
		return nil, err
	}
	var ms []json.RawMessage
	if raw, ok := idx["manifests"]; ok {
		if err := json.Unmarshal(raw, &ms); err != nil {
			return nil, fmt.Errorf("%s: index.json: manifests: %w", src.Path, err)
		}
	}
	kept := []json.RawMessage{}
	for _, m := range ms {
		var d struct{ Digest digest.Digest }
		if json.Unmarshal(m, &d) == nil && keep[d.Digest] {
			kept = append(kept, m)
		}
	}
	var err error
	if idx["manifests"], err = json.Marshal(kept); err != nil {
		return nil, err
	}
	return json.Marshal(idx)
}

// filterDockerManifest is manifest.json listing only the images whose
// configs keep names.
func filterDockerManifest(src *archive.Contents, keep map[digest.Digest]bool) ([]byte, error) {
	var entries []json.RawMessage
	if err := src.ReadJSON("manifest.json", &entries); err != nil {
		return nil, err
	}
	kept := []json.RawMessage{}
	for _, raw := range entries {
		var e archive.DockerManifestEntry
		if json.Unmarshal(raw, &e) != nil {
			continue
		}
		if keep[src.ManifestConfigDigest(e)] {
			kept = append(kept, raw)
		}
	}
	return json.Marshal(kept)
}

// filterRepositories is docker save's repositories file ({"name":
// {"tag": "<layer id>"}}) naming only the kept tags.
func filterRepositories(src *archive.Contents, keep map[string]bool) ([]byte, error) {
	var repos map[string]map[string]string
	if err := src.ReadJSON("repositories", &repos); err != nil {
		return nil, nil // not the file docker save writes: left as it is
	}
	out := map[string]map[string]string{}
	for name, tags := range repos {
		for tag, id := range tags {
			if keep[name+":"+tag] {
				if out[name] == nil {
					out[name] = map[string]string{}
				}
				out[name][tag] = id
			}
		}
	}
	return json.Marshal(out)
}

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

// encodeLink is a symlink member.
func encodeLink(h *tar.Header, target string) ([]byte, error) {
	h.Typeflag, h.Linkname, h.Size, h.Mode = tar.TypeSymlink, target, 0, 0o777
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(h); err != nil {
		return nil, err
	}
	if err := tw.Flush(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
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

// verifyBlob checks a layer blob: against the digest that names it (when
// one does) and, decompressed if it is compressed, against its diff_id.
func verifyBlob(b []byte, dgst, diffID digest.Digest) error {
	comp := tarindex.DetectCompression(b[:min(len(b), 8)])
	var sum digest.Digest
	if dgst != "" || comp == tarindex.CompressionNone {
		sum = digest.FromBytes(b)
	}
	if dgst != "" && sum != dgst {
		return archive.Errorf(archive.ErrDigestMismatch, "the blob's digest is %s, not %s as the manifest says", sum, dgst)
	}
	switch comp {
	case tarindex.CompressionNone:
		if sum != diffID {
			return archive.Errorf(archive.ErrDiffIDMismatch, "the layer's digest is %s, not its diff_id %s", sum, diffID)
		}
		return nil
	case tarindex.CompressionGzip, tarindex.CompressionZstd:
		got, _, err := decompressDigest(bytes.NewReader(b), comp, io.Discard)
		if err != nil {
			return archive.Errorf(archive.ErrCorruptLayer, "corrupt %s data: %w", comp, err)
		}
		if got != diffID {
			return archive.Errorf(archive.ErrDiffIDMismatch, "the layer decompresses to %s, not its diff_id %s", got, diffID)
		}
		return nil
	}
	return fmt.Errorf("%s-compressed layers are not supported", comp)
}

// decompressDigest decompresses r into w and gives the digest and size of
// what came out.
func decompressDigest(r io.Reader, comp tarindex.Compression, w io.Writer) (digest.Digest, int64, error) {
	var dec io.Reader
	switch comp {
	case tarindex.CompressionGzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return "", 0, err
		}
		defer zr.Close()
		dec = zr
	case tarindex.CompressionZstd:
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return "", 0, err
		}
		defer zr.Close()
		dec = zr
	default:
		return "", 0, fmt.Errorf("%s-compressed layers are not supported", comp)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), dec)
	if err != nil {
		return "", 0, err
	}
	return digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)), n, nil
}

// decompressVerified decompresses a layer into a file in dir, checking
// that it matches diffID.
func decompressVerified(b []byte, comp tarindex.Compression, diffID digest.Digest, dir string) (string, int64, error) {
	f, err := os.CreateTemp(dir, "layer-")
	if err != nil {
		return "", 0, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	got, n, err := decompressDigest(bytes.NewReader(b), comp, bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && got != diffID {
		err = archive.Errorf(archive.ErrDiffIDMismatch, "the layer decompresses to %s, not its diff_id %s", got, diffID)
	}
	if err != nil {
		os.Remove(f.Name())
		return "", 0, err
	}
	return f.Name(), n, nil
}
