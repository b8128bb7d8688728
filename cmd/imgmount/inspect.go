package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/union"
)

// runInspect is imgmount inspect: the tarball's images, the chosen image's
// config and its layers, as text or as one JSON object.
func runInspect(cfg *config, stdout, stderr io.Writer) error {
	tty := isTerminal(stderr)
	img, err := archive.Open(cfg.image, cfg.openOptions(func(msg string) {
		if tty {
			fmt.Fprintf(stderr, "imgmount: %s\n", msg)
		}
	}))
	if err != nil {
		return err
	}
	defer img.Close()
	tree, err := union.BuildUnion(img)
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.image, err)
	}
	for _, w := range tree.Warnings {
		fmt.Fprintf(stderr, "imgmount: warning: %s: %s\n", cfg.image, w)
	}
	report := archive.Inspect(img, tree.Hidden)
	if cfg.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(report)
	}
	return report.WriteText(stdout)
}
