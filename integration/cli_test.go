package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

// TestForeground runs `imgmount -f` in the background, waits for the
// mount, uses it, and stops it with SIGTERM: it must unmount and exit 0.
func TestForeground(t *testing.T) {
	requireFUSE(t)
	mnt := newMountpoint(t)
	t.Cleanup(func() { unmount(t, mnt) })
	cmd := exec.Command(binPath, "-f", "--cache-dir", sharedCache, exampleImage.path(), mnt)
	cmd.Env = binEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-done
		}
	})

	deadline := time.Now().Add(2 * time.Minute)
	for !isMounted(mnt) {
		select {
		case err := <-done:
			t.Fatalf("imgmount -f exited before mounting: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		require.True(t, time.Now().Before(deadline), "not mounted after 2 minutes:\n%s", out.String())
	}
	require.Contains(t, chroot(t, mnt, "/app/hello.sh"), "Hello from the imgmount example image")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-done:
		require.NoError(t, err, "imgmount -f after SIGTERM:\n%s", out.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("imgmount -f still running 30 s after SIGTERM:\n%s", out.String())
	}
	require.False(t, isMounted(mnt), "SIGTERM must unmount")
}

// TestUnmount: `imgmount -u` and `fusermount3 -u` both unmount, and the
// serving process exits either way.
func TestUnmount(t *testing.T) {
	requireFUSE(t)
	t.Run("imgmount -u", func(t *testing.T) {
		mnt := mountImage(t, smallOCI.path())
		require.NotEmpty(t, servers(mnt), "a daemon serves %s", mnt)
		r := run(t, time.Minute, "-u", mnt)
		require.Equal(t, 0, r.code, "%s", r)
		require.False(t, isMounted(mnt), "unmounted when imgmount -u returns")
		waitNoServer(t, mnt, 10*time.Second)
	})
	t.Run("fusermount3 -u", func(t *testing.T) {
		mnt := mountImage(t, smallOCI.path())
		out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.False(t, isMounted(mnt))
		waitNoServer(t, mnt, 10*time.Second)
	})
	t.Run("imgmount -u while busy", func(t *testing.T) {
		// A process with its working directory in the mount keeps it busy:
		// the unmount fails clearly and the mount keeps working.
		mnt := mountImage(t, exampleImage.path())
		sleeper := exec.Command("sleep", "30")
		sleeper.Dir = filepath.Join(mnt, "app")
		require.NoError(t, sleeper.Start())
		r := run(t, time.Minute, "-u", mnt)
		_ = sleeper.Process.Kill()
		_ = sleeper.Wait()
		if r.code == 0 {
			t.Logf("imgmount -u on a busy mount succeeded (a lazy unmount?): %s", r)
			require.False(t, isMounted(mnt))
			return
		}
		requireClearError(t, r, "busy", "in use")
		require.Equal(t, "forty-two\n", readString(t, filepath.Join(mnt, "app/data.txt")))
	})
}

type cacheFile struct {
	ino  uint64
	size int64
	sum  string
}

// cacheFiles lists the regular files under dir with their inode and hash.
func cacheFiles(t *testing.T, dir string) map[string]cacheFile {
	t.Helper()
	out := map[string]cacheFile{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = cacheFile{ino: fi.Sys().(*syscall.Stat_t).Ino, size: fi.Size(), sum: hex.EncodeToString(sum[:])}
		return nil
	})
	require.NoError(t, err)
	return out
}

// corruptCache flips bytes in the small files of a cache directory: in
// content-addressed ones (named by the sha256 of their content) if
// addressed, else in the others. It returns how many it changed.
func corruptCache(t *testing.T, dir string, addressed bool) int {
	t.Helper()
	n := 0
	for rel, f := range cacheFiles(t, dir) {
		if f.size == 0 || f.size > 16<<20 || (filepath.Base(rel) == f.sum) != addressed {
			continue
		}
		p := filepath.Join(dir, rel)
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		for i := len(b) / 3; i < len(b); i += 97 {
			b[i] ^= 0x5a
		}
		require.NoError(t, os.WriteFile(p, b, 0o600))
		n++
	}
	return n
}

