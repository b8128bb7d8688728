package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/repack"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

func TestParseCommit(t *testing.T) {
	cfg := parseOK(t, "commit", "/img/app.tar", "--upper", "/u", "-o", "/out/new.tar",
		"-t", "myapp", "--tag", "registry.example:5000/team/app:v1.2", "-m", "msg",
		"--format", "oci", "--compress", "zstd", "--squash", "--thin-from", "/b/base.tar",
		"--env", "A=1", "--env", "B=", "--label", "k=v", "--entrypoint", `["/run"]`, "--cmd", "serve now",
		"--workdir", "/app", "--user", "1000", "--image", "x:1", "--platform", "linux/arm64", "--cache-dir", "/c")
	require.Equal(t, modeCommit, cfg.mode)
	rc := cfg.repack
	require.Equal(t, "/img/app.tar", rc.source)
	require.Equal(t, "/out/new.tar", rc.output)
	require.Equal(t, "/u", cfg.upper)
	require.Equal(t, "x:1", cfg.ref)
	require.Equal(t, "/c", cfg.cacheDir)
	require.Equal(t, []string{"myapp:latest", "registry.example:5000/team/app:v1.2"}, rc.tags)
	require.Equal(t, repack.OutputOCI, rc.format)
	require.Equal(t, tarindex.CompressionZstd, rc.compression)
	require.True(t, rc.squash)
	require.Equal(t, []string{"/b/base.tar"}, rc.thinFrom)
	require.Equal(t, []string{"A=1", "B="}, rc.edits.Env)
	require.Equal(t, map[string]string{"k": "v"}, rc.edits.Labels)
	require.Equal(t, `["/run"]`, *rc.edits.Entrypoint)
	require.Equal(t, "serve now", *rc.edits.Cmd)
	require.Equal(t, "/app", *rc.edits.WorkingDir)
	require.Equal(t, "1000", *rc.edits.User)
	require.ElementsMatch(t, []string{"--image", "--platform", "--upper"}, rc.explicit)
	require.Contains(t, rc.createdBy, `--env "A=1"`)
	require.Contains(t, rc.createdBy, "--squash")
	require.NotContains(t, rc.createdBy, "/u", "no local paths in the history")

	cfg = parseOK(t, "commit", "/mnt/app", "-o", "-")
	require.Equal(t, "-", cfg.repack.output)
	require.Nil(t, cfg.repack.tags, "the image's own tags by default")
	require.Equal(t, repack.OutputCombined, cfg.repack.format)
	require.Equal(t, tarindex.CompressionNone, cfg.repack.compression)
	require.Nil(t, cfg.repack.edits.Cmd)
	require.Empty(t, cfg.repack.explicit)

	require.Equal(t, modeHelp, parseOK(t, "commit", "--help").mode)
}

func TestParseCommitMistakes(t *testing.T) {
	parseUsage(t, "missing IMAGE or MOUNTPOINT", "commit", "-o", "x.tar")
	parseUsage(t, "missing -o", "commit", "/img/app.tar")
	parseUsage(t, "too many arguments", "commit", "/a.tar", "/b.tar", "-o", "x.tar")
	parseUsage(t, "is the source itself", "commit", "/a.tar", "-o", "/a.tar")
	parseUsage(t, "--format", "commit", "/a.tar", "-o", "x.tar", "--format", "tar")
	parseUsage(t, "--compress", "commit", "/a.tar", "-o", "x.tar", "--compress", "xz")
	parseUsage(t, "--tag", "commit", "/a.tar", "-o", "x.tar", "--tag", "MyApp:1")
	parseUsage(t, "--tag", "commit", "/a.tar", "-o", "x.tar", "--tag", "app:")
	parseUsage(t, "--env", "commit", "/a.tar", "-o", "x.tar", "--env", "NOVALUE")
	parseUsage(t, "--label", "commit", "/a.tar", "-o", "x.tar", "--label", "=v")
	parseUsage(t, "--cmd", "commit", "/a.tar", "-o", "x.tar", "--cmd", `["unclosed"`)
	parseUsage(t, "--workdir", "commit", "/a.tar", "-o", "x.tar", "--workdir", "relative")
	parseUsage(t, "unknown flag", "commit", "/a.tar", "-o", "x.tar", "--layers")
	_, err := parseArgs([]string{"commit", "/a.tar", "-o", "x.tar"}, testEnv("HOME", "/h", "SOURCE_DATE_EPOCH", "yesterday"))
	require.ErrorContains(t, err, "SOURCE_DATE_EPOCH")

	cfg, err := parseArgs([]string{"commit", "/a.tar", "-o", "x.tar"}, testEnv("HOME", "/h", "SOURCE_DATE_EPOCH", "1700000000"))
	require.NoError(t, err)
	require.True(t, cfg.repack.created.Equal(time.Unix(1700000000, 0)))
}

