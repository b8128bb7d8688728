package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func testEnv(kv ...string) env {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

var homeEnv = testEnv("HOME", "/home/u")

func parseOK(t *testing.T, args ...string) *config {
	t.Helper()
	cfg, err := parseArgs(args, homeEnv)
	require.NoError(t, err, "%q", args)
	return cfg
}

func parseUsage(t *testing.T, want string, args ...string) {
	t.Helper()
	_, err := parseArgs(args, homeEnv)
	require.Error(t, err, "%q", args)
	var ue *usageError
	require.True(t, errors.As(err, &ue), "%q: a usage error, got %v", args, err)
	require.Contains(t, err.Error(), want)
}

func TestParseMount(t *testing.T) {
	cfg := parseOK(t, "/img/app.tar", "/mnt/app")
	require.Equal(t, &config{
		mode:       modeMount,
		image:      "/img/app.tar",
		mountpoint: "/mnt/app",
		cacheDir:   "/home/u/.cache/imgmount",
		fsName:     "imgmount:/img/app.tar",
	}, cfg)
}

func TestParseMountAllFlags(t *testing.T) {
	cfg := parseOK(t,
		"--image", "myapp:1.2", "--platform", "linux/arm/v7", "--layers",
		"--base", "/b/one.tar", "--base=/b/two.tar", "--cache-dir", "/var/cache/im",
		"-o", "allow_other,noatime", "-o", "fsname=myfs", "-oallow_root", "-f",
		"/img/app.tar", "/mnt/app")
	require.Equal(t, &config{
		mode:       modeMount,
		image:      "/img/app.tar",
		mountpoint: "/mnt/app",
		ref:        "myapp:1.2",
		platform:   "linux/arm/v7",
		bases:      []string{"/b/one.tar", "/b/two.tar"},
		cacheDir:   "/var/cache/im",
		layers:     true,
		foreground: true,
		allowOther: true,
		allowRoot:  true,
		fsName:     "myfs",
		mountOpts:  []string{"noatime"},
	}, cfg)
}

func TestParseFlagsAfterArguments(t *testing.T) {
	cfg := parseOK(t, "/img/app.tar", "/mnt/app", "--layers", "-f")
	require.True(t, cfg.layers)
	require.True(t, cfg.foreground)
	require.Equal(t, "/mnt/app", cfg.mountpoint)
}

func TestParseDebugImpliesForeground(t *testing.T) {
	for _, args := range [][]string{{"-d"}, {"--debug"}, {"-o", "debug"}, {"-o", "ro,debug"}} {
		cfg := parseOK(t, append(args, "/i.tar", "/m")...)
		require.True(t, cfg.debug, "%q", args)
		require.True(t, cfg.foreground, "%q", args)
		require.Empty(t, cfg.mountOpts, "%q", args)
	}
}

func TestParseRelativePaths(t *testing.T) {
	wd, err := os.Getwd()
	require.NoError(t, err)
	cfg := parseOK(t, "--cache-dir", "c", "--base", "b.tar", "app.tar", "mnt")
	require.Equal(t, filepath.Join(wd, "app.tar"), cfg.image)
	require.Equal(t, filepath.Join(wd, "mnt"), cfg.mountpoint)
	require.Equal(t, filepath.Join(wd, "c"), cfg.cacheDir)
	require.Equal(t, []string{filepath.Join(wd, "b.tar")}, cfg.bases)
	require.Equal(t, "imgmount:"+filepath.Join(wd, "app.tar"), cfg.fsName)
}

func TestParseCacheDirDefault(t *testing.T) {
	cfg, err := parseArgs([]string{"/i.tar", "/m"}, testEnv("XDG_CACHE_HOME", "/xdg", "HOME", "/home/u"))
	require.NoError(t, err)
	require.Equal(t, "/xdg/imgmount", cfg.cacheDir)
	// A relative XDG_CACHE_HOME is ignored, as the spec says.
	cfg, err = parseArgs([]string{"/i.tar", "/m"}, testEnv("XDG_CACHE_HOME", "rel", "HOME", "/home/u"))
	require.NoError(t, err)
	require.Equal(t, "/home/u/.cache/imgmount", cfg.cacheDir)
	cfg, err = parseArgs([]string{"inspect", "/i.tar"}, testEnv("XDG_CACHE_HOME", "/xdg"))
	require.NoError(t, err)
	require.Equal(t, "/xdg/imgmount", cfg.cacheDir)
}

func TestParseUnmount(t *testing.T) {
	for _, args := range [][]string{{"-u", "/mnt/app"}, {"--unmount", "/mnt/app"}, {"/mnt/app", "-u"}} {
		cfg := parseOK(t, args...)
		require.Equal(t, modeUnmount, cfg.mode, "%q", args)
		require.Equal(t, "/mnt/app", cfg.mountpoint)
	}
	parseUsage(t, "-u takes one argument", "-u")
	parseUsage(t, "-u takes one argument", "-u", "/a", "/b")
}

func TestParseInspect(t *testing.T) {
	cfg := parseOK(t, "inspect", "--json", "--image", "x:1", "--platform", "linux/amd64", "--cache-dir", "/c", "--base", "/b.tar", "/img/app.tar")
	require.Equal(t, &config{
		mode:     modeInspect,
		image:    "/img/app.tar",
		ref:      "x:1",
		platform: "linux/amd64",
		bases:    []string{"/b.tar"},
		cacheDir: "/c",
		json:     true,
	}, cfg)
	require.Equal(t, modeHelp, parseOK(t, "inspect", "--help").mode)
	parseUsage(t, "missing IMAGE", "inspect")
	parseUsage(t, "too many arguments", "inspect", "/a.tar", "/b.tar")
	parseUsage(t, "unknown flag: --layers", "inspect", "--layers", "/a.tar")
	parseUsage(t, "--platform", "inspect", "--platform", "amd64", "/a.tar")
}

func TestParseUsageErrors(t *testing.T) {
	parseUsage(t, "missing IMAGE and MOUNTPOINT")
	parseUsage(t, "missing MOUNTPOINT after /i.tar", "/i.tar")
	parseUsage(t, "too many arguments", "/i.tar", "/m", "/x")
	parseUsage(t, "unknown flag: --nope", "--nope", "/i.tar", "/m")
	parseUsage(t, "unknown shorthand flag", "-x", "/i.tar", "/m")
	parseUsage(t, "flag needs an argument", "/i.tar", "/m", "--image")
	parseUsage(t, "--upper", "-o", "rw", "/i.tar", "/m")
	parseUsage(t, "--upper", "-o", "ro", "--upper", "/u", "/i.tar", "/m")
	parseUsage(t, "inside the mountpoint", "--upper", "/m/u", "/i.tar", "/m")
	parseUsage(t, "the mountpoint /u/m is inside --upper /u", "--upper", "/u", "/i.tar", "/u/m")
	parseUsage(t, "read-only", "--upper", "/u", "--layers", "/i.tar", "/m")
	parseUsage(t, "fsname", "-o", "fsname=", "/i.tar", "/m")
	parseUsage(t, "unknown flag: --json", "--json", "/i.tar", "/m")
	for _, p := range []string{"linux", "linux/", "/amd64", "linux/arm/v7/x", "linux//v7"} {
		parseUsage(t, "want OS/ARCH", "--platform", p, "/i.tar", "/m")
	}
	parseUsage(t, "empty path", "", "/m")
}

func TestParseHelpAndVersion(t *testing.T) {
	require.Equal(t, modeHelp, parseOK(t, "--help").mode)
	require.Equal(t, modeHelp, parseOK(t, "-h").mode)
	require.Equal(t, modeHelp, parseOK(t, "-h", "/i.tar", "/m").mode)
	require.Equal(t, modeVersion, parseOK(t, "--version").mode)
}

func TestRunExitCodes(t *testing.T) {
	var out, errb bytes.Buffer
	require.Equal(t, 0, run([]string{"--version"}, &out, &errb))
	require.Equal(t, "imgmount dev\n", out.String())

	out.Reset()
	require.Equal(t, 0, run([]string{"--help"}, &out, &errb))
	help := out.String()
	for _, s := range []string{
		"imgmount [flags] IMAGE MOUNTPOINT", "imgmount -u MOUNTPOINT", "imgmount inspect [flags] IMAGE",
		"--image REF", "--platform OS/ARCH[/VARIANT]", "--layers", "--base BASE.tar", "--cache-dir DIR",
		"-o OPT[,OPT...]", "allow_other", "allow_root", "fsname=", "--foreground", "--debug", "--unmount",
		"--version", "--json", "Examples:", "inspect --json", "Cache:", "Unmounting:",
	} {
		require.Contains(t, help, s)
	}
	for i, line := range strings.Split(help, "\n") {
		require.LessOrEqual(t, len([]rune(line)), 80, "help line %d too long: %q", i+1, line)
	}

	errb.Reset()
	require.Equal(t, 2, run([]string{"--bogus"}, &out, &errb))
	require.Equal(t, "imgmount: unknown flag: --bogus\nTry 'imgmount --help' for more information.\n", errb.String())

	errb.Reset()
	dir := t.TempDir()
	require.Equal(t, 1, run([]string{"-u", dir}, &out, &errb))
	require.Equal(t, "imgmount: "+dir+" is not mounted\n", errb.String())

	errb.Reset()
	require.Equal(t, 1, run([]string{"inspect", "--cache-dir", dir, filepath.Join(dir, "nope.tar")}, &out, &errb))
	require.True(t, strings.HasPrefix(errb.String(), "imgmount: "), errb.String())
	require.Contains(t, errb.String(), "no such file or directory")
}

func TestCheckMountpoint(t *testing.T) {
	dir := t.TempDir()
	got, err := checkMountpoint(dir)
	require.NoError(t, err)
	want, _ := filepath.EvalSymlinks(dir)
	require.Equal(t, want, got)

	link := filepath.Join(t.TempDir(), "link")
	require.NoError(t, os.Symlink(dir, link))
	got, err = checkMountpoint(link)
	require.NoError(t, err)
	require.Equal(t, want, got, "symlinks resolved")

	_, err = checkMountpoint(filepath.Join(dir, "missing"))
	require.ErrorContains(t, err, "does not exist")

	f := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(f, nil, 0o644))
	_, err = checkMountpoint(f)
	require.ErrorContains(t, err, "is not a directory")

	_, err = checkMountpoint("/proc")
	require.ErrorContains(t, err, "/proc is already mounted (proc")
}

