package main

import (
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/repack"
	"github.com/imgmount/imgmount/tarindex"
	flag "github.com/spf13/pflag"
)

// The modes of thin, complete and have, past the ones config.go lists.
const (
	modeThin     mode = 100 + iota // imgmount thin (thin.go)
	modeComplete                   // imgmount complete (complete.go)
	modeHave                       // imgmount have (have.go)
)

// shipConfig is what thin, complete and have add to the config: moving
// an image to a machine that has part of it.
type shipConfig struct {
	source  string   // IMAGE (thin) or THIN (complete), absolute
	sources []string // have: SOURCE..., absolute
	output  string   // -o: absolute, or "-" for stdout
	images  []string // thin --image, repeatable
	haves   []string // --have LIST: absolute, or "-" for stdin
	docker  bool     // have --docker
	podman  bool     // have --podman
}

// shipFlags registers what thin, complete and have share: the bases, the
// cache and the memory budget.
func shipFlags(fl *flag.FlagSet, cfg *config, help *bool) {
	fl.StringArrayVar(&cfg.bases, "base", nil, "")
	fl.StringVar(&cfg.cacheDir, "cache-dir", "", "")
	fl.Var(&cfg.maxMemory, "max-memory", "")
	fl.BoolVarP(help, "help", "h", false, "")
}

// parseThin parses the arguments of `imgmount thin`.
func parseThin(args []string, getenv env) (*config, error) {
	const usage = "imgmount thin IMAGE (--base BASE.tar | --have LIST)... -o OUT.tar"
	own := func(fl *flag.FlagSet, sc *shipConfig) {
		fl.StringArrayVar(&sc.haves, "have", nil, "")
		fl.StringArrayVar(&sc.images, "image", nil, "")
	}
	return parseShipCommand(modeThin, "thin", usage, args, getenv, own, func(cfg *config) error {
		sc := cfg.ship
		if len(cfg.bases) == 0 && len(sc.haves) == 0 {
			return usagef("thin: say what the receiving side has: --base BASE.tar or --have LIST (%s)", usage)
		}
		for i, q := range sc.images {
			if sc.images[i] = strings.TrimSpace(q); sc.images[i] == "" {
				return usagef("thin: --image: empty reference")
			}
		}
		for i, h := range sc.haves {
			if h == "-" {
				continue
			}
			p, err := absPath(h)
			if err != nil {
				return err
			}
			sc.haves[i] = p
		}
		return nil
	})
}

// parseShipCommand parses the arguments of thin or complete: the flags
// they share, the command's own (own registers them, check validates them
// once parsed), one source and -o.
func parseShipCommand(m mode, name, usage string, args []string, getenv env, own func(*flag.FlagSet, *shipConfig), check func(*config) error) (*config, error) {
	cfg := &config{mode: m, ship: &shipConfig{}}
	sc := cfg.ship
	fl := newFlagSet("imgmount " + name)
	var help bool
	var output string
	shipFlags(fl, cfg, &help)
	if own != nil {
		own(fl, sc)
	}
	fl.StringVarP(&output, "output", "o", "", "")
	if err := fl.Parse(args); err != nil {
		return nil, usagef("%s: %v", name, err)
	}
	if help {
		cfg.mode = modeHelp
		return cfg, nil
	}
	if err := sc.oneSource(name, fl.Args(), usage); err != nil {
		return nil, err
	}
	if check != nil {
		if err := check(cfg); err != nil {
			return nil, err
		}
	}
	if err := sc.setOutput(name, output, usage); err != nil {
		return nil, err
	}
	if err := cfg.finishCommon(getenv); err != nil {
		return nil, err
	}
	return cfg, nil
}

// oneSource takes the one positional argument of thin and complete.
func (sc *shipConfig) oneSource(cmd string, pos []string, usage string) error {
	switch len(pos) {
	case 0:
		return usagef("%s: missing the image tarball (%s)", cmd, usage)
	case 1:
	default:
		return usagef("%s: too many arguments: %s (%s)", cmd, strings.Join(pos, " "), usage)
	}
	var err error
	sc.source, err = absPath(pos[0])
	return err
}

// setOutput checks -o.
func (sc *shipConfig) setOutput(cmd, output, usage string) error {
	switch output {
	case "":
		return usagef("%s: missing -o OUT.tar, the tarball to write (%s)", cmd, usage)
	case "-":
		sc.output = "-"
		return nil
	}
	var err error
	if sc.output, err = absPath(output); err != nil {
		return err
	}
	if sc.output == sc.source {
		return usagef("%s: -o %s is the source itself", cmd, output)
	}
	return nil
}

