package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// requireClearError requires a failed run whose stderr is a short, plain
// message containing one of phrases (case-insensitively).
func requireClearError(t *testing.T, r result, phrases ...string) {
	t.Helper()
	require.NotEqual(t, 0, r.code, "must fail: %s", r)
	require.NoError(t, ignoreExit(r.err), "%s", r)
	msg := strings.TrimSpace(r.stderr)
	require.NotEmpty(t, msg, "an error message on stderr: %s", r)
	require.NotContains(t, msg, "goroutine ", "a message, not a panic: %s", r)
	require.NotContains(t, msg, "panic:", "a message, not a panic: %s", r)
	require.Less(t, len(msg), 4000, "a short message: %s", r)
	if len(phrases) == 0 {
		return
	}
	low := strings.ToLower(msg)
	for _, p := range phrases {
		if strings.Contains(low, strings.ToLower(p)) {
			return
		}
	}
	t.Fatalf("the error should say one of %q:\n%s", phrases, msg)
}

// ignoreExit drops the *exec.ExitError a non-zero exit gives, keeping
// real failures (not started, timed out).
func ignoreExit(err error) error {
	if err == nil || exitCode(err) > 0 {
		return nil
	}
	return err
}

// requireNoMount requires that nothing is mounted at mnt and no imgmount
// process serves it.
func requireNoMount(t *testing.T, mnt string) {
	t.Helper()
	require.False(t, isMounted(mnt), "nothing may stay mounted at %s after a failure", mnt)
	waitNoServer(t, mnt, 5*time.Second)
}

// TestBadInputs: every bad tarball gets a clear error, a non-zero exit
// and no mount, from both mount and inspect.
func TestBadInputs(t *testing.T) {
	for _, b := range badInputs {
		t.Run(b.name, func(t *testing.T) {
			requireFUSE(t)
			p := filepath.Join(dataDir, "bad", b.name)
			mnt := newMountpoint(t)
			t.Cleanup(func() { unmount(t, mnt) })
			r := run(t, 2*time.Minute, "--cache-dir", t.TempDir(), p, mnt)
			requireClearError(t, r, b.phrases...)
			requireNoMount(t, mnt)

			if b.name == "thin.tar" {
				// inspect describes a thin tarball, its missing layer
				// marked absent (issue 12); --files needs every layer.
				r = run(t, 2*time.Minute, "inspect", p)
				require.Equal(t, 0, r.code, "%s", r)
				require.Regexp(t, `(?m)^  1  `+thinMissing.Encoded()[:12]+`  absent `, r.stdout)
				r = run(t, 2*time.Minute, "inspect", "--files", p)
				requireClearError(t, r, b.phrases...)
				return
			}
			r = run(t, 2*time.Minute, "inspect", p)
			requireClearError(t, r, b.phrases...)
		})
	}
}

// TestBadMountpoints: a missing mountpoint, a file as mountpoint, a
// mountpoint already mounted, a missing image.
func TestBadMountpoints(t *testing.T) {
	requireFUSE(t)
	img := smallOCI.path()

	t.Run("missing mountpoint", func(t *testing.T) {
		mnt := filepath.Join(runDir, "no-such-dir")
		r := run(t, time.Minute, "--cache-dir", sharedCache, img, mnt)
		requireClearError(t, r, mnt, "no such", "not exist")
		requireNoMount(t, mnt)
	})
	t.Run("mountpoint is a file", func(t *testing.T) {
		f := filepath.Join(newMountpoint(t), "file")
		require.NoError(t, os.WriteFile(f, []byte("x"), 0o644))
		r := run(t, time.Minute, "--cache-dir", sharedCache, img, f)
		requireClearError(t, r, f, "not a directory")
		requireNoMount(t, f)
	})
	t.Run("already mounted", func(t *testing.T) {
		mnt := mountImage(t, img)
		r := run(t, time.Minute, "--cache-dir", sharedCache, trickyOCI.path(), mnt)
		requireClearError(t, r, "already", "mounted", "busy")
		// The first mount is untouched and still serves the first image.
		require.Equal(t, "2\n", readString(t, filepath.Join(mnt, "data/two")))
		ms, _ := readMountinfo()
		n := 0
		for _, m := range ms {
			if m.mountpoint == mnt {
				n++
			}
		}
		require.Equal(t, 1, n, "one mount at %s", mnt)
	})
	t.Run("missing image", func(t *testing.T) {
		mnt := newMountpoint(t)
		p := filepath.Join(runDir, "no-such-image.tar")
		r := run(t, time.Minute, "--cache-dir", sharedCache, p, mnt)
		requireClearError(t, r, p, "no such file")
		requireNoMount(t, mnt)
	})
	t.Run("unmount what is not mounted", func(t *testing.T) {
		mnt := newMountpoint(t)
		r := run(t, time.Minute, "-u", mnt)
		requireClearError(t, r, "not mounted", "not a mount", mnt)
	})
}
