package archive

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imgmount/imgmount/internal/errwriter"
	digest "github.com/opencontainers/go-digest"
)

// Report is what `imgmount inspect` prints. Its JSON form is a stable,
// documented interface for scripts: fields are only ever added.
type Report struct {
	Archive string        `json:"archive"`
	Format  Format        `json:"format"`
	Images  []ImageRef    `json:"images"`
	Image   ImageRef      `json:"image"` // the chosen one
	Config  ConfigSummary `json:"config"`
	Layers  []LayerReport `json:"layers"`
	// Totals over Layers.
	StoredSize  int64 `json:"stored_size"`
	Size        int64 `json:"size"`
	HiddenBytes int64 `json:"hidden_bytes"`
}

// ConfigSummary is the runtime part of the image config.
type ConfigSummary struct {
	OS           string            `json:"os"`
	Architecture string            `json:"architecture"`
	Variant      string            `json:"variant,omitempty"`
	Env          []string          `json:"env"`
	Entrypoint   []string          `json:"entrypoint"`
	Cmd          []string          `json:"cmd"`
	WorkingDir   string            `json:"working_dir"`
	User         string            `json:"user"`
	ExposedPorts []string          `json:"exposed_ports"`
	Labels       map[string]string `json:"labels"`
	Volumes      []string          `json:"volumes"`
	StopSignal   string            `json:"stop_signal,omitempty"`
	Created      string            `json:"created,omitempty"` // RFC 3339
	Author       string            `json:"author,omitempty"`
}

// LayerReport describes one layer.
type LayerReport struct {
	Index       int    `json:"index"`
	DiffID      string `json:"diff_id"`
	Digest      string `json:"digest"`
	MediaType   string `json:"media_type"`
	Compression string `json:"compression"`
	StoredSize  int64  `json:"stored_size"`
	Size        int64  `json:"size"`
	Entries     int    `json:"entries"`
	CreatedBy   string `json:"created_by"`
	HiddenBytes int64  `json:"hidden_bytes"` // content overwritten or deleted by later layers
	// Checkpoints: how many entry points a compressed layer read in place
	// has (gzip checkpoints, zstd seek points); 0 for an uncompressed layer
	// or a decompressed copy.
	Checkpoints int `json:"checkpoints"`
	// SharedWith lists the other images of the tarball that have this
	// layer too (by diff_id), in the order of Images; empty when none (or
	// when the report was made without Report.AddShared).
	SharedWith []ImageRef `json:"shared_with"`
	// Absent: neither the tarball nor a --base holds the layer (a thin
	// tarball inspected without its base); its sizes, entries and
	// compression are then unknown (0, ""), and so are every layer's
	// hidden bytes.
	Absent bool `json:"absent"`
}

// Inspect summarises img. hidden gives, per layer, the bytes of content the
// union does not show (union.Tree.Hidden); nil leaves them at zero.
func Inspect(img *Image, hidden []int64) Report {
	cfg := img.Config
	r := Report{
		Archive: img.Archive,
		Format:  img.Format,
		Images:  make([]ImageRef, 0, len(img.Images)),
		Image:   normRefJSON(img.Ref),
		Config: ConfigSummary{
			OS:           cfg.OS,
			Architecture: cfg.Architecture,
			Variant:      cfg.Variant,
			Env:          nonNil(cfg.Config.Env),
			Entrypoint:   nonNil(cfg.Config.Entrypoint),
			Cmd:          nonNil(cfg.Config.Cmd),
			WorkingDir:   cfg.Config.WorkingDir,
			User:         cfg.Config.User,
			ExposedPorts: sortedKeys(cfg.Config.ExposedPorts),
			Labels:       map[string]string{},
			Volumes:      sortedKeys(cfg.Config.Volumes),
			StopSignal:   cfg.Config.StopSignal,
			Author:       cfg.Author,
		},
		Layers: make([]LayerReport, 0, len(img.Layers)),
	}
	for _, ref := range img.Images {
		r.Images = append(r.Images, normRefJSON(ref))
	}
	for k, v := range cfg.Config.Labels {
		r.Config.Labels[k] = v
	}
	if cfg.Created != nil {
		r.Config.Created = cfg.Created.UTC().Format(time.RFC3339)
	}
	if len(hidden) != len(img.Layers) {
		hidden = nil
	}
	for i, l := range img.Layers {
		lr := LayerReport{
			Index:       l.Index,
			DiffID:      l.DiffID.String(),
			Digest:      l.Digest.String(),
			MediaType:   l.MediaType,
			Compression: l.Compression.String(),
			StoredSize:  l.StoredSize,
			Size:        l.Size,
			CreatedBy:   l.CreatedBy,
			Checkpoints: l.Checkpoints,
			SharedWith:  []ImageRef{},
			Absent:      l.Absent,
		}
		if l.Absent {
			lr.Compression = ""
		}
		if l.TarIndex != nil {
			lr.Entries = len(l.TarIndex.Entries)
		}
		if hidden != nil {
			lr.HiddenBytes = hidden[i]
		}
		r.Layers = append(r.Layers, lr)
		r.StoredSize += lr.StoredSize
		r.Size += lr.Size
		r.HiddenBytes += lr.HiddenBytes
	}
	return r
}

