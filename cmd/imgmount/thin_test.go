package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/overlay/repack"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

func TestParseThin(t *testing.T) {
	cfg := parseOK(t, "thin", "/img/app.tar", "--base", "/b/base.tar", "--have", "/h/site.have", "--have", "-",
		"--image", "a:1", "--image", "sha256:abcd", "-o", "/out/thin.tar", "--cache-dir", "/c")
	require.Equal(t, modeThin, cfg.mode)
	sc := cfg.ship
	require.Equal(t, "/img/app.tar", sc.source)
	require.Equal(t, "/out/thin.tar", sc.output)
	require.Equal(t, []string{"/b/base.tar"}, cfg.bases)
	require.Equal(t, []string{"/h/site.have", "-"}, sc.haves)
	require.Equal(t, []string{"a:1", "sha256:abcd"}, sc.images)
	require.Equal(t, "/c", cfg.cacheDir)
	require.Equal(t, "/home/u/.cache/imgmount", parseOK(t, "thin", "a.tar", "--have", "h", "-o", "-").cacheDir)
	require.Equal(t, modeHelp, parseOK(t, "thin", "--help").mode)
	require.Equal(t, "thin", parseOK(t, "thin", "x", "y", "-h").helpFor)

	parseUsage(t, "missing the image tarball", "thin", "--have", "h", "-o", "o.tar")
	parseUsage(t, "too many arguments", "thin", "a.tar", "b.tar", "--have", "h", "-o", "o.tar")
	parseUsage(t, "--base BASE.tar or --have LIST", "thin", "a.tar", "-o", "o.tar")
	parseUsage(t, "missing -o", "thin", "a.tar", "--have", "h")
	parseUsage(t, "is the source itself", "thin", "/a.tar", "--have", "h", "-o", "/a.tar")
	parseUsage(t, "unknown flag", "thin", "a.tar", "--have", "h", "-o", "o.tar", "--upper", "x")
}

func TestParseComplete(t *testing.T) {
	cfg := parseOK(t, "complete", "/t/thin.tar", "--base", "/b/one.tar", "--base", "/b/two.tar", "-o", "/t/full.tar")
	require.Equal(t, modeComplete, cfg.mode)
	require.Equal(t, "/t/thin.tar", cfg.ship.source)
	require.Equal(t, "/t/full.tar", cfg.ship.output)
	require.Equal(t, []string{"/b/one.tar", "/b/two.tar"}, cfg.bases)
	require.Equal(t, "complete", parseOK(t, "complete", "-h").helpFor)
	parseUsage(t, "missing -o", "complete", "thin.tar", "--base", "b.tar")
	parseUsage(t, "missing the image tarball", "complete", "-o", "x.tar")
	parseUsage(t, "unknown flag", "complete", "thin.tar", "--have", "h", "-o", "x.tar")
}

func TestParseHave(t *testing.T) {
	cfg := parseOK(t, "have", "--docker", "--podman", "--json", "/b/base.tar", "/b/other.tar")
	require.Equal(t, modeHave, cfg.mode)
	require.True(t, cfg.ship.docker)
	require.True(t, cfg.ship.podman)
	require.True(t, cfg.json)
	require.Equal(t, []string{"/b/base.tar", "/b/other.tar"}, cfg.ship.sources)
	require.Equal(t, "have", parseOK(t, "have", "--help").helpFor)
	parseUsage(t, "nothing to list", "have")
	parseUsage(t, "nothing to list", "have", "--json")
	parseUsage(t, "unknown flag", "have", "--base", "x", "--docker")
}

func TestThinHelp(t *testing.T) {
	for _, c := range []struct {
		name string
		has  []string
	}{
		{"thin", []string{"Usage:\n  imgmount thin [flags] IMAGE -o OUT.tar", "--have LIST", "--base BASE.tar     an image (tarball or directory) the receiving side", "--image REF         keep only this image", "image IDs and manifest", "imgmount have --docker > site.have"}},
		{"complete", []string{"Usage:\n  imgmount complete [flags] THIN -o OUT.tar", "--base SOURCE", "status 4", "imgmount complete app-thin.tar --base base.tar"}},
		{"have", []string{"Usage:\n  imgmount have [flags] [SOURCE...]", "--docker", "--podman", "--json", "chain_ids"}},
	} {
		help := helpOf(t, c.name, "--help")
		for _, s := range append(c.has, "-h, --help", "--cache-dir DIR", "Exit status:") {
			require.Contains(t, help, s, c.name)
		}
	}
	overview := helpOf(t, "--help")
	for _, s := range []string{"Flags for thin:", "Flags for complete:", "Flags for have:", "imgmount thin [flags] IMAGE -o OUT.tar", "complete or have"} {
		require.Contains(t, overview, s)
	}
}

