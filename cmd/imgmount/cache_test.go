package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

func TestParseCache(t *testing.T) {
	cfg := parseOK(t, "cache")
	require.Equal(t, modeCache, cfg.mode)
	require.Equal(t, "list", cfg.cache.action)
	require.Equal(t, "/home/u/.cache/imgmount", cfg.cacheDir)
	require.False(t, cfg.json)

	cfg = parseOK(t, "cache", "ls", "--json", "--cache-dir", "/c")
	require.Equal(t, "list", cfg.cache.action)
	require.True(t, cfg.json)
	require.Equal(t, "/c", cfg.cacheDir)

	cfg = parseOK(t, "cache", "prune", "--max-size", "2G")
	require.Equal(t, "prune", cfg.cache.action)
	require.Equal(t, byteSize(2<<30), cfg.cache.maxSize)
	require.Equal(t, byteSize(0), parseOK(t, "cache", "prune").cache.maxSize)
	require.Equal(t, byteSize(-1), parseOK(t, "cache", "prune", "--max-size=none").cache.maxSize)
	require.Equal(t, "clear", parseOK(t, "cache", "clear").cache.action)

	for _, h := range []string{"--help", "-h"} {
		cfg = parseOK(t, "cache", "prune", "extra", h)
		require.Equal(t, modeHelp, cfg.mode)
		require.Equal(t, "cache", cfg.helpFor)
	}

	parseUsage(t, `unknown action "purge"`, "cache", "purge")
	parseUsage(t, "too many arguments", "cache", "prune", "clear")
	parseUsage(t, "--json is for cache list", "cache", "clear", "--json")
	parseUsage(t, "--max-size is for cache prune", "cache", "--max-size", "1G")
	parseUsage(t, "want a size", "cache", "prune", "--max-size", "lots")
	parseUsage(t, "unknown flag", "cache", "--image", "x")
}

func TestParseCacheMax(t *testing.T) {
	cfg := parseOK(t, "--cache-max", "5G", "/img/app.tar", "/mnt/app")
	require.Equal(t, byteSize(5<<30), cfg.cacheMax)
	require.Equal(t, int64(5<<30), cfg.openOptions(nil).CacheMax)
	cfg = parseOK(t, "inspect", "--cache-max", "none", "/img/app.tar")
	require.Equal(t, int64(0), cfg.openOptions(nil).CacheMax, "none: no bound")
	cfg = parseOK(t, "inspect", "--cache-dir", t.TempDir(), "/img/app.tar")
	bound := cfg.openOptions(nil).CacheMax
	require.GreaterOrEqual(t, bound, int64(cacheMaxFloor))
	require.LessOrEqual(t, bound, int64(cacheMaxCap))
	require.Equal(t, defaultCacheMax(cfg.cacheDir), bound)
	require.Equal(t, bound, defaultCacheMax(filepath.Join(cfg.cacheDir, "not", "yet")), "a directory not made yet: its parent's filesystem")
	parseUsage(t, "want a size", "--cache-max", "0", "/img/app.tar", "/mnt/app")
}

// cacheRun runs imgmount with args and returns its status, stdout and
// stderr.
func cacheRun(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	status := run(args, &out, &errb)
	return status, out.String(), errb.String()
}

// fillCache makes a cache directory with a saved index and two
// decompressed copies, through tarindex as a mount would.
func fillCache(t *testing.T) (dir string, blobs []string) {
	t.Helper()
	dir = t.TempDir()
	c := &tarindex.Cache{Dir: dir}
	for i, body := range []string{strings.Repeat("one ", 30000), strings.Repeat("two ", 20000)} {
		p, err := c.Decompress("dev=1,ino=2,path=/img/app.tar@"+string(rune('0'+i)), "", tarindex.CompressionNone, strings.NewReader(body))
		require.NoError(t, err)
		old := time.Now().Add(-time.Duration(10-i) * time.Hour)
		for _, s := range []string{".stamp", ".src"} {
			require.NoError(t, os.Chtimes(p+s, old, old))
		}
		blobs = append(blobs, p)
	}
	idx := filepath.Join(dir, "index", strings.Repeat("a", 64)+".idx")
	require.NoError(t, os.MkdirAll(filepath.Dir(idx), 0o755))
	require.NoError(t, os.WriteFile(idx, []byte("index"), 0o644))
	c.Note(idx, "/img/app.tar@1536")
	require.NoError(t, c.VerifyOnce("k", digest.FromString("x"), []byte("x")))
	return dir, blobs
}