// TestCache: the first mount saves indexes in the cache directory; the
// second mount uses them as they are (same files, untouched); a corrupt
// saved index is rebuilt, not trusted; without --cache-dir the cache is
// $XDG_CACHE_HOME/imgmount.
func TestCache(t *testing.T) {
	requireFUSE(t)
	img := debianImages[2] // oci-archive, gzip layers: served in place, only indexes and checkpoints saved
	od := oracle(t, img)
	cache := t.TempDir()
	want := readString(t, filepath.Join(od.rootfs, "etc/os-release"))

	mountOnce := func(flags ...string) {
		mnt := newMountpoint(t)
		r := run(t, 5*time.Minute, append(append([]string{"--cache-dir", cache}, flags...), img.path(), mnt)...)
		require.Equal(t, 0, r.code, "%s", r)
		require.True(t, isMounted(mnt))
		require.Equal(t, want, readString(t, filepath.Join(mnt, "etc/os-release")))
		require.Equal(t, "hello from layer 1\n", readString(t, filepath.Join(mnt, "opt/imgmount/hello-link.txt")))
		unmount(t, mnt)
		waitNoServer(t, mnt, 10*time.Second)
	}

	mountOnce()
	first := cacheFiles(t, cache)
	require.NotEmpty(t, first, "the first mount saves its index in --cache-dir")
	t.Logf("cache after the first mount: %d files", len(first))
	// Nothing decompressed is written (issue 11): a few percent of the
	// uncompressed layers at most, none of it under blobs/.
	var saved int64
	for rel, f := range first {
		require.False(t, strings.HasPrefix(rel, "blobs/") && f.size > 0, "decompressed copy %s in the cache", rel)
		saved += f.size
	}
	uncompressed := fileSize(t, debianImages[0].path())
	require.Less(t, saved, uncompressed/20, "cache bytes against the uncompressed image's %d", uncompressed)
	t.Logf("cache after the first mount: %d bytes, %.2f%% of the uncompressed image", saved, 100*float64(saved)/float64(uncompressed))

	mountOnce()
	second := cacheFiles(t, cache)
	require.Equal(t, first, second, "the second mount reuses the saved files as they are (same inode, same content)")

	// Corrupt every saved index: each must be rebuilt, never trusted.
	// Decompressed layers are content-addressed (named by the sha256 of
	// their content, the diff_id): they are left for the next subtest.
	corrupted := corruptCache(t, cache, false)
	require.NotZero(t, corrupted, "saved indexes in %v", first)
	mnt := mountImage(t, img.path(), "--cache-dir", cache)
	compareWithOracle(t, mnt, od.rootfs, false)
	unmount(t, mnt)

	t.Run("corrupt decompressed layer", func(t *testing.T) {
		// -o materialize keeps decompressed copies, content-addressed.
		// One that no longer matches its name must not be served: the
		// mount is either right (decompressed again) or refused with an
		// error that points at the cache.
		mountOnce("-o", "materialize")
		require.NotZero(t, corruptCache(t, cache, true))
		mnt := newMountpoint(t)
		t.Cleanup(func() { unmount(t, mnt) })
		r := run(t, 5*time.Minute, "--cache-dir", cache, "-o", "materialize", img.path(), mnt)
		if r.code == 0 {
			compareWithOracle(t, mnt, od.rootfs, false)
			return
		}
		requireClearError(t, r, cache)
		requireNoMount(t, mnt)
	})

	t.Run("XDG_CACHE_HOME", func(t *testing.T) {
		mnt := newMountpoint(t)
		t.Cleanup(func() { unmount(t, mnt) })
		r := run(t, 5*time.Minute, smallOCI.path(), mnt)
		require.Equal(t, 0, r.code, "%s", r)
		require.NotEmpty(t, cacheFiles(t, filepath.Join(xdgCache, "imgmount")), "default cache is $XDG_CACHE_HOME/imgmount")
	})
}

