package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/tarindex"
	"golang.org/x/sys/unix"
)

// modeCache is imgmount cache, past the modes config.go and thin.go list.
const modeCache mode = 200

// cacheConfig is what imgmount cache adds to the config.
type cacheConfig struct {
	action  string   // "list", "prune" or "clear"
	maxSize byteSize // prune --max-size; 0: the default bound
}

// The default bound of the cache directory (--cache-max): a tenth of the
// filesystem it is on, at least 1 GiB and at most 20 GiB. Since gzip and
// zstd layers are served in place through checkpoints, most of the cache
// is saved indexes and checkpoints, a few MB an image; what grows it is
// decompressed copies (-o materialize, single-frame zstd layers, some
// compressed outer tarballs). 20 GiB keeps the copies of a few large
// images; a tenth keeps a small disk from filling with what can be made
// again, as a browser or ccache bounds its cache.
const (
	cacheMaxShare = 10 // percent of the filesystem
	cacheMaxFloor = 1 << 30
	cacheMaxCap   = 20 << 30
)

// defaultCacheMax is the default bound of the cache directory dir, which
// need not exist yet (its filesystem is that of its nearest existing
// parent).
func defaultCacheMax(dir string) int64 {
	var st unix.Statfs_t
	for d := dir; ; d = filepath.Dir(d) {
		if unix.Statfs(d, &st) == nil {
			total := int64(st.Blocks) * st.Bsize
			return min(max(total/100*cacheMaxShare, cacheMaxFloor), cacheMaxCap)
		}
		if d == filepath.Dir(d) {
			return cacheMaxCap
		}
	}
}

// cacheBound is archive.OpenOptions.CacheMax for a --cache-max value: 0
// (not given) is the default bound of dir, none (-1) no bound.
func (b byteSize) cacheBound(dir string) int64 {
	switch {
	case b < 0:
		return 0
	case b == 0:
		return defaultCacheMax(dir)
	}
	return int64(b)
}

// parseCache parses the arguments of `imgmount cache`.
func parseCache(args []string, getenv env) (*config, error) {
	const usage = "imgmount cache [list | prune | clear] [flags]"
	cfg := &config{mode: modeCache, cache: &cacheConfig{action: "list"}}
	cc := cfg.cache
	fl := newFlagSet("imgmount cache")
	var help bool
	fl.StringVar(&cfg.cacheDir, "cache-dir", "", "")
	fl.BoolVar(&cfg.json, "json", false, "")
	fl.Var(&cc.maxSize, "max-size", "")
	fl.BoolVarP(&help, "help", "h", false, "")
	if err := fl.Parse(args); err != nil {
		return nil, usagef("cache: %v", err)
	}
	if help {
		cfg.mode = modeHelp
		return cfg, nil
	}
	pos := fl.Args()
	switch len(pos) {
	case 0:
	case 1:
		switch pos[0] {
		case "list", "prune", "clear":
			cc.action = pos[0]
		case "ls":
			cc.action = "list"
		default:
			return nil, usagef("cache: unknown action %q: want list, prune or clear (%s)", pos[0], usage)
		}
	default:
		return nil, usagef("cache: too many arguments: %s (%s)", strings.Join(pos, " "), usage)
	}
	if cfg.json && cc.action != "list" {
		return nil, usagef("cache %s: --json is for cache list", cc.action)
	}
	if fl.Changed("max-size") && cc.action != "prune" {
		return nil, usagef("cache %s: --max-size is for cache prune", cc.action)
	}
	if err := cfg.finishCommon(getenv); err != nil {
		return nil, err
	}
	return cfg, nil
}

