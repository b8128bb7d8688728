package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/imgmount/imgmount/internal/errwriter"
	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/union"
	"github.com/imgmount/imgmount/tarindex"
)

// runInspect is imgmount inspect: the tarball's images, the chosen image's
// config and its layers (and which of them the tarball's other images
// share), as text or as one JSON object; with --files, every path of the
// image and the layer that last wrote it. Without --image, a tarball of
// several images is described as a whole (inspectTarball); a thin one
// without its --base is described with its absent layers marked.
func runInspect(cfg *config, stdout, stderr io.Writer) error {
	tty := isTerminal(stderr)
	opts := cfg.openOptions(func(msg string) {
		if tty {
			fmt.Fprintf(stderr, "imgmount: %s\n", msg)
		}
	})
	opts.AllowAbsent = !cfg.files // --files needs every layer
	img, err := archive.Open(cfg.image, opts)
	if errors.Is(err, archive.ErrAmbiguous) && cfg.ref == "" && !cfg.files {
		return inspectTarball(cfg, opts, stdout)
	}
	if err != nil {
		return err
	}
	defer img.Close()
	var tree *union.Tree
	var hidden []int64
	if len(img.AbsentLayers()) == 0 {
		if tree, err = union.BuildUnion(img); err != nil {
			return fmt.Errorf("%s: %w", cfg.image, err)
		}
		for _, w := range tree.Warnings {
			fmt.Fprintf(stderr, "imgmount: warning: %s: %s\n", cfg.image, w)
		}
		hidden = tree.Hidden
	}
	report := archive.Inspect(img, hidden)
	if len(img.Images) > 1 {
		all, err := archive.ListImageLayers(cfg.image, cfg.cacheDir)
		if err != nil {
			return err
		}
		report.AddShared(all)
	}
	if cfg.files && !cfg.json {
		return writeFiles(stdout, tree)
	}
	var out any = report
	if cfg.files {
		out = struct {
			archive.Report
			Files []fileJSON `json:"files"`
		}{report, listFiles(tree)}
	}
	if cfg.json {
		return writeJSON(stdout, out)
	}
	return report.WriteText(stdout)
}

// inspectTarball is imgmount inspect of a tarball of several images when
// no --image chooses one: each image, and the layers they share.
func inspectTarball(cfg *config, opts archive.OpenOptions, stdout io.Writer) error {
	report, err := archive.InspectTarball(cfg.image, opts)
	if err != nil {
		return err
	}
	if cfg.json {
		return writeJSON(stdout, report)
	}
	return report.WriteText(stdout)
}

// writeJSON writes v as inspect --json does: indented, HTML left as it is.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// fileJSON is one path of inspect --files --json.
type fileJSON struct {
	Path string `json:"path"` // from the root: "/etc/passwd"; "/" for the root
	*nodeJSON
}

// listFiles describes every path of the tree, in tree order.
func listFiles(t *union.Tree) []fileJSON {
	out := []fileJSON{}
	union.Walk(t.Root, func(n *union.Node) {
		out = append(out, fileJSON{Path: rootedPath(n.Path()), nodeJSON: describeNode(t, n)})
	})
	return out
}

// writeFiles writes inspect --files: a line per path of the tree, in tree
// order (a directory before what it holds, names sorted): the layer that
// last wrote it ("-" for a directory no layer stores), its type, its size
// (regular files and symlinks; a device's numbers), its path, and a
// symlink's target after " -> ".
func writeFiles(w io.Writer, t *union.Tree) error {
	layerWidth := len(strconv.Itoa(max(len(t.Layers)-1, 0)))
	sizeWidth := 1
	union.Walk(t.Root, func(n *union.Node) { sizeWidth = max(sizeWidth, len(fileSize(n))) })
	ew := &errwriter.Writer{W: w}
	union.Walk(t.Root, func(n *union.Node) {
		if ew.Err != nil {
			return
		}
		layer := "-"
		if n.Layer >= 0 {
			layer = strconv.Itoa(n.Layer)
		}
		typ, _, _, _ := nodeFacts(n)
		line := fmt.Sprintf("%*s  %-7s  %*s  %s", layerWidth, layer, typ, sizeWidth, fileSize(n), displayPath(n.Path()))
		if n.Entry != nil && n.Entry.Type == tarindex.TypeSymlink {
			line += " -> " + quoteIfNeeded(n.Entry.Linkname)
		}
		fmt.Fprintln(ew, line)
	})
	return ew.Err
}

// fileSize is the SIZE column of inspect --files.
func fileSize(n *union.Node) string {
	e := n.Entry
	if e == nil {
		return "-"
	}
	switch e.Type {
	case tarindex.TypeReg:
		return strconv.FormatInt(e.Size, 10)
	case tarindex.TypeSymlink:
		return strconv.Itoa(len(e.Linkname))
	case tarindex.TypeChar, tarindex.TypeBlock:
		return fmt.Sprintf("%d,%d", e.Devmajor, e.Devminor)
	}
	return "-"
}
