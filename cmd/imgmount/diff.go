package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/imgmount/imgmount/internal/errwriter"
	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/union"
	"github.com/imgmount/imgmount/tarindex"
)

// diffConfig is what `imgmount diff` adds to the config: the two sides.
type diffConfig struct {
	a, b       string // the tarballs, absolute (one and the same with --layers)
	refA, refB string // --image-a and --image-b, each defaulting to --image
	// --layers: the two trees are the unions of the image's layers up to
	// layerA and up to layerB (-1: no layer, an empty tree).
	layers         bool
	layerA, layerB int
}

const diffUsage = "imgmount diff [flags] A B, or imgmount diff --layers IMAGE N [M]"

// parseDiff parses the arguments of `imgmount diff`.
func parseDiff(args []string, getenv env) (*config, error) {
	cfg := &config{mode: modeDiff, diff: &diffConfig{}}
	dc := cfg.diff
	fl := newFlagSet("imgmount diff")
	var help bool
	imageFlags(fl, cfg)
	fl.StringVar(&dc.refA, "image-a", "", "")
	fl.StringVar(&dc.refB, "image-b", "", "")
	fl.BoolVar(&dc.layers, "layers", false, "")
	fl.BoolVar(&cfg.json, "json", false, "")
	fl.BoolVarP(&help, "help", "h", false, "")
	if err := fl.Parse(args); err != nil {
		return nil, usagef("diff: %v", err)
	}
	if help {
		cfg.mode = modeHelp
		return cfg, nil
	}
	pos := fl.Args()
	var err error
	if dc.layers {
		if fl.Changed("image-a") || fl.Changed("image-b") {
			return nil, usagef("diff: --image-a and --image-b choose the images of A and B; with --layers, --image chooses the one image")
		}
		switch {
		case len(pos) == 0:
			return nil, usagef("diff: missing IMAGE and layer numbers (%s)", diffUsage)
		case len(pos) == 1:
			return nil, usagef("diff: missing the layer numbers after %s (%s)", pos[0], diffUsage)
		case len(pos) > 3:
			return nil, usagef("diff: too many arguments: %s (%s)", strings.Join(pos, " "), diffUsage)
		}
		nums := make([]int, len(pos)-1)
		for i, s := range pos[1:] {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return nil, usagef("diff: layer %q: want a layer's number, 0 for the base layer (as imgmount inspect numbers them)", s)
			}
			nums[i] = n
		}
		if len(nums) == 1 {
			dc.layerA, dc.layerB = nums[0]-1, nums[0] // what layer N changed
		} else {
			dc.layerA, dc.layerB = nums[0], nums[1]
		}
		if dc.a, err = absPath(pos[0]); err != nil {
			return nil, err
		}
		dc.b = dc.a
	} else {
		switch len(pos) {
		case 0:
			return nil, usagef("diff: missing A and B, the images to compare (%s)", diffUsage)
		case 1:
			return nil, usagef("diff: missing B after %s (%s)", pos[0], diffUsage)
		case 2:
		default:
			return nil, usagef("diff: too many arguments: %s (%s)", strings.Join(pos, " "), diffUsage)
		}
		if dc.a, err = absPath(pos[0]); err != nil {
			return nil, err
		}
		if dc.b, err = absPath(pos[1]); err != nil {
			return nil, err
		}
		if !fl.Changed("image-a") {
			dc.refA = cfg.ref
		}
		if !fl.Changed("image-b") {
			dc.refB = cfg.ref
		}
	}
	if err := cfg.finishCommon(getenv); err != nil {
		return nil, err
	}
	return cfg, nil
}

// diffSide is one of the two trees compared.
type diffSide struct {
	Archive string           `json:"archive"`
	Image   archive.ImageRef `json:"image"`
	// Layers is how many of the image's layers (from the base) make the
	// tree: all of them, but with --layers.
	Layers int `json:"layers"`

	tree *union.Tree
}