// runCache is `imgmount cache`: list, prune or clear the cache directory.
func runCache(cfg *config, stdout, _ io.Writer) error {
	c := &tarindex.Cache{Dir: cfg.cacheDir}
	cc := cfg.cache
	switch cc.action {
	case "prune":
		limit := int64(cc.maxSize)
		switch {
		case limit == 0:
			limit = defaultCacheMax(cfg.cacheDir)
		case limit < 0:
			limit = math.MaxInt64 // none: only what interrupted writers left
		}
		removed, err := c.Prune(limit)
		return reportRemoved(c, stdout, removed, err)
	case "clear":
		removed, err := c.Clear()
		return reportRemoved(c, stdout, removed, err)
	}
	items, err := c.List()
	if err != nil {
		return err
	}
	bound := defaultCacheMax(cfg.cacheDir)
	if cfg.json {
		return writeCacheJSON(stdout, cfg.cacheDir, bound, items)
	}
	return writeCacheTable(stdout, cfg.cacheDir, bound, items)
}

// cacheItemJSON is one item of `imgmount cache list --json`.
type cacheItemJSON struct {
	Path    string    `json:"path"`
	Kind    string    `json:"kind"`
	Size    int64     `json:"size"`
	LastUse time.Time `json:"last_use"`
	InUse   bool      `json:"in_use"`
	Source  string    `json:"source,omitempty"`
}

// writeCacheJSON prints the listing as one JSON object (fields are only
// ever added).
func writeCacheJSON(w io.Writer, dir string, bound int64, items []tarindex.CacheItem) error {
	out := struct {
		Dir   string          `json:"dir"`
		Total int64           `json:"total"`
		Bound int64           `json:"default_bound"`
		Items []cacheItemJSON `json:"items"`
	}{Dir: dir, Total: tarindex.Total(items), Bound: bound, Items: []cacheItemJSON{}}
	for _, it := range items {
		out.Items = append(out.Items, cacheItemJSON(it))
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// writeCacheTable prints the listing as a table, least recently used
// (pruned first) at the top; verified markers are only counted.
func writeCacheTable(w io.Writer, dir string, bound int64, items []tarindex.CacheItem) error {
	if len(items) == 0 {
		_, err := fmt.Fprintf(w, "The cache %s is empty.\n", dir)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tSIZE\tLAST USE\tIN USE\tSOURCE")
	inUse, markers := 0, 0
	for _, it := range items {
		if it.Kind == tarindex.KindVerified {
			markers++ // empty, one per uncompressed layer: counted, not shown
			continue
		}
		use := "-"
		if it.InUse {
			use = "yes"
			inUse++
		}
		src := it.Source
		if src == "" {
			src = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", it.Kind, archive.HumanSize(it.Size), it.LastUse.Local().Format("2006-01-02 15:04"), use, src)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	shown := fmt.Sprintf("%d items", len(items)-markers)
	if markers > 0 {
		shown += fmt.Sprintf(" (and %d verified markers, empty)", markers)
	}
	_, err := fmt.Fprintf(w, "%s in %s: %s, %d in use; the default bound is %s (--cache-max).\n",
		archive.HumanSize(tarindex.Total(items)), dir, shown, inUse, archive.HumanSize(bound))
	return err
}

// reportRemoved prints what prune or clear removed and what the cache
// takes now; err, the failures to remove, is returned as it is.
func reportRemoved(c *tarindex.Cache, w io.Writer, removed []tarindex.CacheItem, err error) error {
	msg := "Removed nothing"
	if len(removed) > 0 {
		msg = fmt.Sprintf("Removed %d items, %s", len(removed), archive.HumanSize(tarindex.Total(removed)))
	}
	if items, lerr := c.List(); lerr == nil {
		kept := 0
		for _, it := range items {
			if it.InUse {
				kept++
			}
		}
		msg += fmt.Sprintf("; the cache takes %s", archive.HumanSize(tarindex.Total(items)))
		if kept > 0 {
			msg += fmt.Sprintf(", %d items in use kept", kept)
		}
	}
	fmt.Fprintln(w, msg+".")
	if err != nil {
		return fmt.Errorf("cache %s: %w", c.Dir, err)
	}
	return nil
}
