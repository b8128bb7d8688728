package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/stretchr/testify/require"
)

func TestParseDiff(t *testing.T) {
	cfg := parseOK(t, "diff", "/a.tar", "/b.tar")
	require.Equal(t, modeDiff, cfg.mode)
	require.Equal(t, &diffConfig{a: "/a.tar", b: "/b.tar"}, cfg.diff)
	require.Equal(t, "/home/u/.cache/imgmount", cfg.cacheDir)

	cfg = parseOK(t, "diff", "--image", "app:1", "--image-b", "app:2", "--json", "--cache-dir", "/c", "/x.tar", "/x.tar")
	require.Equal(t, &diffConfig{a: "/x.tar", b: "/x.tar", refA: "app:1", refB: "app:2"}, cfg.diff)
	require.True(t, cfg.json)
	require.Equal(t, "/c", cfg.cacheDir)

	cfg = parseOK(t, "diff", "--layers", "/i.tar", "3")
	require.Equal(t, &diffConfig{a: "/i.tar", b: "/i.tar", layers: true, layerA: 2, layerB: 3}, cfg.diff)
	cfg = parseOK(t, "diff", "/i.tar", "--layers", "0")
	require.Equal(t, -1, cfg.diff.layerA, "layer 0 against nothing")
	cfg = parseOK(t, "diff", "/i.tar", "--layers", "4", "1", "--image", "app:1")
	require.Equal(t, &diffConfig{a: "/i.tar", b: "/i.tar", layers: true, layerA: 4, layerB: 1}, cfg.diff)
	require.Equal(t, "app:1", cfg.ref)

	require.Equal(t, modeHelp, parseOK(t, "diff", "--help").mode)
	require.Equal(t, "diff", parseOK(t, "diff", "-h", "x").helpFor)

	parseUsage(t, "missing A and B", "diff")
	parseUsage(t, "missing B after /a.tar", "diff", "/a.tar")
	parseUsage(t, "too many arguments", "diff", "/a.tar", "/b.tar", "/c.tar")
	parseUsage(t, "missing IMAGE and layer numbers", "diff", "--layers")
	parseUsage(t, "missing the layer numbers", "diff", "--layers", "/a.tar")
	parseUsage(t, "too many arguments", "diff", "--layers", "/a.tar", "1", "2", "3")
	parseUsage(t, `layer "x"`, "diff", "--layers", "/a.tar", "x")
	parseUsage(t, "unknown shorthand flag: '1'", "diff", "--layers", "/a.tar", "-1")
	parseUsage(t, "--image-a and --image-b", "diff", "--layers", "--image-a", "x", "/a.tar", "1")
	parseUsage(t, "unknown flag: --upper", "diff", "--upper", "/u", "/a.tar", "/b.tar")
	parseUsage(t, "--platform", "diff", "--platform", "arm64", "/a.tar", "/b.tar")
}

func TestParseInspectFiles(t *testing.T) {
	require.True(t, parseOK(t, "inspect", "--files", "/a.tar").files)
	require.False(t, parseOK(t, "inspect", "/a.tar").files)
}

// diffImages writes two images as tarballs: a (two layers) and b (a's base
// layer and another), and an image holding both (tagged a:1 and b:1).
func diffImages(t *testing.T) (dir, a, b, both string) {
	dir = t.TempDir()
	base := imagetest.LayerTar(t, []imagetest.Entry{
		imagetest.Dir("etc"), imagetest.File("etc/passwd", "root:x:0:0\n"), imagetest.FileMode("etc/shadow", "s", 0o600),
		imagetest.Dir("usr"), imagetest.Dir("usr/bin"), imagetest.FileMode("usr/bin/tool", "v1", 0o755),
		imagetest.Symlink("bin", "usr/bin"),
	})
	la := imagetest.LayerTar(t, []imagetest.Entry{imagetest.File("app/main", "release 1"), imagetest.File("app/old", "old")})
	lb := imagetest.LayerTar(t, []imagetest.Entry{
		imagetest.File("app/main", "release 2"), imagetest.File("app/new file", "new"),
		imagetest.FileMode("usr/bin/tool", "v1", 0o4755).With(func(h *tar.Header) { h.Uid, h.Gid = 1000, 1000 }),
		imagetest.Symlink("bin", "usr/local/bin"),
		imagetest.File("etc/passwd", "root:x:0:0:root\n"),
		imagetest.Whiteout("etc/shadow"),
	})
	ia := imagetest.Build(t, imagetest.Spec{Tags: []string{"a:1"}, Layers: []imagetest.LayerSpec{{Tar: base}, {Tar: la}}})
	ib := imagetest.Build(t, imagetest.Spec{Tags: []string{"b:1"}, Layers: []imagetest.LayerSpec{{Tar: base}, {Tar: lb}}})
	a = imagetest.OCI(t, true, ia).Write(t, dir, "a.tar")
	b = imagetest.Legacy(t, ib).Write(t, dir, "b.tar")
	both = imagetest.OCI(t, false, ia, ib).Write(t, dir, "both.tar")
	return dir, a, b, both
}

