package main

import (
	"fmt"
	"io"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/repack"
)

// parseComplete parses the arguments of `imgmount complete`.
func parseComplete(args []string, getenv env) (*config, error) {
	return parseShipCommand(modeComplete, "complete", "imgmount complete THIN.tar --base SOURCE... -o FULL.tar", args, getenv, nil, nil)
}

// runComplete is imgmount complete: the thin tarball with the layer blobs
// it lacks put back from the bases.
func runComplete(cfg *config, stdout, stderr io.Writer) error {
	sc := cfg.ship
	if err := checkStdout(sc.output, stdout); err != nil {
		return err
	}
	r := newRepackRun(stderr)
	defer r.end()
	src, err := openShipSource(cfg, r)
	if err != nil {
		return err
	}
	defer src.Close()
	var bases []*archive.Contents
	defer func() {
		for _, b := range bases {
			b.Close()
		}
	}()
	for _, p := range cfg.bases {
		b, err := archive.OpenContents(p, cfg.cacheDir, cfg.maxMemory.entries())
		if err != nil {
			return fmt.Errorf("--base: %w", err)
		}
		bases = append(bases, b)
	}
	out, err := r.create(sc.output, stdout)
	if err != nil {
		return err
	}
	defer out.abort()
	res, err := repack.Complete(src, bases, out.w, repack.CompleteOptions{TempDir: out.scratch, Progress: r.progress, Tasks: r.tasks, Free: out.free()})
	if err != nil {
		return err
	}
	if err := out.finish(); err != nil {
		return err
	}
	r.summary(fmt.Sprintf("wrote %s (%s): %d images; put back %d layer blobs (%s); %d layer blobs checked against their digests",
		sc.output, archive.HumanSize(res.Size), res.Images, len(res.Restored), archive.HumanSize(res.RestoredBytes), res.Verified))
	return nil
}