func TestCacheCommand(t *testing.T) {
	dir, blobs := fillCache(t)

	status, out, errOut := cacheRun(t, "cache", "--cache-dir", dir)
	require.Equal(t, exitOK, status, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 5, out)
	require.Regexp(t, `^KIND +SIZE +LAST USE +IN USE +SOURCE$`, lines[0])
	require.Regexp(t, `^decompressed +\d+(\.\d+)? kB +\d{4}-\d\d-\d\d \d\d:\d\d +- +/img/app.tar@0$`, lines[1])
	require.Contains(t, lines[2], "/img/app.tar@1")
	require.Regexp(t, `^index +.* +/img/app.tar@1536$`, lines[3])
	require.Contains(t, lines[4], "in "+dir+": 3 items (and 1 verified markers, empty), 0 in use; the default bound is ")

	status, out, _ = cacheRun(t, "cache", "list", "--json", "--cache-dir", dir)
	require.Equal(t, exitOK, status)
	var got struct {
		Dir   string
		Total int64
		Bound int64 `json:"default_bound"`
		Items []struct {
			Path    string
			Kind    string
			Size    int64
			LastUse time.Time `json:"last_use"`
			InUse   bool      `json:"in_use"`
			Source  string
		}
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	require.Equal(t, dir, got.Dir)
	require.Len(t, got.Items, 4)
	require.Equal(t, blobs[0], got.Items[0].Path)
	require.Equal(t, "decompressed", got.Items[0].Kind)
	require.Equal(t, "index", got.Items[2].Kind)
	require.Equal(t, "verified", got.Items[3].Kind)
	require.Positive(t, got.Items[0].Size)
	require.Equal(t, got.Total, got.Items[0].Size+got.Items[1].Size+got.Items[2].Size)
	require.Positive(t, got.Bound)

	// The held copy stays through prune and clear.
	release, err := (&tarindex.Cache{Dir: dir}).Hold(blobs[1])
	require.NoError(t, err)
	status, out, _ = cacheRun(t, "cache", "--cache-dir", dir)
	require.Equal(t, exitOK, status)
	require.Regexp(t, `(?m)^decompressed .* yes +/img/app.tar@1$`, out)

	status, out, errOut = cacheRun(t, "cache", "prune", "--max-size", "1M", "--cache-dir", dir)
	require.Equal(t, exitOK, status, errOut)
	require.Equal(t, "Removed nothing", strings.SplitN(out, ";", 2)[0], "it fits")
	status, out, errOut = cacheRun(t, "cache", "prune", "--max-size", "1K", "--cache-dir", dir)
	require.Equal(t, exitOK, status, errOut)
	require.Regexp(t, `^Removed 2 items, .*; the cache takes .*, 1 items in use kept\.\n$`, out)
	require.NoFileExists(t, blobs[0])
	require.FileExists(t, blobs[1])

	status, out, _ = cacheRun(t, "cache", "clear", "--cache-dir", dir)
	require.Equal(t, exitOK, status)
	require.Regexp(t, `^Removed 1 items, 0 B; .* 1 items in use kept\.\n$`, out, "the verified marker, which prune keeps")
	release()
	status, out, _ = cacheRun(t, "cache", "clear", "--cache-dir", dir)
	require.Equal(t, exitOK, status)
	require.Regexp(t, `^Removed 1 items, .*; the cache takes 0 B\.\n$`, out)

	status, out, _ = cacheRun(t, "cache", "--cache-dir", dir)
	require.Equal(t, exitOK, status)
	require.Equal(t, "The cache "+dir+" is empty.\n", out)
	status, out, _ = cacheRun(t, "cache", "list", "--json", "--cache-dir", filepath.Join(dir, "none"))
	require.Equal(t, exitOK, status)
	require.Contains(t, out, `"items": []`)
}

func TestCacheCommandFailure(t *testing.T) {
	dir, _ := fillCache(t)
	// A directory where a sidecar goes, not empty: not even root removes it.
	idx := filepath.Join(dir, "index", strings.Repeat("a", 64)+".idx")
	require.NoError(t, os.Remove(idx+".src"))
	require.NoError(t, os.MkdirAll(filepath.Join(idx+".src", "d"), 0o755))
	status, out, errOut := cacheRun(t, "cache", "clear", "--cache-dir", dir)
	require.Equal(t, exitError, status)
	require.Contains(t, out, "Removed 3 items")
	require.Contains(t, errOut, "imgmount: cache "+dir+": cache: remove "+idx+".src: ")
}

func TestCacheHelp(t *testing.T) {
	help := helpOf(t, "cache", "--help")
	for _, s := range []string{"Usage:\n  imgmount cache [list] [--json]", "imgmount cache prune [--max-size SIZE]", "--max-size SIZE",
		"--json", "--cache-dir DIR     where saved", "in use", "imgmount cache clear", "Exit status:"} {
		require.Contains(t, help, s)
	}
	overview := helpOf(t, "--help")
	require.Contains(t, overview, "Flags for cache:")
	require.Contains(t, overview, "--cache-max SIZE    the most the cache directory may take")
	require.Equal(t, 1, strings.Count(overview, "the most the cache directory may take"))
}