// shipImages writes a base tarball and an image built on it (docker save
// legacy layout).
func shipImages(t *testing.T, dir string) (base, app string, baseB, appB *imagetest.Built) {
	t.Helper()
	l0 := imagetest.LayerSpec{Files: map[string]string{"etc/os-release": "ID=base\n", "bin/sh": strings.Repeat("#!shell", 500)}}
	baseB = imagetest.Build(t, imagetest.Spec{Tags: []string{"example/base:1"}, Layers: []imagetest.LayerSpec{l0}})
	appB = imagetest.Build(t, imagetest.Spec{Tags: []string{"example/app:1"}, Layers: []imagetest.LayerSpec{l0,
		{Files: map[string]string{"app/run": "the app"}, Comp: tarindex.CompressionGzip}}})
	base = imagetest.Legacy(t, baseB).Write(t, dir, "base.tar")
	app = imagetest.OCI(t, true, appB).Write(t, dir, "app.tar")
	return base, app, baseB, appB
}

func TestRunThinComplete(t *testing.T) {
	dir := t.TempDir()
	cache := t.TempDir()
	base, app, baseB, _ := shipImages(t, dir)
	var stdout, stderr bytes.Buffer
	runOK := func(args ...string) string {
		t.Helper()
		stdout.Reset()
		stderr.Reset()
		code := run(append(args, "--cache-dir", cache), &stdout, &stderr)
		require.Equal(t, exitOK, code, "%q: %s", args, stderr.String())
		return stdout.String()
	}

	// have of the base tarball, as text and as JSON; thin by either, and
	// by the base itself, gives the same tarball.
	haveText := runOK("have", base)
	require.Equal(t, baseB.DiffIDs[0].String()+"\n", haveText)
	haveJSON := runOK("have", "--json", base)
	var l repack.HaveList
	require.NoError(t, json.Unmarshal([]byte(haveJSON), &l))
	require.Equal(t, baseB.DiffIDs, l.DiffIDs)
	require.Equal(t, baseB.DiffIDs, l.ChainIDs, "one layer: its chain ID is its diff_id")
	textList := imagetest.WriteFile(t, dir, "site.have", []byte(haveText))
	jsonList := imagetest.WriteFile(t, dir, "site.json", []byte(haveJSON))

	var thins [][]byte
	for i, how := range [][]string{{"--base", base}, {"--have", textList}, {"--have", jsonList}} {
		out := filepath.Join(dir, "thin"+string(rune('0'+i))+".tar")
		require.Empty(t, runOK(append([]string{"thin", app, "-o", out}, how...)...))
		b, err := os.ReadFile(out)
		require.NoError(t, err)
		require.Less(t, len(b), int(fileSizeOf(t, app))-len(baseB.Blobs[0])+512)
		thins = append(thins, b)
	}
	require.Equal(t, thins[0], thins[1])
	require.Equal(t, thins[0], thins[2])
	thin := filepath.Join(dir, "thin0.tar")

	// The thin tarball needs its base; complete puts it back.
	code := run([]string{"complete", thin, "-o", filepath.Join(dir, "nope.tar"), "--cache-dir", cache}, &stdout, &stderr)
	require.Equal(t, exitLayerMissing, code, stderr.String())
	require.Contains(t, stderr.String(), baseB.DiffIDs[0].String())
	require.Contains(t, stderr.String(), "example/app:1")
	_, err := os.Stat(filepath.Join(dir, "nope.tar"))
	require.True(t, os.IsNotExist(err), "a failed complete writes nothing")

	full := filepath.Join(dir, "full.tar")
	runOK("complete", thin, "--base", base, "-o", full)
	want, err := os.ReadFile(app)
	require.NoError(t, err)
	got, err := os.ReadFile(full)
	require.NoError(t, err)
	require.Equal(t, len(want), len(got))
	wantMembers, gotMembers := map[string]string{}, map[string]string{}
	for _, m := range imagetest.ReadTar(t, want) {
		wantMembers[m.Hdr.Name] = m.Body
	}
	for _, m := range imagetest.ReadTar(t, got) {
		gotMembers[m.Hdr.Name] = m.Body
	}
	require.Equal(t, wantMembers, gotMembers)

	// Nothing left beside the outputs.
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		require.False(t, strings.Contains(e.Name(), ".imgmount-"), "left: %s", e.Name())
	}

	// A list that is not one is a clear error.
	bad := imagetest.WriteFile(t, dir, "bad.have", []byte("hello\n"))
	code = run([]string{"thin", app, "--have", bad, "-o", filepath.Join(dir, "x.tar"), "--cache-dir", cache}, &stdout, &stderr)
	require.Equal(t, exitError, code)
	require.Contains(t, stderr.String(), "is not a diff_id")

	// An empty list leaves nothing out: a full copy, said on stderr.
	empty := imagetest.WriteFile(t, dir, "empty.have", nil)
	copied := filepath.Join(dir, "copy.tar")
	runOK("thin", app, "--have", empty, "-o", copied)
	require.Contains(t, stderr.String(), "imgmount: warning: --have names no layer (an empty list?); the receiver has none of these layers: "+copied+" is complete")
	require.Equal(t, fileSizeOf(t, app), fileSizeOf(t, copied))
	runOK("thin", app, "--base", base, "-o", filepath.Join(dir, "quiet.tar"))
	require.Empty(t, stderr.String(), "nothing to warn of")

	// inspect describes the thin tarball without its base: the left-out
	// layer marked absent.
	out := runOK("inspect", thin)
	require.Regexp(t, `(?m)^  0  `+baseB.DiffIDs[0].Encoded()[:12]+`  absent `, out)
	require.Contains(t, out, "--base BASE.tar")
}

