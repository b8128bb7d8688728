package integration

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMount mounts each image, in each input format, with the real binary
// and compares every path and attribute with umoci's unpack of the same
// tarball; then runs the image's own programs under chroot.
func TestMount(t *testing.T) {
	for _, img := range allImages {
		t.Run(img.name, func(t *testing.T) {
			requireFUSE(t)
			od := oracle(t, img)
			mnt := mountImage(t, img.path())

			t.Run("options", func(t *testing.T) {
				mi, ok := mountAt(mnt)
				require.True(t, ok)
				require.Equal(t, "fuse.imgmount", mi.fstype)
				require.Contains(t, strings.Split(mi.super, ","), "default_permissions", "super options %s", mi.super)
				for _, o := range []string{"ro", "nosuid", "nodev"} {
					require.Contains(t, strings.Split(mi.options, ","), o, "safe default mount options: %s", mi.options)
				}
			})
			t.Run("tree", func(t *testing.T) {
				compareWithOracle(t, mnt, od.rootfs, img.kind == "sparse")
			})
			t.Run("contents", func(t *testing.T) {
				checkKind(t, img, mnt)
			})
			t.Run("read-only", func(t *testing.T) {
				err := os.WriteFile(filepath.Join(mnt, "imgmount-write-test"), []byte("x"), 0o644)
				require.Error(t, err, "the mount is read-only for now")
				_, err = os.Lstat(filepath.Join(od.rootfs, "imgmount-write-test"))
				require.True(t, errors.Is(err, os.ErrNotExist))
			})
		})
	}
}

// compareWithOracle walks both trees and requires them identical.
// GNU tar's extraction root is a directory the test made: its attributes
// (skipRoot) are not the image's.
func compareWithOracle(t *testing.T, mnt, rootfs string, skipRoot bool) {
	t.Helper()
	o, err := walkTree(rootfs)
	require.NoError(t, err, "reading umoci's unpack")
	m, merr := walkTree(mnt)
	if merr != nil {
		t.Errorf("errors reading the mount:\n%v", merr)
	}
	if skipRoot {
		delete(o, ".")
		delete(m, ".")
	}
	diffs := diffTrees(m, o, 60)
	if len(diffs) > 0 {
		t.Fatalf("the mount differs from umoci unpack (%d paths in umoci's tree, %d in the mount):\n  %s",
			len(o), len(m), strings.Join(diffs, "\n  "))
	}
	t.Logf("%d paths identical in type, mode, owner, size, content, target, mtime, rdev, xattrs and hardlinks", len(o))
}

// checkKind runs the checks that depend on what the image is.
func checkKind(t *testing.T, img testImage, mnt string) {
	switch img.kind {
	case "debian":
		out := chroot(t, mnt, "/bin/sh", "-c", "echo ok; ls /")
		require.True(t, strings.HasPrefix(out, "ok\n"), out)
		for _, d := range []string{"bin", "etc", "usr", "var"} {
			require.Contains(t, strings.Fields(out), d)
		}
		require.Contains(t, chroot(t, mnt, "/usr/bin/dpkg", "--version"), "Debian")
		require.Contains(t, chroot(t, mnt, "cat", "/etc/os-release"), "bookworm")
		pkgs := strings.Fields(chroot(t, mnt, "dpkg-query", "-W", "-f=${Package}\n"))
		require.Greater(t, len(pkgs), 50, "dpkg's database lists the installed packages")
		require.Contains(t, pkgs, "dpkg")
		require.Equal(t, "hello from /opt/imgmount/bin/hello\n", chroot(t, mnt, "/opt/imgmount/bin/hello"))
		// (not perl -e: it opens /dev/null, a device node, which a nodev mount refuses)
		require.Contains(t, chroot(t, mnt, "perl", "-v"), "This is perl 5")
		chroot(t, mnt, "/usr/local/bin/suid-true")
		require.Equal(t, "hello from layer 1\nhello from layer 2\n",
			chroot(t, mnt, "/bin/sh", "-c", "cd /opt/imgmount && cat hello-link.txt hello.txt"))
		_, err := os.Lstat(filepath.Join(mnt, "usr/share/doc"))
		require.True(t, errors.Is(err, os.ErrNotExist), "usr/share/doc is whited out: %v", err)
		ents, err := os.ReadDir(filepath.Join(mnt, "etc/apt/apt.conf.d"))
		require.NoError(t, err)
		require.Len(t, ents, 1, "opaque directory")
	case "tricky":
		checkUnionFacts(t, mnt)
	case "sparse":
		for _, k := range sparseKinds {
			checkSparse(t, filepath.Join(mnt, "sparse", k+"-holes"))
			checkSparse(t, filepath.Join(mnt, "sparse", k+"-allhole"))
		}
	case "small":
		require.Equal(t, "2\n", readString(t, filepath.Join(mnt, "data/two")))
		_, err := os.Lstat(filepath.Join(mnt, "data/one"))
		require.True(t, errors.Is(err, os.ErrNotExist))
	case "example":
		out := chroot(t, mnt, "/app/hello.sh")
		require.Contains(t, out, "Hello from the imgmount example image")
		require.Contains(t, out, "forty-two")
		require.Contains(t, chroot(t, mnt, "/bin/sh", "-c", "echo ok; ls /"), "app")
		_, err := os.Lstat(filepath.Join(mnt, "usr/share/imgmount/README"))
		require.True(t, errors.Is(err, os.ErrNotExist))
	}
}