func TestReadStatus(t *testing.T) {
	var progress []string
	p := func(s string) { progress = append(progress, s) }

	st, msg := readStatus(strings.NewReader("progress: decompressing 1/2\nprogress: decompressing 2/2\nok\n"), p)
	require.Equal(t, statusOK, st)
	require.Empty(t, msg)
	require.Equal(t, []string{"decompressing 1/2", "decompressing 2/2"}, progress)

	st, msg = readStatus(strings.NewReader("progress: x\nerror: app.tar: layer 1 missing\nsecond line\n"), p)
	require.Equal(t, statusError, st)
	require.Equal(t, "app.tar: layer 1 missing\nsecond line", msg)

	st, _ = readStatus(strings.NewReader("progress: x\n"), p)
	require.Equal(t, statusGone, st)
	st, _ = readStatus(strings.NewReader(""), p)
	require.Equal(t, statusGone, st)
	st, _ = readStatus(strings.NewReader("ok"), p)
	require.Equal(t, statusOK, st, "ok without newline, then EOF")
}

func TestPipeReporter(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	rep := &pipeReporter{w: w}
	rep.progress("one\ntwo")
	rep.fatal(errors.New("it broke\nbadly"))
	rep.progress("after the end") // dropped: the pipe is closed
	var got []string
	st, msg := readStatus(r, func(s string) { got = append(got, s) })
	require.Equal(t, statusError, st)
	require.Equal(t, "it broke\nbadly", msg)
	require.Equal(t, []string{"one two"}, got)
}