func fileSizeOf(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	require.NoError(t, err)
	return fi.Size()
}

// have --docker asks the docker command (here a stand-in on PATH) for the
// images and their layers.
func TestHaveDocker(t *testing.T) {
	bin := t.TempDir()
	d := func(s string) digest.Digest { return digest.FromString(s) }
	A, B, C := d("A"), d("B"), d("C")
	script := `#!/bin/sh
case "$1 $2" in
"image ls") echo sha256:1111; echo sha256:2222; echo sha256:1111 ;;
"image inspect")
	[ "$#" = 4 ] || { echo "want two images, got $*" >&2; exit 1; }
	echo '[{"Id":"sha256:1111","RootFS":{"Type":"layers","Layers":["` + A.String() + `","` + B.String() + `"]}},{"Id":"sha256:2222","RootFS":{"Type":"layers","Layers":["` + C.String() + `"]}}]' ;;
*) echo "unexpected: $*" >&2; exit 1 ;;
esac
`
	require.NoError(t, os.WriteFile(filepath.Join(bin, "docker"), []byte(script), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(bin, "podman"), []byte("#!/bin/sh\necho 'Cannot connect to Podman' >&2\nexit 125\n"), 0o755))
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))

	h, err := engineHave("docker")
	require.NoError(t, err)
	require.Equal(t, []bool{true, true}, h.LeftOut([]digest.Digest{A, B}))
	require.Equal(t, []bool{false, false}, h.LeftOut([]digest.Digest{B, C}))
	require.Len(t, h.All, 3)

	_, err = engineHave("podman")
	require.ErrorContains(t, err, "Cannot connect to Podman")
	_, err = engineHave("no-such-engine")
	require.ErrorContains(t, err, "not installed")

	var stdout, stderr bytes.Buffer
	require.Equal(t, exitOK, run([]string{"have", "--docker"}, &stdout, &stderr), stderr.String())
	require.Equal(t, 3, strings.Count(stdout.String(), "sha256:"))
	require.Equal(t, exitError, run([]string{"have", "--docker", "--podman"}, &stdout, &stderr))
}

func TestCommitHave(t *testing.T) {
	cfg := parseOK(t, "commit", "/img/app.tar", "--have", "/h/site.have", "--have", "-", "--thin-from", "/b/base.tar", "-o", "/out/new.tar")
	require.Equal(t, []string{"/h/site.have", "-"}, cfg.repack.have)
	require.Equal(t, []string{"/b/base.tar"}, cfg.repack.thinFrom)

	dir := t.TempDir()
	cache := t.TempDir()
	base, app, baseB, appB := shipImages(t, dir)
	var stdout, stderr bytes.Buffer
	list := imagetest.WriteFile(t, dir, "site.have", []byte(baseB.DiffIDs[0].String()+"\n"))
	out := filepath.Join(dir, "commit.tar")
	require.Equal(t, exitOK, run([]string{"commit", app, "--have", list, "-o", out, "--cache-dir", cache}, &stdout, &stderr), stderr.String())
	members := map[string]bool{}
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	for _, m := range imagetest.ReadTar(t, b) {
		members[m.Hdr.Name] = true
	}
	require.False(t, members["blobs/sha256/"+baseB.DiffIDs[0].Encoded()], "the base's layer is left out")
	require.True(t, members["blobs/sha256/"+appB.BlobDigests[1].Encoded()], "the image's own layer is kept")
	require.Equal(t, exitOK, run([]string{"inspect", "--base", base, out, "--cache-dir", cache}, &stdout, &stderr), stderr.String())
}
