package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/imgmount/imgmount/overlay/archive"
	flag "github.com/spf13/pflag"
)

// mode is what one run of imgmount does.
type mode int

const (
	modeMount mode = iota
	modeUnmount
	modeInspect
	modeHelp
	modeVersion
	modeCommit // imgmount commit (commit.go)
	modeExport // imgmount export (export.go)
	modeDiff   // imgmount diff (diff.go)
)

// config is everything the command line says, handed down to the code
// that mounts, unmounts or inspects. Paths are absolute.
type config struct {
	mode    mode
	helpFor string // modeHelp: the command whose help to print; "" for all

	image      string // IMAGE: the tarball
	mountpoint string // MOUNTPOINT (mount and -u)

	ref      string   // --image: which image of several
	platform string   // --platform os/arch[/variant]
	bases    []string // --base: tarballs that supply missing layers
	cacheDir string   // --cache-dir, or the default
	// --max-memory: the memory the image's index may take, in bytes
	// (0: half of the machine's RAM; -1: no limit).
	maxMemory byteSize
	// --cache-max: the most the cache directory may take (0: the default
	// bound, see defaultCacheMax; -1: no bound).
	cacheMax byteSize
	// --span-cache: memory for inflated spans of compressed layers (0:
	// the default; -1, "none": keep none).
	spanCache byteSize
	// --max-ratio: how many times its stored size a compressed stream may
	// inflate to before it counts as a bomb (0: the default, 100).
	maxRatio ratio
	// -o materialize: decompress compressed layers into the cache.
	materialize bool
	upper       string // --upper: the writable mount's upper directory

	layers     bool // --layers: per-layer view instead of the union
	foreground bool // -f, or implied by -d
	debug      bool // -d or -o debug: FUSE debug output
	json       bool // inspect --json
	files      bool // inspect --files

	// From -o.
	allowOther bool
	allowRoot  bool
	fsName     string
	mountOpts  []string // passed through to the mount

	repack *repackConfig // commit and export (commit.go)
	diff   *diffConfig   // diff (diff.go)
	ship   *shipConfig   // thin, complete and have (thin.go)
	cache  *cacheConfig  // cache (cache.go)

	tasks progressSink // where long work reports (bars.go); set on first use
}

// usageError is a mistake on the command line: exitUsage.
type usageError struct {
	msg     string
	command string // the command whose arguments are wrong; "" for mounting
}

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// env is how parseArgs reads the environment (a map in tests).
type env func(string) string

// defaultCacheDir is $XDG_CACHE_HOME/imgmount, else ~/.cache/imgmount.
func defaultCacheDir(getenv env) (string, error) {
	if x := getenv("XDG_CACHE_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "imgmount"), nil
	}
	home := getenv("HOME")
	if home == "" {
		if h, err := os.UserHomeDir(); err == nil {
			home = h
		}
	}
	if home == "" {
		return "", errors.New("no cache directory: neither $XDG_CACHE_HOME nor $HOME is set; use --cache-dir DIR")
	}
	return filepath.Join(home, ".cache", "imgmount"), nil
}

// commands are the words that start a command other than mounting (the
// default), each with the parser of the arguments that follow it.
var commands = map[string]func(args []string, getenv env) (*config, error){
	"inspect":  parseInspect,
	"commit":   parseCommit,
	"export":   parseExport,
	"diff":     parseDiff,
	"thin":     parseThin,
	"complete": parseComplete,
	"have":     parseHave,
	"cache":    parseCache,
}

// parseArgs turns the arguments (without the program name) into a config.
func parseArgs(args []string, getenv env) (*config, error) {
	if len(args) == 0 {
		return parseMount(args, getenv)
	}
	parse, ok := commands[args[0]]
	if !ok {
		return parseMount(args, getenv)
	}
	cfg, err := parse(args[1:], getenv)
	var ue *usageError
	if errors.As(err, &ue) {
		ue.command = args[0]
	}
	if err == nil && cfg.mode == modeHelp {
		cfg.helpFor = args[0]
	}
	return cfg, err
}