// The mountpoint inside the upper directory, reached through a symlink:
// the server would list its own mount as a child of the upper directory.
func TestParseMountpointInsideUpperThroughSymlink(t *testing.T) {
	dir := t.TempDir()
	up := filepath.Join(dir, "w", "up")
	require.NoError(t, os.MkdirAll(filepath.Join(up, "mnt"), 0o755))
	require.NoError(t, os.Symlink(filepath.Join(dir, "w"), filepath.Join(dir, "link")))
	parseUsage(t, "is inside --upper", "--upper", up, "/i.tar", filepath.Join(dir, "link", "up", "mnt"))
	parseUsage(t, "is inside the mountpoint", "--upper", filepath.Join(dir, "link", "up", "mnt", "u"), "/i.tar", filepath.Join(up, "mnt"))
}

func TestMaxMemory(t *testing.T) {
	for in, want := range map[string]int64{"4G": 4 << 30, "512m": 512 << 20, "100": 100, "1TiB": -2, "2TB": 2 << 40, "none": -1} {
		var b byteSize
		err := b.Set(in)
		if want == -2 {
			require.Error(t, err, in)
			continue
		}
		require.NoError(t, err, in)
		require.Equal(t, want, int64(b), in)
	}
	for _, bad := range []string{"", "0", "-1G", "G", "4X", "9999999999T"} {
		var b byteSize
		require.Error(t, b.Set(bad), bad)
	}
	require.Equal(t, 2<<20, byteSize(4<<30).entries(), "4 GiB at 2 KiB an entry")
	require.Zero(t, byteSize(-1).entries(), "none: no limit")
	require.Greater(t, byteSize(0).entries(), 1000, "the default, from RAM")

	cfg, err := parseArgs([]string{"--max-memory", "1G", "/i.tar", "/m"}, func(string) string { return "" })
	require.NoError(t, err)
	require.Equal(t, 1<<19, cfg.openOptions(nil).MaxEntries)
	parseUsage(t, "want a size", "--max-memory", "lots", "/i.tar", "/m")
	parseUsage(t, "want a size", "inspect", "--max-memory", "lots", "/i.tar")
}