// wantDiffAB is what diff a.tar b.tar prints.
const wantDiffAB = `M /app/main (content)
A /app/new file
D /app/old
M /bin (target "usr/bin"→"usr/local/bin")
M /etc/passwd (content)
D /etc/shadow
M /usr/bin/tool (mode 0755→4755, owner 0:0→1000:1000)
`

func runOut(t *testing.T, want int, args ...string) (string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	require.Equal(t, want, run(args, &out, &errb), "%q: %s", args, errb.String())
	return out.String(), errb.String()
}

func TestDiffRun(t *testing.T) {
	dir, a, b, both := diffImages(t)
	cache := filepath.Join(dir, "cache")
	out, errs := runOut(t, exitOK, "diff", "--cache-dir", cache, a, b)
	require.Equal(t, wantDiffAB, out)
	require.Empty(t, errs)

	// One tarball, two images.
	out, _ = runOut(t, exitOK, "diff", "--cache-dir", cache, "--image-a", "a:1", "--image-b", "b:1", both, both)
	require.Equal(t, wantDiffAB, out)
	// --image for both sides: the same image, no difference.
	out, _ = runOut(t, exitOK, "diff", "--cache-dir", cache, "--image", "a:1", both, both)
	require.Empty(t, out)
	_, errs = runOut(t, exitBadImage, "diff", "--cache-dir", cache, both, a)
	require.Contains(t, errs, "--image")

	// The reverse.
	out, _ = runOut(t, exitOK, "diff", "--cache-dir", cache, b, a)
	require.Contains(t, out, "D /app/new file\nA /app/old\n")
	require.Contains(t, out, "M /usr/bin/tool (mode 4755→0755, owner 1000:1000→0:0)\n")

	// Layers of one image: what layer 1 changed; layer 0 against nothing.
	out, _ = runOut(t, exitOK, "diff", "--cache-dir", cache, "--layers", b, "1")
	require.Equal(t, "A /app\nA /app/main\nA /app/new file\n"+wantDiffAB[strings.Index(wantDiffAB, "M /bin"):], out)
	out, _ = runOut(t, exitOK, "diff", "--cache-dir", cache, "--layers", a, "0")
	require.Equal(t, "A /bin\nA /etc\nA /etc/passwd\nA /etc/shadow\nA /usr\nA /usr/bin\nA /usr/bin/tool\n", out)
	out, _ = runOut(t, exitOK, "diff", "--cache-dir", cache, "--layers", a, "1", "0")
	require.Equal(t, "D /app\nD /app/main\nD /app/old\n", out)
	out, _ = runOut(t, exitOK, "diff", "--cache-dir", cache, "--layers", a, "1", "1")
	require.Empty(t, out)
	_, errs = runOut(t, exitUsage, "diff", "--cache-dir", cache, "--layers", a, "0", "2")
	require.Contains(t, errs, "layer 2: "+a+" has 2 layers, 0 to 1")
	require.Contains(t, errs, "imgmount diff --help")

	_, errs = runOut(t, exitError, "diff", "--cache-dir", cache, a, filepath.Join(dir, "missing.tar"))
	require.Contains(t, errs, "missing.tar")
}

