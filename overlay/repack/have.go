package repack

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/imgmount/imgmount/overlay/archive"
	digest "github.com/opencontainers/go-digest"
)

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
	trimmed := bytes.TrimSpace(b)
	switch {
	case len(trimmed) == 0:
		return NewHave(), nil
	case trimmed[0] == '{':
		return parseHaveJSON(trimmed, name)
	case trimmed[0] == '[':
		return parseInspectJSON(trimmed, name)
	}
	return parseDiffIDLines(b, name)
}

// parseHaveJSON reads what `imgmount have --json` prints. Its diff_ids
// are a plain list unless chain_ids says how they are chained, even
// empty.
func parseHaveJSON(b []byte, name string) (*Have, error) {
	var l HaveList
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("%s: not the JSON imgmount have prints: %w", name, err)
	}
	if err := json.Unmarshal(b, &keys); err != nil {
		return nil, fmt.Errorf("%s: not the JSON imgmount have prints: %w", name, err)
	}
	if _, ok := keys["diff_ids"]; !ok {
		return nil, fmt.Errorf("%s: a JSON object without diff_ids (want what imgmount have --json prints)", name)
	}
	if err := validateDigests(l.DiffIDs, name, "diff_ids"); err != nil {
		return nil, err
	}
	if err := validateDigests(l.ChainIDs, name, "chain_ids"); err != nil {
		return nil, err
	}
	h := NewHave()
	_, chained := keys["chain_ids"]
	for _, d := range l.DiffIDs {
		if chained {
			h.All[d] = true
		} else {
			h.AddDiffID(d)
		}
	}
	for _, d := range l.ChainIDs {
		h.ChainIDs[d] = true
	}
	return h, nil
}

// validateDigests checks the digests of the list key of the file name.
func validateDigests(ds []digest.Digest, name, key string) error {
	for i, d := range ds {
		if err := d.Validate(); err != nil {
			return fmt.Errorf("%s: %s[%d] %q: %w", name, key, i, d, err)
		}
	}
	return nil
}

// parseInspectJSON reads what `docker image inspect` prints: each
// image's RootFS.Layers, a chain.
func parseInspectJSON(b []byte, name string) (*Have, error) {
	var imgs []struct {
		RootFS struct{ Layers []digest.Digest }
	}
	if err := json.Unmarshal(b, &imgs); err != nil {
		return nil, fmt.Errorf("%s: not the JSON docker image inspect prints: %w", name, err)
	}
	h := NewHave()
	for i, im := range imgs {
		for _, d := range im.RootFS.Layers {
			if err := d.Validate(); err != nil {
				return nil, fmt.Errorf("%s: image %d: layer %q: %w", name, i, d, err)
			}
		}
		h.AddImage(im.RootFS.Layers)
	}
	return h, nil
}

// parseDiffIDLines reads a plain list: one diff_id a line, blank lines
// and # comments skipped.
func parseDiffIDLines(b []byte, name string) (*Have, error) {
	h := NewHave()
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