// AddShared fills each layer's SharedWith from the layers of every image
// of the tarball, as ListImageLayers gives them.
func (r *Report) AddShared(all []ImageLayers) {
	for i := range r.Layers {
		l := &r.Layers[i]
		l.SharedWith = []ImageRef{}
		for _, il := range all {
			if il.Ref.ManifestDigest == r.Image.ManifestDigest && il.Ref.ConfigDigest == r.Image.ConfigDigest {
				continue // the image itself
			}
			for _, d := range il.DiffIDs {
				if d.String() == l.DiffID {
					l.SharedWith = append(l.SharedWith, normRefJSON(il.Ref))
					break
				}
			}
		}
	}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return slices.Clone(s)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// normRefJSON makes Tags an empty array, not null, in JSON.
func normRefJSON(r ImageRef) ImageRef {
	r.Tags = nonNil(r.Tags)
	return r
}

// HumanSize formats a byte count with decimal units, as docker does.
func HumanSize(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, u := range []string{"kB", "MB", "GB", "TB", "PB"} {
		f /= unit
		if f < unit || u == "PB" {
			if f < 10 {
				return fmt.Sprintf("%.2f %s", f, u)
			}
			if f < 100 {
				return fmt.Sprintf("%.1f %s", f, u)
			}
			return fmt.Sprintf("%.0f %s", f, u)
		}
	}
	return fmt.Sprintf("%d B", n)
}

// oneLine collapses whitespace and truncates s to max runes.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}

func quoteList(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteText prints the report as a human-readable summary: the images in
// the tarball (the chosen one marked with *), the runtime config, and a
// table of the layers.
func (r Report) WriteText(w io.Writer) error {
	ew := &errwriter.Writer{W: w}
	ew.Printf("Archive:  %s (%s)\n", r.Archive, r.Format)
	r.writeImages(ew)
	ew.Printf("Config:\n")
	r.Config.writeText(ew)
	ew.Printf("Layers:\n")
	r.writeLayers(ew)
	r.writeShared(ew)
	absent := r.absentLayers()
	if len(absent) == 0 {
		ew.Printf("Total:  %d layers, %s stored, %s uncompressed, %s hidden by later layers\n",
			len(r.Layers), HumanSize(r.StoredSize), HumanSize(r.Size), HumanSize(r.HiddenBytes))
		return ew.Err
	}
	ew.Printf("Total:  %d layers, %d of them absent; the others %s stored, %s uncompressed\n",
		len(r.Layers), len(absent), HumanSize(r.StoredSize), HumanSize(r.Size))
	what, it := "Layer "+absent[0]+" is", "it"
	if len(absent) > 1 {
		what, it = "Layers "+strings.Join(absent, ", ")+" are", "them"
	}
	ew.Printf("%s absent: neither the archive nor a --base holds\n"+
		"%s (a thin image). To mount, inspect, commit or export it, give an image that\n"+
		"has %s (tarball or directory) with --base BASE.tar; or make it whole:\n"+
		"  imgmount complete %s --base BASE.tar -o FULL.tar\n", what, it, it, r.Archive)
	return ew.Err
}

// absentLayers names the layers no tarball holds: "0 (sha256:0123456789ab)".
func (r Report) absentLayers() []string {
	var out []string
	for _, l := range r.Layers {
		if l.Absent {
			out = append(out, fmt.Sprintf("%d (%s)", l.Index, ShortDigest(digest.Digest(l.DiffID))))
		}
	}
	return out
}

// writeImages lists the tarball's images, the chosen one marked.
func (r Report) writeImages(ew *errwriter.Writer) {
	ew.Printf("Images:\n")
	for _, ref := range r.Images {
		mark := " "
		if sameRef(ref, r.Image) {
			mark = "*"
		}
		ew.Printf("  %s %s\n", mark, describeRef(ref))
	}
	if len(r.Images) == 0 {
		ew.Printf("  * %s\n", describeRef(r.Image))
	}
}

// writeText writes the config as aligned "Name: value" lines, one line per
// element of lists (Env, Labels).
func (c ConfigSummary) writeText(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	plat := c.OS + "/" + c.Architecture
	if c.Variant != "" {
		plat += "/" + c.Variant
	}
	fmt.Fprintf(tw, "  Platform:\t%s\n", plat)
	if c.Created != "" {
		fmt.Fprintf(tw, "  Created:\t%s\n", c.Created)
	}
	if c.Author != "" {
		fmt.Fprintf(tw, "  Author:\t%s\n", c.Author)
	}
	fmt.Fprintf(tw, "  Entrypoint:\t%s\n", quoteList(c.Entrypoint))
	fmt.Fprintf(tw, "  Cmd:\t%s\n", quoteList(c.Cmd))
	fmt.Fprintf(tw, "  WorkingDir:\t%s\n", orDash(c.WorkingDir))
	fmt.Fprintf(tw, "  User:\t%s\n", orDash(c.User))
	writeList(tw, "Env", c.Env)
	fmt.Fprintf(tw, "  Ports:\t%s\n", orDash(strings.Join(c.ExposedPorts, ", ")))
	if len(c.Volumes) > 0 {
		fmt.Fprintf(tw, "  Volumes:\t%s\n", strings.Join(c.Volumes, ", "))
	}
	if c.StopSignal != "" {
		fmt.Fprintf(tw, "  StopSignal:\t%s\n", c.StopSignal)
	}
	labels := make([]string, 0, len(c.Labels))
	for _, k := range sortedKeys(c.Labels) {
		labels = append(labels, k+"="+oneLine(c.Labels[k], 100))
	}
	writeList(tw, "Labels", labels)
	tw.Flush()
}

// writeList writes a list under its name, one element per line ("-" if
// empty).
func writeList(w io.Writer, name string, items []string) {
	if len(items) == 0 {
		fmt.Fprintf(w, "  %s:\t-\n", name)
	}
	for i, item := range items {
		label := "  " + name + ":"
		if i > 0 {
			label = ""
		}
		fmt.Fprintf(w, "%s\t%s\n", label, item)
	}
}

// writeLayers writes the layer table.
func (r Report) writeLayers(ew *errwriter.Writer) {
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  #\tDIFF_ID\tCOMPRESSION\tSTORED\tSIZE\tENTRIES\tHIDDEN\tCREATED_BY\n")
	partial := len(r.absentLayers()) > 0
	for _, l := range r.Layers {
		if l.Absent {
			fmt.Fprintf(tw, "  %d\t%s\tabsent\t-\t-\t-\t-\t%s\n", l.Index, shortHex(l.DiffID), orDash(oneLine(l.CreatedBy, 60)))
			continue
		}
		hidden := HumanSize(l.HiddenBytes)
		if partial {
			hidden = "-" // the union of some layers only: unknown
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", l.Index, shortHex(l.DiffID), l.Compression,
			HumanSize(l.StoredSize), HumanSize(l.Size), l.Entries, hidden, orDash(oneLine(l.CreatedBy, 60)))
	}
	tw.Flush()
}

// writeShared lists, when the tarball holds other images, the layers
// they share with this one.
func (r Report) writeShared(ew *errwriter.Writer) {
	if len(r.Images) < 2 {
		return
	}
	ew.Printf("Shared with the other images of the tarball:\n")
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	n := 0
	for _, l := range r.Layers {
		if len(l.SharedWith) == 0 {
			continue
		}
		n++
		names := make([]string, len(l.SharedWith))
		for i, ref := range l.SharedWith {
			names[i] = r.shortName(ref)
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\n", l.Index, shortHex(l.DiffID), strings.Join(names, "; "))
	}
	tw.Flush()
	if n == 0 {
		ew.Printf("  no layer\n")
	}
}

// shortName names an image of the report in a few words: its tags (or its
// config digest), and its platform where another image has the same tags.
func (r Report) shortName(ref ImageRef) string {
	name := strings.Join(ref.Tags, ", ")
	if name == "" {
		name = "config " + ShortDigest(ref.ConfigDigest)
	}
	for _, o := range r.Images {
		if ref.Platform != "" && !sameRef(o, ref) && slices.Equal(o.Tags, ref.Tags) {
			return name + " " + ref.Platform
		}
	}
	return name
}

// shortHex is a digest's first 12 hex digits, as the layer table shows it.
func shortHex(d string) string {
	if i := strings.IndexByte(d, ':'); i >= 0 {
		d = d[i+1:]
	}
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}

func sameRef(a, b ImageRef) bool {
	return a.ManifestDigest == b.ManifestDigest && a.ConfigDigest == b.ConfigDigest && a.Platform == b.Platform
}

func describeRef(r ImageRef) string {
	name := strings.Join(r.Tags, ", ")
	if name == "" {
		name = "(untagged)"
	}
	var info []string
	if r.Platform != "" {
		info = append(info, r.Platform)
	}
	if r.ManifestDigest != "" {
		info = append(info, "manifest "+ShortDigest(r.ManifestDigest))
	}
	if r.ConfigDigest != "" {
		info = append(info, "config "+ShortDigest(r.ConfigDigest))
	}
	if len(info) > 0 {
		name += "  (" + strings.Join(info, ", ") + ")"
	}
	return name
}