// TestMultiImage: a tarball with two images (as Docker 25 saves them:
// both "latest", told apart by their names) needs --image, by name or
// digest.
func TestMultiImage(t *testing.T) {
	requireFUSE(t)
	p := filepath.Join(dataDir, "multi-image.tar")

	t.Run("no --image", func(t *testing.T) {
		mnt := newMountpoint(t)
		t.Cleanup(func() { unmount(t, mnt) })
		r := run(t, time.Minute, "--cache-dir", sharedCache, p, mnt)
		requireClearError(t, r, "imgmount-test/small")
		require.Contains(t, r.stderr, "imgmount-test/tricky", "the error lists the images to choose from")
		requireNoMount(t, mnt)
	})
	small := oracle(t, smallOCI)
	for _, ref := range []string{"imgmount-test/small:latest", "imgmount-test/small"} {
		t.Run("--image "+ref, func(t *testing.T) {
			mnt := mountImage(t, p, "--image", ref)
			compareWithOracle(t, mnt, small.rootfs, false)
		})
	}
	t.Run("--image imgmount-test/tricky:latest", func(t *testing.T) {
		mnt := mountImage(t, p, "--image", "imgmount-test/tricky:latest")
		checkUnionFacts(t, mnt)
	})

	var idx ocispec.Index
	require.NoError(t, json.Unmarshal([]byte(readString(t, filepath.Join(dataDir, "multi-image", "oci", "index.json"))), &idx))
	var smallMan ocispec.Manifest
	require.NoError(t, readLayoutJSON(filepath.Join(dataDir, "multi-image", "oci"), idx.Manifests[1].Digest, &smallMan))
	for name, ref := range map[string]string{
		"manifest digest":         idx.Manifests[1].Digest.String(),
		"config digest":           smallMan.Config.Digest.String(),
		"config digest, 12 chars": smallMan.Config.Digest.Encoded()[:12],
	} {
		t.Run("--image by "+name, func(t *testing.T) {
			mnt := mountImage(t, p, "--image", ref)
			require.Equal(t, "2\n", readString(t, filepath.Join(mnt, "data/two")))
		})
	}
	t.Run("--image nosuch:tag", func(t *testing.T) {
		mnt := newMountpoint(t)
		t.Cleanup(func() { unmount(t, mnt) })
		r := run(t, time.Minute, "--cache-dir", sharedCache, "--image", "nosuch:tag", p, mnt)
		requireClearError(t, r, "nosuch")
		requireNoMount(t, mnt)
	})
	t.Run("inspect", func(t *testing.T) {
		r := run(t, time.Minute, "inspect", "--json", "--image", "imgmount-test/small:latest", p)
		require.Equal(t, 0, r.code, "%s", r)
		var got inspectJSON
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &got))
		require.Len(t, got.Images, 2)
		require.Equal(t, smallMan.Config.Digest.String(), got.Image.ConfigDigest)
		require.Equal(t, smallConfig.Cmd, got.Config.Cmd)
	})
}

// TestMultiPlatform: a nested index with the host's platform present,
// another platform's blobs absent, a third platform's manifest absent.
func TestMultiPlatform(t *testing.T) {
	requireFUSE(t)
	p := filepath.Join(dataDir, "multi-platform.tar")
	host := "linux/" + runtime.GOARCH
	for _, args := range [][]string{nil, {"--platform", host}} {
		t.Run(fmt.Sprintf("platform %q", strings.Join(args, " ")), func(t *testing.T) {
			mnt := mountImage(t, p, args...)
			require.Equal(t, "2\n", readString(t, filepath.Join(mnt, "data/two")))
		})
	}
	for platform, phrases := range map[string][]string{
		"linux/" + otherArch(): {"missing", "absent", "not in", "not present", "no such"},
		"linux/arm/v7":         {"missing", "absent", "not in", "not present", "no such"},
		"linux/s390x":          {"platform", "s390x"},
	} {
		t.Run("platform "+platform, func(t *testing.T) {
			mnt := newMountpoint(t)
			t.Cleanup(func() { unmount(t, mnt) })
			r := run(t, time.Minute, "--cache-dir", sharedCache, "--platform", platform, p, mnt)
			requireClearError(t, r, phrases...)
			requireNoMount(t, mnt)
		})
	}
	t.Run("inspect", func(t *testing.T) {
		r := run(t, time.Minute, "inspect", "--json", p)
		require.Equal(t, 0, r.code, "%s", r)
		var got inspectJSON
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &got))
		require.Equal(t, runtime.GOARCH, got.Config.Architecture)
		require.Equal(t, host, got.Image.Platform)
	})
}

// TestMountOptions: -o passes FUSE options; suid and dev lift the safe
// defaults; rw is refused without an upper directory.
func TestMountOptions(t *testing.T) {
	requireFUSE(t)
	img := smallOCI.path()
	t.Run("-o allow_other,fsname=", func(t *testing.T) {
		mnt := mountImage(t, img, "-o", "allow_other,fsname=imgmount-test-fs")
		mi, ok := mountAt(mnt)
		require.True(t, ok)
		require.Contains(t, strings.Split(mi.super, ","), "allow_other", "super options %s", mi.super)
		require.Equal(t, "imgmount-test-fs", mi.source)
	})
	t.Run("-o suid,dev", func(t *testing.T) {
		mnt := mountImage(t, img, "-o", "suid,dev")
		mi, ok := mountAt(mnt)
		require.True(t, ok)
		opts := strings.Split(mi.options, ",")
		require.NotContains(t, opts, "nosuid")
		require.NotContains(t, opts, "nodev")
		require.Contains(t, opts, "ro")
	})
	t.Run("-o rw", func(t *testing.T) {
		mnt := newMountpoint(t)
		t.Cleanup(func() { unmount(t, mnt) })
		r := run(t, time.Minute, "--cache-dir", sharedCache, "-o", "rw", img, mnt)
		requireClearError(t, r, "--upper", "rw")
		requireNoMount(t, mnt)
	})
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	require.NoError(t, err)
	return fi.Size()
}
