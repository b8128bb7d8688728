package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/imgmount/imgmount/overlay"
)

// runInspect is imgmount inspect: the tarball's images, the chosen image's
// config and its layers, as text or as one JSON object.
func runInspect(cfg *config, stdout, stderr io.Writer) error {
	tty := isTerminal(stderr)
	img, err := overlay.Open(cfg.image, overlay.OpenOptions{
		Image:    cfg.ref,
		Platform: cfg.platform,
		CacheDir: cfg.cacheDir,
		Bases:    cfg.bases,
		Progress: func(msg string) {
			if tty {
				fmt.Fprintf(stderr, "imgmount: %s\n", msg)
			}
		},
	})
	if err != nil {
		return err
	}
	defer img.Close()
	union, err := overlay.BuildUnion(img)
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.image, err)
	}
	report := overlay.Inspect(img, union)
	if cfg.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(report)
	}
	return report.WriteText(stdout)
}