func TestParseExport(t *testing.T) {
	cfg := parseOK(t, "export", "/img/app.tar", "--upper", "/u", "-o", "-")
	require.Equal(t, modeExport, cfg.mode)
	require.Equal(t, "/img/app.tar", cfg.repack.source)
	require.Equal(t, "-", cfg.repack.output)
	require.Equal(t, "/u", cfg.upper)
	parseUsage(t, "unknown flag", "export", "/img/app.tar", "-o", "x.tar", "--squash")
	parseUsage(t, "missing -o", "export", "/img/app.tar")
}

func TestMountStateRoundTrip(t *testing.T) {
	cfg := &config{image: "/img/app.tar", upper: "/up", ref: "app:1", platform: "linux/arm64", bases: []string{"/b.tar"}, cacheDir: "/c"}
	st, err := decodeMountState(encodeMountState(cfg))
	require.NoError(t, err)
	require.Equal(t, &mountState{Image: "/img/app.tar", Upper: "/up", Ref: "app:1", Platform: "linux/arm64", Bases: []string{"/b.tar"}, CacheDir: "/c"}, st)

	for _, bad := range []string{`{"image":"app.tar","upper":"/u"}`, `{"image":"/a.tar"}`, `{"image":"/a.tar","upper":"/u","cache_dir":"c"}`, `not json`} {
		_, err := decodeMountState([]byte(bad))
		require.Error(t, err, bad)
	}
}

// cmdTestImage writes a one-layer docker-archive holding etc/hello.
func cmdTestImage(t *testing.T, dir string) string {
	t.Helper()
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for _, f := range []struct{ name, body string }{{"etc/", ""}, {"etc/hello", "hello\n"}} {
		hdr := &tar.Header{Name: f.name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(f.body)), ModTime: time.Unix(1700000000, 0)}
		if strings.HasSuffix(f.name, "/") {
			hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
		}
		require.NoError(t, tw.WriteHeader(hdr))
		_, err := tw.Write([]byte(f.body))
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	diffID := digest.FromBytes(layer.Bytes())
	cfg, err := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux", "config": map[string]any{"Env": []string{"PATH=/bin"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []digest.Digest{diffID}},
	})
	require.NoError(t, err)
	man, err := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{"cmdtest/app:1"}, "Layers": []string{"layer/layer.tar"}}})
	require.NoError(t, err)
	var out bytes.Buffer
	tw = tar.NewWriter(&out)
	for _, f := range []struct {
		name string
		body []byte
	}{{"layer/layer.tar", layer.Bytes()}, {"config.json", cfg}, {"manifest.json", man}} {
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), ModTime: time.Unix(1700000000, 0)}))
		_, err := tw.Write(f.body)
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	p := filepath.Join(dir, "app.tar")
	require.NoError(t, os.WriteFile(p, out.Bytes(), 0o644))
	return p
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestRunCommitAndExport(t *testing.T) {
	src := t.TempDir()
	img := cmdTestImage(t, src)
	upper := filepath.Join(src, "upper")
	require.NoError(t, os.MkdirAll(filepath.Join(upper, "etc"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(upper, "etc/added"), []byte("added\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(upper, "etc/.wh.hello"), nil, 0o600))
	outDir := t.TempDir()
	out := filepath.Join(outDir, "new.tar")
	cache := t.TempDir()

	var stdout, stderr bytes.Buffer
	code := run([]string{"commit", img, "--upper", upper, "-o", out, "--cache-dir", cache, "--env", "A=b"}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	require.Equal(t, []string{"new.tar"}, dirNames(t, outDir), "only the output: no temporary files")
	id := strings.TrimSpace(stdout.String())
	require.NoError(t, digest.Digest(id).Validate())

	reopened, err := archive.Open(out, archive.OpenOptions{CacheDir: cache})
	require.NoError(t, err)
	defer reopened.Close()
	require.Equal(t, id, reopened.Ref.ConfigDigest.String())
	require.Equal(t, []string{"cmdtest/app:1"}, reopened.Ref.Tags)
	require.Equal(t, []string{"PATH=/bin", "A=b"}, reopened.Config.Config.Env)

	stdout.Reset()
	stderr.Reset()
	exported := filepath.Join(outDir, "rootfs.tar")
	code = run([]string{"export", out, "-o", exported, "--cache-dir", cache}, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	b, err := os.ReadFile(exported)
	require.NoError(t, err)
	var names []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, hdr.Name)
	}
	require.Equal(t, []string{"etc/", "etc/added"}, names)

	// A failure leaves nothing behind.
	stderr.Reset()
	require.NoError(t, os.WriteFile(filepath.Join(upper, "etc/.wh."), nil, 0o600))
	code = run([]string{"commit", img, "--upper", upper, "-o", filepath.Join(outDir, "bad.tar"), "--cache-dir", cache}, &stdout, &stderr)
	require.Equal(t, 1, code)
	require.Contains(t, stderr.String(), "etc/.wh.")
	require.ElementsMatch(t, []string{"new.tar", "rootfs.tar"}, dirNames(t, outDir))
}

// A run killed mid-write leaves its private directory (scratch layers of
// hundreds of MB): the next run into the same place removes it, and leaves
// the directory of a run still going alone.
func TestOutputRemovesAbandonedScratch(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "out.tar")
	dead, err := os.MkdirTemp(dir, ".out.tar.imgmount-")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dead, scratchLock), nil, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dead, "new-layer"), make([]byte, 1<<20), 0o600))
	live, err := os.MkdirTemp(dir, ".out.tar.imgmount-")
	require.NoError(t, err)
	lock, err := lockDir(live)
	require.NoError(t, err)
	defer lock.Close()
	other := filepath.Join(dir, ".unrelated.imgmount-x")
	require.NoError(t, os.Mkdir(other, 0o755))

	r := &repackRun{}
	o, err := r.create(final, io.Discard)
	require.NoError(t, err)
	require.NoDirExists(t, dead)
	require.DirExists(t, live)
	require.DirExists(t, other)
	require.DirExists(t, o.dir)
	o.abort()
	require.NoDirExists(t, o.dir)

	// The lock file appears only locked: a live directory holds exactly
	// it, never a lock file another run could find free.
	names, err := os.ReadDir(live)
	require.NoError(t, err)
	require.Len(t, names, 1)
	require.Equal(t, scratchLock, names[0].Name())
}