// runThin is imgmount thin.
func runThin(cfg *config, stdout, stderr io.Writer) error {
	sc := cfg.ship
	if err := checkStdout(sc.output, stdout); err != nil {
		return err
	}
	have, err := receiverHas(cfg, sc.haves)
	if err != nil {
		return err
	}
	r := newRepackRun(stderr)
	defer r.end()
	src, err := unlessSignalled(r.sigc, func() (*archive.Contents, error) { return openShipSource(cfg, r) }, closeContents, r.interrupted)
	if err != nil {
		return err
	}
	return r.work(func() error {
		defer src.Close() // here: the work may outlive runThin (see work)
		out, err := r.create(sc.output, stdout)
		if err != nil {
			return err
		}
		defer out.abort()
		res, err := repack.Thin(src, out.w, repack.ThinOptions{Have: have, Images: sc.images, Progress: r.progress, Tasks: r.tasks, Free: out.free(), Context: r.ctx})
		if err != nil {
			return err
		}
		if err := out.finish(); err != nil {
			return err
		}
		r.summary(thinSummary(sc, res))
		for _, w := range thinWarnings(src, have, res, sc.output) {
			r.warn(w)
		}
		return nil
	})
}

// thinSummary is the line a terminal gets once the thin tarball is
// written.
func thinSummary(sc *shipConfig, res *repack.ThinResult) string {
	s := fmt.Sprintf("wrote %s (%s): %s; left out %d layer blobs (%s) the receiving side has",
		sc.output, archive.HumanSize(res.Size), strings.Join(res.Images, ", "), len(res.Omitted), archive.HumanSize(res.OmittedBytes))
	if len(res.Dropped) > 0 {
		s += "; dropped the images " + strings.Join(res.Dropped, ", ")
	}
	if len(res.Absent) > 0 {
		s += fmt.Sprintf("; %d layers were left out already", len(res.Absent))
	}
	return s
}

func closeContents(c *archive.Contents) { c.Close() }

// thinWarnings are what thin tells even when it succeeds: that nothing
// was left out (the output is a full copy), and which layers the
// receiver was said to have stay in because a layer below them was not
// listed.
func thinWarnings(src *archive.Contents, have *repack.Have, res *repack.ThinResult, output string) []string {
	var out []string
	if output == "-" {
		output = "the output"
	}
	if len(res.Omitted) == 0 && len(res.Absent) == 0 {
		w := "the receiver has none of these layers: " + output + " is complete (all of " + src.Path + ")"
		if len(have.All) == 0 {
			w = "--have names no layer (an empty list?); " + w
		}
		out = append(out, w)
	}
	kept := map[string]bool{}
	for _, im := range src.Images {
		for i, left := range have.LeftOut(im.DiffIDs) {
			if d := im.DiffIDs[i]; !left && have.All[d] {
				kept[d.String()] = true
			}
		}
	}
	if len(kept) > 0 {
		what := fmt.Sprintf("%d layers the receiver has stay", len(kept))
		if len(kept) == 1 {
			what = "a layer the receiver has stays"
		}
		out = append(out, fmt.Sprintf("%s in, a layer below not being listed (docker load takes a layer from its store only with every layer below it): %s",
			what, strings.Join(slices.Sorted(maps.Keys(kept)), ", ")))
	}
	return out
}

// receiverHas is what the --base tarballs and the --have lists say the
// receiving side holds.
func receiverHas(cfg *config, haves []string) (*repack.Have, error) {
	have := repack.NewHave()
	for _, b := range cfg.bases {
		c, err := archive.OpenContents(b, cfg.cacheDir, cfg.maxMemory.entries())
		if err != nil {
			return nil, fmt.Errorf("--base: %w", err)
		}
		have.Merge(repack.HaveOf(c))
		c.Close()
	}
	for _, p := range haves {
		h, err := readHaveList(p)
		if err != nil {
			return nil, err
		}
		have.Merge(h)
	}
	return have, nil
}

// readHaveList reads a --have LIST ("-": stdin).
func readHaveList(p string) (*repack.Have, error) {
	var b []byte
	var err error
	name := p
	if p == "-" {
		name = "stdin"
		b, err = io.ReadAll(io.LimitReader(os.Stdin, maxHaveList+1))
	} else {
		var f *os.File
		if f, err = os.Open(p); err == nil {
			b, err = io.ReadAll(io.LimitReader(f, maxHaveList+1))
			f.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("--have: %w", err)
	}
	if len(b) > maxHaveList {
		return nil, fmt.Errorf("--have %s: larger than %d MiB: not a list of layers", name, maxHaveList>>20)
	}
	h, err := repack.ParseHave(b, name)
	if err != nil {
		return nil, fmt.Errorf("--have: %w", err)
	}
	return h, nil
}

// maxHaveList bounds a --have file: a million layers take 150 MB of JSON.
const maxHaveList = 256 << 20

// openShipSource opens the tarball (or directory) thin or complete reads,
// warning that one compressed as a whole is written uncompressed.
func openShipSource(cfg *config, r *repackRun) (*archive.Contents, error) {
	sc := cfg.ship
	src, err := archive.OpenContents(sc.source, cfg.cacheDir, cfg.maxMemory.entries())
	if err != nil {
		return nil, err
	}
	if src.Compression != tarindex.CompressionNone {
		r.warn(fmt.Sprintf("%s is %s-compressed as a whole; %s is written uncompressed (compress it yourself if you like: imgmount reads both)", sc.source, src.Compression, sc.output))
	}
	return src, nil
}
