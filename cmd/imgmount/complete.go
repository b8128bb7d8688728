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
	in, err := unlessSignalled(r.sigc, func() (*completeInputs, error) { return openCompleteInputs(cfg, r) }, (*completeInputs).close, r.interrupted)
	if err != nil {
		return err
	}
	return r.work(func() error {
		defer in.close() // here: the work may outlive runComplete (see work)
		out, err := r.create(sc.output, stdout)
		if err != nil {
			return err
		}
		defer out.abort()
		res, err := repack.Complete(in.src, in.bases, out.w, repack.CompleteOptions{TempDir: out.scratch, Progress: r.progress, Tasks: r.tasks, Free: out.free(), Context: r.ctx})
		if err != nil {
			return err
		}
		if err := out.finish(); err != nil {
			return err
		}
		r.summary(fmt.Sprintf("wrote %s (%s): %d images; put back %d layer blobs (%s); %d layer blobs checked against their digests",
			sc.output, archive.HumanSize(res.Size), res.Images, len(res.Restored), archive.HumanSize(res.RestoredBytes), res.Verified))
		return nil
	})
}

// completeInputs are the tarballs complete reads: the thin one and the
// bases.
type completeInputs struct {
	src   *archive.Contents
	bases []*archive.Contents
}

// openCompleteInputs opens the thin tarball and the --base ones.
func openCompleteInputs(cfg *config, r *repackRun) (*completeInputs, error) {
	src, err := openShipSource(cfg, r)
	if err != nil {
		return nil, err
	}
	in := &completeInputs{src: src}
	for _, p := range cfg.bases {
		b, err := archive.OpenContents(p, cfg.cacheDir, cfg.maxMemory.entries())
		if err != nil {
			in.close()
			return nil, fmt.Errorf("--base: %w", err)
		}
		in.bases = append(in.bases, b)
	}
	return in, nil
}

func (in *completeInputs) close() {
	in.src.Close()
	for _, b := range in.bases {
		b.Close()
	}
}