// runDiff is imgmount diff: the paths that differ between two images, or
// two layers of one, as lines or JSON.
func runDiff(cfg *config, stdout, stderr io.Writer) error {
	dc := cfg.diff
	tty := isTerminal(stderr)
	open := func(path, ref string) (*archive.Image, error) {
		opts := cfg.openOptions(func(msg string) {
			if tty {
				fmt.Fprintf(stderr, "imgmount: %s\n", msg)
			}
		})
		opts.Image = ref
		return archive.Open(path, opts)
	}
	build := func(img *archive.Image, n int) (*diffSide, error) {
		t, err := union.BuildUnion(&archive.Image{Archive: img.Archive, Format: img.Format, Ref: img.Ref, Layers: img.Layers[:n]})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", img.Archive, err)
		}
		for _, w := range t.Warnings {
			fmt.Fprintf(stderr, "imgmount: warning: %s: %s\n", img.Archive, w)
		}
		return &diffSide{Archive: img.Archive, Image: img.Ref, Layers: n, tree: t}, nil
	}

	var a, b *diffSide
	if dc.layers {
		img, err := open(dc.a, cfg.ref)
		if err != nil {
			return err
		}
		defer img.Close()
		for _, n := range []int{dc.layerA, dc.layerB} {
			if n >= len(img.Layers) {
				return &usageError{command: "diff", msg: fmt.Sprintf("diff: layer %d: %s has %d layers, 0 to %d (imgmount inspect lists them)", n, dc.a, len(img.Layers), len(img.Layers)-1)}
			}
		}
		if a, err = build(img, dc.layerA+1); err != nil {
			return err
		}
		if b, err = build(img, dc.layerB+1); err != nil {
			return err
		}
	} else {
		imgA, err := open(dc.a, dc.refA)
		if err != nil {
			return err
		}
		defer imgA.Close()
		imgB, err := open(dc.b, dc.refB)
		if err != nil {
			return err
		}
		defer imgB.Close()
		if a, err = build(imgA, len(imgA.Layers)); err != nil {
			return err
		}
		if b, err = build(imgB, len(imgB.Layers)); err != nil {
			return err
		}
	}
	changes, err := union.Diff(a.tree, b.tree)
	if err != nil {
		return err
	}
	if cfg.json {
		return writeDiffJSON(stdout, a, b, changes)
	}
	return writeDiffText(stdout, changes)
}

// displayPath is how the diff and inspect --files print a tree path:
// from the root, "/" for the root itself; quoted as a Go string (\n,
// \x..) when it holds a control character, invalid UTF-8, a leading '"'
// or trailing space, so that each path stays on one line.
func displayPath(p string) string { return quoteIfNeeded(rootedPath(p)) }

// rootedPath is a tree path (Node.Path) from the root: "/" for ".".
func rootedPath(p string) string {
	if p == "." {
		return "/"
	}
	return "/" + p
}

