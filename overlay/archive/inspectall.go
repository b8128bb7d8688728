package archive

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/imgmount/imgmount/internal/errwriter"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TarballReport is what `imgmount inspect` prints for an archive of
// several images when no --image chooses one (docker save a b c): every
// image, and the layers they share. Like Report's, its JSON form is a
// stable interface: fields are only ever added.
type TarballReport struct {
	Archive string         `json:"archive"`
	Format  Format         `json:"format"`
	Images  []TarballImage `json:"images"`
	// Layers lists every layer of the images once, by diff_id, in the
	// order the images list them.
	Layers []TarballLayer `json:"layers"`
	// StoredSize is what the layer blobs take in the archive, each blob
	// counted once (a layer stored twice, compressed for one image and not
	// for another, counts twice).
	StoredSize int64 `json:"stored_size"`
}

// TarballImage is one image (one platform of it) of a TarballReport.
type TarballImage struct {
	ImageRef
	// Missing, when set, says why the image cannot be read (a platform
	// saved without its blobs); its layers are then unknown.
	Missing string          `json:"missing,omitempty"`
	Layers  int             `json:"layers"`
	DiffIDs []digest.Digest `json:"diff_ids"` // base first
	// StoredSize is what its layer blobs take in the archive, shared ones
	// included.
	StoredSize int64 `json:"stored_size"`
	// AbsentLayers counts its layers that neither the archive nor a --base
	// holds (a thin tarball).
	AbsentLayers int `json:"absent_layers"`
}

// TarballLayer is one layer of a TarballReport.
type TarballLayer struct {
	DiffID digest.Digest `json:"diff_id"`
	// StoredSize is what its blob takes in the archive (the first image's,
	// if it is stored twice); 0 when the archive leaves it out.
	StoredSize int64 `json:"stored_size"`
	// Absent: neither the archive nor a --base holds it. Base names the
	// --base that holds a layer the archive leaves out.
	Absent bool   `json:"absent"`
	Base   string `json:"base,omitempty"`
	// UsedBy are the images that have it, as indexes in Images: a layer
	// shared by several images lists them all.
	UsedBy []int `json:"used_by"`
}

// InspectTarball describes every image of the archive at path, as
// Report does one, reading only metadata: no layer is indexed, hashed or
// decompressed. opts.CacheDir is needed only for a tarball compressed as
// a whole; opts.Bases supply layers a thin tarball leaves out (read for
// their metadata only). Image, Platform and the rest are not used.
func InspectTarball(path string, opts OpenOptions) (TarballReport, error) {
	r := TarballReport{Archive: path, Images: []TarballImage{}, Layers: []TarballLayer{}}
	ar, groups, err := openListing(path, opts.CacheDir)
	if err != nil {
		return r, err
	}
	defer ar.close()
	r.Format = ar.format
	type baseHolds struct {
		path string
		ids  map[digest.Digest]bool
	}
	var bases []baseHolds
	for _, bp := range opts.Bases {
		ids, err := StoredDiffIDs(bp, opts.CacheDir)
		if err != nil {
			return r, fmt.Errorf("base tarball: %w", err)
		}
		bases = append(bases, baseHolds{bp, ids})
	}
	byDiffID := map[digest.Digest]int{} // index in r.Layers
	blobs := map[string]bool{}          // the members holding layer blobs, links followed
	for _, g := range groups {
		for _, c := range g.cands {
			im := TarballImage{ImageRef: normRefJSON(c.ref()), Missing: c.missing, DiffIDs: []digest.Digest{}}
			if im.Missing == "" && !ar.has(c.configMember()) {
				im.Missing = fmt.Sprintf("its config %s is not in the %s", c.configMember(), ar.what())
			}
			if im.Missing != "" {
				r.Images = append(r.Images, im)
				continue
			}
			var cfg ocispec.Image
			if err := ar.readJSON("image config", c.configMember(), &cfg); err != nil {
				return r, err
			}
			if im.Platform == "" {
				im.Platform = platformString(normPlatform(cfg.Platform))
			}
			ids := cfg.RootFS.DiffIDs
			if len(ids) != c.numLayers() {
				return r, fmt.Errorf("%s: image %s: its config (%s) lists %d diff_ids but its manifest lists %d layers", ar.path, g.name(), c.configMember(), len(ids), c.numLayers())
			}
			im.Layers = len(ids)
			for i, d := range ids {
				if err := d.Validate(); err != nil {
					return r, fmt.Errorf("%s: image %s: config %s: diff_ids[%d] %q: %w", ar.path, g.name(), c.configMember(), i, d, err)
				}
				im.DiffIDs = append(im.DiffIDs, d)
				li, seen := byDiffID[d]
				if !seen {
					li = len(r.Layers)
					byDiffID[d] = li
					r.Layers = append(r.Layers, TarballLayer{DiffID: d, Absent: true, UsedBy: []int{}})
				}
				l := &r.Layers[li]
				if n := len(r.Images); !slices.Contains(l.UsedBy, n) {
					l.UsedBy = append(l.UsedBy, n)
				}
				member, _, _ := c.layerMember(i)
				b, err := ar.lookup(member)
				if err != nil && !errors.Is(err, errMemberAbsent) {
					return r, fmt.Errorf("%s: image %s: layer %d (%s): %w", ar.path, g.name(), i, d, err)
				}
				if err == nil {
					if !blobs[b.name] {
						blobs[b.name] = true
						r.StoredSize += b.size
					}
					if l.Absent || l.Base != "" {
						l.Absent, l.Base, l.StoredSize = false, "", b.size
					}
					im.StoredSize += b.size
					continue
				}
				base := ""
				for _, bh := range bases {
					if bh.ids[d] {
						base = bh.path
						break
					}
				}
				if base == "" {
					im.AbsentLayers++
				} else if l.Absent {
					l.Absent, l.Base = false, base
				}
			}
			r.Images = append(r.Images, im)
		}
	}
	return r, nil
}