// newFlagSet is a flag set that prints nothing: parse errors become usage
// errors, and -h is a flag like the others.
func newFlagSet(name string) *flag.FlagSet {
	fl := flag.NewFlagSet(name, flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	fl.Usage = func() {}
	return fl
}

// mountSwitches are the mount command line's flags that choose what to do
// rather than set the config.
type mountSwitches struct {
	opts                   []string // -o, as given
	unmount, help, version bool
}

// imageFlags registers the flags of every command that opens an image:
// which image, where its layers and caches are, how much memory it may
// take.
func imageFlags(fl *flag.FlagSet, cfg *config) {
	fl.StringVar(&cfg.ref, "image", "", "")
	fl.StringVar(&cfg.platform, "platform", "", "")
	fl.StringArrayVar(&cfg.bases, "base", nil, "")
	fl.StringVar(&cfg.cacheDir, "cache-dir", "", "")
	fl.Var(&cfg.maxMemory, "max-memory", "")
	fl.Var(&cfg.cacheMax, "cache-max", "")
	fl.Var(&cfg.spanCache, "span-cache", "")
	fl.Var(&cfg.maxRatio, "max-ratio", "")
}

// openOptions are the options of archive.Open that the flags give.
func (cfg *config) openOptions(progress func(string)) archive.OpenOptions {
	tasks := cfg.progressSink()
	return archive.OpenOptions{
		Image:       cfg.ref,
		Platform:    cfg.platform,
		CacheDir:    cfg.cacheDir,
		Bases:       cfg.bases,
		Progress:    tasks.wrap(progress),
		Tasks:       tasks,
		MaxEntries:  cfg.maxMemory.entries(),
		CacheMax:    cfg.cacheMax.cacheBound(cfg.cacheDir),
		SpanCache:   cfg.spanCache.spanBudget(),
		MaxRatio:    int64(cfg.maxRatio),
		Materialize: cfg.materialize,
	}
}

// mountFlags registers the flags of mounting (and -u, --help, --version).
func mountFlags(cfg *config, sw *mountSwitches) *flag.FlagSet {
	fl := newFlagSet("imgmount")
	imageFlags(fl, cfg)
	fl.BoolVar(&cfg.layers, "layers", false, "")
	fl.StringVar(&cfg.upper, "upper", "", "")
	fl.StringArrayVarP(&sw.opts, "options", "o", nil, "")
	fl.BoolVarP(&cfg.foreground, "foreground", "f", false, "")
	fl.BoolVarP(&cfg.debug, "debug", "d", false, "")
	fl.BoolVarP(&sw.unmount, "unmount", "u", false, "")
	fl.BoolVar(&sw.version, "version", false, "")
	fl.BoolVarP(&sw.help, "help", "h", false, "")
	return fl
}

// parseMount parses a command line that names no command: a mount, -u,
// --help or --version.
func parseMount(args []string, getenv env) (*config, error) {
	cfg := &config{mode: modeMount}
	var sw mountSwitches
	fl := mountFlags(cfg, &sw)
	if err := fl.Parse(args); err != nil {
		return nil, usagef("%v", err)
	}
	pos := fl.Args()
	switch {
	case sw.help:
		cfg.mode = modeHelp
		return cfg, nil
	case sw.version:
		cfg.mode = modeVersion
		return cfg, nil
	case sw.unmount:
		return cfg.unmountArgs(pos)
	}
	if err := cfg.mountArgs(pos); err != nil {
		return nil, err
	}
	for _, o := range sw.opts {
		if err := cfg.addMountOptions(o); err != nil {
			return nil, err
		}
	}
	if cfg.debug {
		cfg.foreground = true
	}
	if cfg.fsName == "" {
		cfg.fsName = "imgmount:" + cfg.image
	}
	if fl.Changed("upper") {
		if err := cfg.checkUpper(); err != nil {
			return nil, err
		}
	}
	if err := cfg.finishCommon(getenv); err != nil {
		return nil, err
	}
	return cfg, nil
}

// unmountArgs takes the arguments of imgmount -u: one mountpoint.
func (cfg *config) unmountArgs(pos []string) (*config, error) {
	cfg.mode = modeUnmount
	if len(pos) != 1 {
		return nil, usagef("-u takes one argument, the mountpoint (imgmount -u MOUNTPOINT)")
	}
	mp, err := absPath(pos[0])
	if err != nil {
		return nil, err
	}
	cfg.mountpoint = mp
	return cfg, nil
}

// mountArgs takes the arguments of a mount: IMAGE and MOUNTPOINT.
func (cfg *config) mountArgs(pos []string) error {
	switch len(pos) {
	case 0:
		return usagef("missing IMAGE and MOUNTPOINT (imgmount [flags] IMAGE MOUNTPOINT)")
	case 1:
		return usagef("missing MOUNTPOINT after %s (imgmount [flags] IMAGE MOUNTPOINT)", pos[0])
	case 2:
	default:
		return usagef("too many arguments: %s (imgmount [flags] IMAGE MOUNTPOINT)", strings.Join(pos, " "))
	}
	var err error
	if cfg.image, err = absPath(pos[0]); err != nil {
		return err
	}
	cfg.mountpoint, err = absPath(pos[1])
	return err
}

// checkUpper checks and completes --upper for a mount: a writable union,
// its directory outside the mountpoint.
func (cfg *config) checkUpper() error {
	if cfg.layers {
		return usagef("--upper and --layers: the per-layer view is read-only; mount the union to edit")
	}
	var err error
	if cfg.upper, err = absPath(cfg.upper); err != nil {
		return err
	}
	// Compared as they resolve, symlinks followed: either inside the other
	// makes the server walk into its own mount (a deadlock, or a loop that
	// eats all memory).
	upper, mnt := resolvedPath(cfg.upper), resolvedPath(cfg.mountpoint)
	if within(upper, mnt) {
		return usagef("--upper %s is inside the mountpoint; it must be outside it", cfg.upper)
	}
	if within(mnt, upper) {
		return usagef("the mountpoint %s is inside --upper %s; it must be outside it", cfg.mountpoint, cfg.upper)
	}
	return nil
}

// within tells whether the absolute path p is dir or below it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// resolvedPath is the absolute path p with symlinks followed as far as it
// exists; the part that does not exist yet is kept as it is.
func resolvedPath(p string) string {
	rest := ""
	for dir := p; ; dir = filepath.Dir(dir) {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(r, rest)
		}
		if dir == filepath.Dir(dir) {
			return p
		}
		rest = filepath.Join(filepath.Base(dir), rest)
	}
}