// A signal while a run writes cancels its work, which returns through its
// cleanup: the temporary file is removed and never renamed into place,
// and the run says what was written. Work that does not stop (a write
// blocked on a pipe) is abandoned after interruptGrace, its directory
// removed all the same.
func TestRepackRunInterrupted(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "out.tar")
	writing := func(r *repackRun, started chan struct{}, then func(*output) error) func() error {
		return func() error {
			out, err := r.create(final, io.Discard)
			if err != nil {
				return err
			}
			defer out.abort()
			if _, err := out.w.Write([]byte("partial")); err != nil {
				return err
			}
			close(started)
			return then(out)
		}
	}

	r := newRepackRun(io.Discard)
	defer r.end()
	started := make(chan struct{})
	go func() { <-started; r.sigc <- syscall.SIGINT }()
	var finishErr error
	err := r.work(writing(r, started, func(out *output) error {
		<-r.ctx.Done()
		finishErr = out.finish()
		return finishErr
	}))
	require.EqualError(t, err, "interrupted by SIGINT; "+final+" was not written")
	require.Equal(t, exitError, exitStatus(err))
	require.ErrorIs(t, finishErr, context.Canceled, "finish renames nothing once interrupted")
	requireEmpty(t, dir)

	defer func(g time.Duration) { interruptGrace = g }(interruptGrace)
	interruptGrace = 50 * time.Millisecond
	r = newRepackRun(io.Discard)
	defer r.end()
	started, stuck := make(chan struct{}), make(chan struct{})
	defer close(stuck)
	go func() { <-started; r.sigc <- syscall.SIGTERM }()
	err = r.work(writing(r, started, func(*output) error { <-stuck; return nil }))
	require.EqualError(t, err, "interrupted by SIGTERM; "+final+" was not written")
	requireEmpty(t, dir)

	// A signal before the output is created: nothing was, nor will be.
	r = newRepackRun(io.Discard)
	defer r.end()
	r.sigc <- syscall.SIGHUP
	err = r.work(func() error {
		<-r.ctx.Done()
		_, err := r.create(final, io.Discard)
		return err
	})
	require.EqualError(t, err, "interrupted by SIGHUP; nothing was written")
	requireEmpty(t, dir)
}

func requireEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, ents)
}