// quoteIfNeeded quotes s (strconv.Quote) if printing it as it is could
// break a line or be misread.
func quoteIfNeeded(s string) string {
	if !utf8.ValidString(s) || strings.HasPrefix(s, `"`) || strings.HasSuffix(s, " ") ||
		strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// changeWords are the names of union.Diffs bits, in the order lines give
// them.
var changeWords = []struct {
	bit  union.Diffs
	word string
}{
	{union.DiffType, "type"},
	{union.DiffContent, "content"},
	{union.DiffMode, "mode"},
	{union.DiffOwner, "owner"},
	{union.DiffTarget, "target"},
	{union.DiffDevice, "device"},
	{union.DiffXattrs, "xattrs"},
}

// nodeFacts are the attributes of a node the diff prints.
func nodeFacts(n *union.Node) (typ string, perm, uid, gid uint32) {
	if n.Entry == nil {
		return "dir", 0o755, 0, 0
	}
	return n.Entry.Type.String(), n.Entry.Mode & 0o7777, n.Entry.UID, n.Entry.GID
}

// describeChange is what a modified path's line says in parentheses:
// "content, mode 0644→0755, owner 0:0→1000:1000".
func describeChange(c union.Change) string {
	ta, pa, ua, ga := nodeFacts(c.A)
	tb, pb, ub, gb := nodeFacts(c.B)
	var parts []string
	for _, w := range changeWords {
		if c.What&w.bit == 0 {
			continue
		}
		switch w.bit {
		case union.DiffType:
			parts = append(parts, fmt.Sprintf("type %s→%s", ta, tb))
		case union.DiffContent:
			parts = append(parts, "content")
		case union.DiffMode:
			parts = append(parts, fmt.Sprintf("mode %04o→%04o", pa, pb))
		case union.DiffOwner:
			parts = append(parts, fmt.Sprintf("owner %d:%d→%d:%d", ua, ga, ub, gb))
		case union.DiffTarget:
			parts = append(parts, "target "+strconv.Quote(c.A.Entry.Linkname)+"→"+strconv.Quote(c.B.Entry.Linkname))
		case union.DiffDevice:
			parts = append(parts, fmt.Sprintf("device %d,%d→%d,%d", c.A.Entry.Devmajor, c.A.Entry.Devminor, c.B.Entry.Devmajor, c.B.Entry.Devminor))
		case union.DiffXattrs:
			s := "xattrs"
			for _, x := range []struct {
				sign  string
				names []string
			}{{"+", c.XattrsAdded}, {"-", c.XattrsRemoved}, {"~", c.XattrsChanged}} {
				for _, name := range x.names {
					s += " " + x.sign + quoteIfNeeded(name)
				}
			}
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, ", ")
}

// writeDiffText writes one line per change: "A /path", "D /path",
// "M /path (what changed)".
func writeDiffText(w io.Writer, changes []union.Change) error {
	ew := &errwriter.Writer{W: w}
	for _, c := range changes {
		if c.Kind == union.Modified {
			fmt.Fprintf(ew, "M %s (%s)\n", displayPath(c.Path), describeChange(c))
		} else {
			fmt.Fprintf(ew, "%c %s\n", c.Kind, displayPath(c.Path))
		}
	}
	return ew.Err
}

// diffJSON is `imgmount diff --json`: a stable interface, fields are only
// ever added.
type diffJSON struct {
	A        *diffSide    `json:"a"`
	B        *diffSide    `json:"b"`
	Equal    bool         `json:"equal"`
	Added    int          `json:"added"`
	Removed  int          `json:"removed"`
	Modified int          `json:"modified"`
	Changes  []changeJSON `json:"changes"`
}

// changeJSON is one changed path.
type changeJSON struct {
	Path   string `json:"path"`   // from the root: "/etc/passwd"; "/" for the root
	Change string `json:"change"` // "A", "D" or "M"
	// What names what differs (M only, else empty): type, content, mode,
	// owner, target, device, xattrs.
	What []string `json:"what"`
	// A and B describe the path in each tree: no "a" when added, no "b"
	// when removed.
	A *nodeJSON `json:"a,omitempty"`
	B *nodeJSON `json:"b,omitempty"`
	// The extended attributes added, removed and changed (xattrs only).
	XattrsAdded   []string `json:"xattrs_added,omitempty"`
	XattrsRemoved []string `json:"xattrs_removed,omitempty"`
	XattrsChanged []string `json:"xattrs_changed,omitempty"`
}

// nodeJSON describes one path of a tree (diff --json, inspect --files
// --json).
type nodeJSON struct {
	Type   string `json:"type"` // file, dir, symlink, char, block, fifo
	Mode   string `json:"mode"` // permission bits in octal: "0644"
	UID    uint32 `json:"uid"`
	GID    uint32 `json:"gid"`
	Size   int64  `json:"size"`             // regular files; symlinks: the target's length
	Target string `json:"target,omitempty"` // symlinks
	Device string `json:"device,omitempty"` // char and block devices: "major,minor"
	// Layer is the index of the layer that last wrote the path, -1 for a
	// directory no layer stores; DiffID is that layer's.
	Layer  int    `json:"layer"`
	DiffID string `json:"diff_id,omitempty"`
}

func describeNode(t *union.Tree, n *union.Node) *nodeJSON {
	typ, perm, uid, gid := nodeFacts(n)
	nj := &nodeJSON{Type: typ, Mode: fmt.Sprintf("%04o", perm), UID: uid, GID: gid, Layer: n.Layer}
	if n.Layer >= 0 {
		nj.DiffID = t.Layers[n.Layer].DiffID.String()
	}
	if e := n.Entry; e != nil {
		switch e.Type {
		case tarindex.TypeReg:
			nj.Size = e.Size
		case tarindex.TypeSymlink:
			nj.Target, nj.Size = e.Linkname, int64(len(e.Linkname))
		case tarindex.TypeChar, tarindex.TypeBlock:
			nj.Device = fmt.Sprintf("%d,%d", e.Devmajor, e.Devminor)
		}
	}
	return nj
}

func writeDiffJSON(w io.Writer, a, b *diffSide, changes []union.Change) error {
	out := diffJSON{A: a, B: b, Equal: len(changes) == 0, Changes: make([]changeJSON, 0, len(changes))}
	a.Image.Tags, b.Image.Tags = nonNilStrings(a.Image.Tags), nonNilStrings(b.Image.Tags)
	for _, c := range changes {
		cj := changeJSON{Path: rootedPath(c.Path), Change: string(c.Kind), What: []string{},
			XattrsAdded: c.XattrsAdded, XattrsRemoved: c.XattrsRemoved, XattrsChanged: c.XattrsChanged}
		for _, w := range changeWords {
			if c.What&w.bit != 0 {
				cj.What = append(cj.What, w.word)
			}
		}
		if c.A != nil {
			cj.A = describeNode(a.tree, c.A)
		}
		if c.B != nil {
			cj.B = describeNode(b.tree, c.B)
		}
		switch c.Kind {
		case union.Added:
			out.Added++
		case union.Removed:
			out.Removed++
		default:
			out.Modified++
		}
		out.Changes = append(out.Changes, cj)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(out)
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