// parseInspect parses the arguments of `imgmount inspect`.
func parseInspect(args []string, getenv env) (*config, error) {
	cfg := &config{mode: modeInspect}
	fl := newFlagSet("imgmount inspect")
	var help bool
	imageFlags(fl, cfg)
	fl.BoolVar(&cfg.json, "json", false, "")
	fl.BoolVar(&cfg.files, "files", false, "")
	fl.BoolVarP(&help, "help", "h", false, "")
	if err := fl.Parse(args); err != nil {
		return nil, usagef("inspect: %v", err)
	}
	if help {
		cfg.mode = modeHelp
		return cfg, nil
	}
	pos := fl.Args()
	switch len(pos) {
	case 0:
		return nil, usagef("inspect: missing IMAGE (imgmount inspect [flags] IMAGE)")
	case 1:
	default:
		return nil, usagef("inspect: too many arguments: %s (imgmount inspect [flags] IMAGE)", strings.Join(pos, " "))
	}
	var err error
	if cfg.image, err = absPath(pos[0]); err != nil {
		return nil, err
	}
	if err := cfg.finishCommon(getenv); err != nil {
		return nil, err
	}
	return cfg, nil
}

// finishCommon checks and completes what mount and inspect share.
func (cfg *config) finishCommon(getenv env) error {
	if cfg.platform != "" {
		parts := strings.Split(cfg.platform, "/")
		ok := len(parts) == 2 || len(parts) == 3
		for _, p := range parts {
			ok = ok && p != ""
		}
		if !ok {
			return usagef("--platform %q: want OS/ARCH or OS/ARCH/VARIANT, e.g. linux/arm64 or linux/arm/v7", cfg.platform)
		}
	}
	for i, b := range cfg.bases {
		if b == "" {
			return usagef("--base: empty path")
		}
		p, err := absPath(b)
		if err != nil {
			return err
		}
		cfg.bases[i] = p
	}
	if cfg.cacheDir == "" {
		d, err := defaultCacheDir(getenv)
		if err != nil {
			return err
		}
		cfg.cacheDir = d
	} else {
		d, err := absPath(cfg.cacheDir)
		if err != nil {
			return err
		}
		cfg.cacheDir = d
	}
	return nil
}

// addMountOptions takes one -o argument: options separated by commas.
func (cfg *config) addMountOptions(arg string) error {
	for _, o := range strings.Split(arg, ",") {
		o = strings.TrimSpace(o)
		switch {
		case o == "":
		case o == "allow_other":
			cfg.allowOther = true
		case o == "allow_root":
			cfg.allowRoot = true
		case o == "debug":
			cfg.debug = true
		case o == "ro":
			if cfg.upper != "" {
				return usagef("-o ro and --upper: --upper makes the mount writable; leave out one or the other")
			}
		case o == "rw":
			if cfg.upper == "" {
				return usagef("-o rw: a writable mount needs an upper directory for the changes: --upper DIR")
			}
		case o == "materialize":
			cfg.materialize = true
		case o == "fsname":
			return usagef("-o fsname needs a value: -o fsname=NAME")
		case strings.HasPrefix(o, "fsname="):
			cfg.fsName = strings.TrimPrefix(o, "fsname=")
			if cfg.fsName == "" {
				return usagef("-o fsname= needs a value: -o fsname=NAME")
			}
		default:
			cfg.mountOpts = append(cfg.mountOpts, o)
		}
	}
	return nil
}

func absPath(p string) (string, error) {
	if p == "" {
		return "", usagef("empty path")
	}
	a, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	return a, nil
}