func TestDiffJSON(t *testing.T) {
	dir, a, b, _ := diffImages(t)
	out, _ := runOut(t, exitOK, "diff", "--json", "--cache-dir", filepath.Join(dir, "cache"), a, b)
	require.NotContains(t, out, "null")
	var got struct {
		A, B struct {
			Archive string `json:"archive"`
			Image   struct {
				Tags []string `json:"tags"`
			} `json:"image"`
			Layers int `json:"layers"`
		}
		Equal                    bool
		Added, Removed, Modified int
		Changes                  []struct {
			Path, Change string
			What         []string
			A, B         *struct {
				Type, Mode, Target, Device string
				UID, GID                   uint32
				Size                       int64
				Layer                      int
				DiffID                     string `json:"diff_id"`
			}
		}
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	require.Equal(t, a, got.A.Archive)
	require.Equal(t, []string{"b:1"}, got.B.Image.Tags)
	require.Equal(t, 2, got.B.Layers)
	require.False(t, got.Equal)
	require.Equal(t, []int{1, 2, 4}, []int{got.Added, got.Removed, got.Modified})
	require.Len(t, got.Changes, 7)
	var lines []string
	for _, c := range got.Changes {
		lines = append(lines, c.Change+" "+c.Path+" "+strings.Join(c.What, ","))
		require.Equal(t, c.Change != "A", c.A != nil, c.Path)
		require.Equal(t, c.Change != "D", c.B != nil, c.Path)
	}
	require.Equal(t, []string{
		"M /app/main content", "A /app/new file ", "D /app/old ", "M /bin target", "M /etc/passwd content",
		"D /etc/shadow ", "M /usr/bin/tool mode,owner",
	}, lines)
	tool := got.Changes[6]
	require.Equal(t, "0755", tool.A.Mode)
	require.Equal(t, "4755", tool.B.Mode)
	require.Equal(t, uint32(1000), tool.B.UID)
	require.Equal(t, 0, tool.A.Layer)
	require.Equal(t, 1, tool.B.Layer)
	require.NotEmpty(t, tool.B.DiffID)
	require.Equal(t, "usr/local/bin", got.Changes[3].B.Target)
	require.Equal(t, int64(len("release 2")), got.Changes[0].B.Size)

	out, _ = runOut(t, exitOK, "diff", "--json", "--cache-dir", filepath.Join(dir, "cache"), a, a)
	require.Contains(t, out, `"equal": true`)
	require.Contains(t, out, `"changes": []`)
}

func TestDiffTextFormat(t *testing.T) {
	require.Equal(t, "/", displayPath("."))
	require.Equal(t, "/etc/a b", displayPath("etc/a b"))
	require.Equal(t, `"/etc/a\nb"`, displayPath("etc/a\nb"))
	require.Equal(t, `"/x\xff"`, displayPath("x\xff"))
	require.Equal(t, `"/trailing "`, displayPath("trailing "))
	require.Equal(t, `/"q`, displayPath(`"q`))
	require.Equal(t, `"\"q"`, quoteIfNeeded(`"q`))
	require.Equal(t, "/été", displayPath("été"))
}

func TestInspectFiles(t *testing.T) {
	dir, _, b, both := diffImages(t)
	cache := filepath.Join(dir, "cache")
	out, _ := runOut(t, exitOK, "inspect", "--files", "--cache-dir", cache, b)
	require.Equal(t, ``+
		"-  dir       -  /\n"+
		"-  dir       -  /app\n"+
		"1  file      9  /app/main\n"+
		"1  file      3  /app/new file\n"+
		"1  symlink  13  /bin -> usr/local/bin\n"+
		"0  dir       -  /etc\n"+
		"1  file     16  /etc/passwd\n"+
		"0  dir       -  /usr\n"+
		"0  dir       -  /usr/bin\n"+
		"1  file      2  /usr/bin/tool\n", out)

	out, _ = runOut(t, exitOK, "inspect", "--files", "--json", "--cache-dir", cache, b)
	var got struct {
		Layers []struct {
			DiffID string `json:"diff_id"`
		} `json:"layers"`
		Files []struct {
			Path   string `json:"path"`
			Type   string `json:"type"`
			Mode   string `json:"mode"`
			Layer  int    `json:"layer"`
			DiffID string `json:"diff_id"`
			Size   int64  `json:"size"`
			Target string `json:"target"`
		} `json:"files"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got))
	require.Len(t, got.Layers, 2)
	require.Len(t, got.Files, 10)
	require.Equal(t, "/", got.Files[0].Path)
	require.Equal(t, -1, got.Files[0].Layer)
	require.Empty(t, got.Files[0].DiffID)
	f := got.Files[9]
	require.Equal(t, "/usr/bin/tool", f.Path)
	require.Equal(t, "file", f.Type)
	require.Equal(t, "4755", f.Mode)
	require.Equal(t, 1, f.Layer)
	require.Equal(t, got.Layers[1].DiffID, f.DiffID)
	require.Equal(t, "usr/local/bin", got.Files[4].Target)

	// Without --files, no "files" in the JSON; with several images, the
	// shared layers.
	out, _ = runOut(t, exitOK, "inspect", "--json", "--image", "b:1", "--cache-dir", cache, both)
	require.NotContains(t, out, `"files"`)
	var rep struct {
		Layers []struct {
			SharedWith []struct {
				Tags []string `json:"tags"`
			} `json:"shared_with"`
		} `json:"layers"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Len(t, rep.Layers, 2)
	require.Len(t, rep.Layers[0].SharedWith, 1)
	require.Equal(t, []string{"a:1"}, rep.Layers[0].SharedWith[0].Tags)
	require.Empty(t, rep.Layers[1].SharedWith)
	out, _ = runOut(t, exitOK, "inspect", "--image", "b:1", "--cache-dir", cache, both)
	require.Regexp(t, `(?m)^Shared with the other images of the tarball:\n  0  [0-9a-f]{12}  a:1\n`, out)
}

func TestDiffHelp(t *testing.T) {
	help := helpOf(t, "diff", "--help")
	for _, s := range []string{
		"Usage:\n  imgmount diff [flags] A B", "imgmount diff --layers IMAGE N [M]", "--image-a REF, --image-b REF",
		"--json", "M /path (what, ...)", "exit status is 0 whether they differ or not", "--cache-dir DIR     where saved",
	} {
		require.Contains(t, help, s)
	}
	require.NotContains(t, help, "allow_other")
	require.Contains(t, helpOf(t, "inspect", "--help"), "--files")
	overview := helpOf(t, "--help")
	require.Contains(t, overview, "Flags for diff:")
	require.Contains(t, overview, "as for mounting (for A and B)")
}