// Shared are the layers that several images have.
func (r TarballReport) Shared() []TarballLayer {
	var out []TarballLayer
	for _, l := range r.Layers {
		if len(l.UsedBy) > 1 {
			out = append(out, l)
		}
	}
	return out
}

// WriteText prints the report: a table of the images, one of the layers
// they share, the totals, and how to choose one image.
func (r TarballReport) WriteText(w io.Writer) error {
	ew := &errwriter.Writer{W: w}
	ew.Printf("Archive:  %s (%s)\n", r.Archive, r.Format)
	ew.Printf("Images:\n")
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  #\tIMAGE\tPLATFORM\tLAYERS\tSTORED\tCONFIG\n")
	absent, fromBase := 0, 0
	for i, im := range r.Images {
		layers, stored := fmt.Sprint(im.Layers), HumanSize(im.StoredSize)
		if im.Missing != "" {
			layers, stored = "-", "absent: "+im.Missing
		} else if im.AbsentLayers > 0 {
			layers += fmt.Sprintf(" (%d absent)", im.AbsentLayers)
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\n", i, r.imageName(i, false), orDash(im.Platform), layers, stored, orDash(ShortDigest(im.ConfigDigest)))
	}
	tw.Flush()
	for _, l := range r.Layers {
		switch {
		case l.Absent:
			absent++
		case l.Base != "":
			fromBase++
		}
	}
	shared := r.Shared()
	ew.Printf("Layers shared by several images:\n")
	if len(shared) == 0 {
		ew.Printf("  none\n")
	} else {
		tw = tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "  DIFF_ID\tSTORED\tIMAGES\n")
		for _, l := range shared {
			names := make([]string, len(l.UsedBy))
			for j, i := range l.UsedBy {
				names[j] = r.imageName(i, true)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", shortHex(l.DiffID.String()), r.layerStored(l), strings.Join(names, "; "))
		}
		tw.Flush()
	}
	ew.Printf("Total:  %d images, %d distinct layers (%d shared), %s of layer blobs stored\n",
		len(r.Images), len(r.Layers), len(shared), HumanSize(r.StoredSize))
	if fromBase > 0 {
		ew.Printf("%s not in the archive but in a --base.\n", layerCount(fromBase))
	}
	if absent > 0 {
		ew.Printf("%s absent: neither the archive nor a --base holds them (a thin\n"+
			"image); give an image that has them (tarball or directory) with --base BASE.tar.\n", layerCount(absent))
	}
	ew.Printf("One image's config and layers: imgmount inspect --image REF %s\n", r.Archive)
	return ew.Err
}

// layerStored is the STORED column of a layer.
func (r TarballReport) layerStored(l TarballLayer) string {
	switch {
	case l.Absent:
		return "absent"
	case l.Base != "":
		return "in --base"
	}
	return HumanSize(l.StoredSize)
}

// imageName names image i by its tags (or "(untagged)"; at most a few, as
// messages do: the JSON has them all); withPlatform: "#i" first, and its
// platform after them when another image has the same tags.
func (r TarballReport) imageName(i int, withPlatform bool) string {
	im := r.Images[i]
	name := tagList(im.Tags)
	if name == "" {
		name = "(untagged)"
	}
	if withPlatform {
		name = fmt.Sprintf("#%d %s", i, name)
		for j, o := range r.Images {
			if j != i && im.Platform != "" && slices.Equal(o.Tags, im.Tags) {
				return name + " " + im.Platform
			}
		}
	}
	return name
}

// layerCount is "1 layer is" or "n layers are".
func layerCount(n int) string {
	if n == 1 {
		return "1 layer is"
	}
	return fmt.Sprintf("%d layers are", n)
}
