package integration

// The oracle: what `umoci unpack` (as root, so owners, devices and
// capabilities are real) makes of the same tarball, read by skopeo into an
// OCI layout first. Kept in dataDir/oracle/<image>/ and reused while the
// tarball is the same file (device, inode, size, mtime).

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

const oracleVersion = "1"

type oracleDirs struct {
	rootfs string // umoci's unpacked rootfs
	layout string // the OCI layout skopeo made of the tarball
	ref    string // the image's tag in layout
}

var oracleMu sync.Mutex

func fileKey(p string) (string, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return "", err
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("v%s %d %d %d %d", oracleVersion, st.Dev, st.Ino, fi.Size(), fi.ModTime().UnixNano()), nil
}

// oracle unpacks img with skopeo + umoci, or returns the cached unpack.
func oracle(t *testing.T, img testImage) oracleDirs {
	t.Helper()
	oracleMu.Lock()
	defer oracleMu.Unlock()
	dir := filepath.Join(dataDir, "oracle", img.name)
	od := oracleDirs{rootfs: filepath.Join(dir, "bundle", "rootfs"), layout: filepath.Join(dir, "oci"), ref: "img"}
	if img.kind == "sparse" {
		od.ref = img.ref
	}
	key, err := fileKey(img.path())
	require.NoError(t, err)
	if b, err := os.ReadFile(filepath.Join(dir, "key")); err == nil && string(b) == key {
		return od
	}
	require.NoError(t, os.RemoveAll(dir))
	tmp := dir + ".tmp"
	require.NoError(t, os.RemoveAll(tmp))
	require.NoError(t, os.MkdirAll(tmp, 0o755))

	if img.kind == "sparse" {
		gnuTarOracle(t, img, tmp)
	} else {
		umociOracle(t, img, tmp)
	}
	_ = os.Remove(filepath.Join(tmp, "input.tar"))
	require.NoError(t, os.WriteFile(filepath.Join(tmp, "key"), []byte(key), 0o644))
	require.NoError(t, os.Rename(tmp, dir))
	return od
}

// umociOracle: skopeo reads the tarball into an OCI layout, umoci unpacks it.
func umociOracle(t *testing.T, img testImage, tmp string) {
	src := img.path()
	if img.gz {
		// skopeo 1.9 reads a docker-archive only uncompressed.
		src = filepath.Join(tmp, "input.tar")
		sh(t, "gunzip -c "+shellQuote(img.path())+" > "+shellQuote(src))
	}
	ref := img.transport + ":" + src
	if img.ref != "" {
		ref += ":" + img.ref
	}
	args := []string{"copy", "-q"}
	if img.zstd {
		// umoci 0.4.7 reads no zstd layers: skopeo recompresses them to
		// gzip (the uncompressed tars, and so the diff_ids, stay the same).
		args = append(args, "--dest-compress", "--dest-compress-format", "gzip")
	}
	args = append(args, ref, "oci:"+filepath.Join(tmp, "oci")+":img")
	cmdOK(t, "skopeo", args...)
	cmdOK(t, "umoci", "unpack", "--image", filepath.Join(tmp, "oci")+":img", filepath.Join(tmp, "bundle"))
}

// gnuTarOracle extracts each layer of an oci-archive with GNU tar, in
// order, for images umoci cannot unpack (old GNU sparse members) and that
// have no whiteouts. Blobs are decompressed by the gzip and zstd programs.
func gnuTarOracle(t *testing.T, img testImage, tmp string) {
	layoutDir := filepath.Join(tmp, "oci")
	rootfs := filepath.Join(tmp, "bundle", "rootfs")
	require.NoError(t, os.MkdirAll(layoutDir, 0o755))
	require.NoError(t, os.MkdirAll(rootfs, 0o755))
	cmdOK(t, "tar", "-xf", img.path(), "-C", layoutDir)
	man, _, err := layoutManifest(layoutDir, img.ref)
	require.NoError(t, err)
	for _, l := range man.Layers {
		dec := "cat"
		switch {
		case strings.HasSuffix(l.MediaType, "+gzip"):
			dec = "gzip -dc"
		case strings.HasSuffix(l.MediaType, "+zstd"):
			dec = "zstd -dcq"
		}
		blob := filepath.Join(layoutDir, "blobs", l.Digest.Algorithm().String(), l.Digest.Encoded())
		sh(t, dec+" "+shellQuote(blob)+" | tar -xpf - --numeric-owner --xattrs --xattrs-include='*' -C "+shellQuote(rootfs))
	}
}

func cmdOK(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", name, strings.Join(args, " "), out)
	return string(out)
}

func sh(t *testing.T, script string) string {
	t.Helper()
	return cmdOK(t, "bash", "-c", "set -euo pipefail; "+script)
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func readString(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

// unionFacts are the union-semantics cases of DESIGN.md as they must look
// in the tricky image: path → content ("" = must not exist, "<dir>" = a
// directory).
var unionFacts = []struct{ path, want, why string }{
	{"a/target", "v2 target\n", "replaced by layer 1"},
	{"a/link", "v1 target\n", "hardlink keeps the target as it stood in its layer"},
	{"a/link2", "v1 target\n", "hardlink keeps the target as it stood in its layer"},
	{"b/target", "", "whited out by layer 1"},
	{"b/link", "keep me\n", "hardlink survives a whiteout of its target"},
	{"c/foo", "new c\n", ".wh.foo before foo in one layer: foo stays"},
	{"d/foo", "new d\n", "foo before .wh.foo in one layer: the whiteout hides only lower layers"},
	{"e/new1", "new1\n", "opaque marker after new siblings keeps them"},
	{"e/old1", "", "opaque marker hides lower children"},
	{"e/sub", "", "opaque marker hides lower subdirectories"},
	{"f/x", "file x again\n", "file -> dir -> file"},
	{"f/x/inner", "", "file -> dir -> file"},
	{"g/y", "now a file\n", "dir replaced by a file"},
	{"g/y/child", "", "dir replaced by a file hides its subtree"},
	{"h/dup", "third\n", "duplicates: last wins, later layers win"},
	{"h/dup2", "", "duplicate changing type: a symlink (checked by lstat below)"},
	{"k/sub/deep", "", "subtree whited out"},
	{"k/sub/new", "new after whiteout\n", "re-created after a whiteout"},
	{"w/keep", "keep\n", "sibling of a whiteout"},
	{"w/gone", "", "whited out"},
	{"o/lower1", "", "opaque"},
	{"o/new", "new\n", "opaque, new child"},
	{"newdir/file", "file\n", "opaque marker on a new directory"},
	{"m/rel/in", "dir over symlink\n", "directory replaces a symlink"},
	{"dev/fifo", "", "whited-out fifo"},
	{"l1/hl", "orig\n", "hardlink within an upper layer"},
	{"sym/real/via-rel", "via rel\n", "an entry under a relative symlink lands in its target"},
	{"sym/real/via-abs", "via abs\n", "an absolute symlink is followed within the root"},
	{"sym/real/via-chain", "via chain\n", "a chain of symlinks is followed"},
	{"sym/real/gone", "", "a whiteout under a symlink removes from its target"},
	{"sym/real/r", "r\n", "sibling of a whiteout under a symlink"},
	{"sparse/pax-holes", "<sparse>", "PAX 1.0 sparse"},
}

// checkUnionFacts checks unionFacts under root (umoci's unpack or the mount).
func checkUnionFacts(t *testing.T, root string) {
	t.Helper()
	for _, f := range unionFacts {
		p := filepath.Join(root, f.path)
		switch f.want {
		case "":
			if f.path == "h/dup2" {
				fi, err := os.Lstat(p)
				if err == nil && fi.Mode()&os.ModeSymlink == 0 {
					t.Errorf("%s: want a symlink (%s), got %v", f.path, f.why, fi.Mode())
				}
				continue
			}
			_, err := os.Lstat(p)
			if !os.IsNotExist(err) && !errors.Is(err, syscall.ENOTDIR) {
				t.Errorf("%s: want absent (%s), lstat says %v", f.path, f.why, err)
			}
		case "<sparse>":
			checkSparse(t, p)
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				t.Errorf("%s: %v (%s)", f.path, err, f.why)
			} else if string(b) != f.want {
				t.Errorf("%s: got %q, want %q (%s)", f.path, b, f.want, f.why)
			}
		}
	}
}

// sparseKinds are the sparse formats in sparse-oci.tar, one layer each.
var sparseKinds = []string{"gnu", "pax00", "pax01", "pax10"}

// checkSparse checks the content sparseLayer gave p.
func checkSparse(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("%s: %v", p, err)
		return
	}
	if strings.HasSuffix(p, "-allhole") {
		if len(b) != 1<<20 || strings.Trim(string(b), "\x00") != "" {
			t.Errorf("%s: want 1 MiB of zeros, got %d bytes", p, len(b))
		}
		return
	}
	if len(b) != 8<<20 || string(b[:5]) != "start" || string(b[4<<20:4<<20+6]) != "middle" || string(b[len(b)-3:]) != "end" ||
		strings.Trim(string(b[5:4<<20]), "\x00") != "" || strings.Trim(string(b[4<<20+6:len(b)-3]), "\x00") != "" {
		t.Errorf("%s: sparse content wrong: len %d", p, len(b))
	}
}

// TestOracle checks that umoci, the oracle, does what DESIGN.md says it
// does on the union-semantics cases. It needs no imgmount binary.
func TestOracle(t *testing.T) {
	requireTools(t)
	for _, img := range []testImage{trickyOCI, trickyDocker} {
		t.Run(img.name, func(t *testing.T) {
			od := oracle(t, img)
			checkUnionFacts(t, od.rootfs)
		})
	}
	t.Run(sparseOCI.name, func(t *testing.T) {
		od := oracle(t, sparseOCI)
		for _, k := range sparseKinds {
			checkSparse(t, filepath.Join(od.rootfs, "sparse", k+"-holes"))
			checkSparse(t, filepath.Join(od.rootfs, "sparse", k+"-allhole"))
		}
	})
	t.Run("debian", func(t *testing.T) {
		od := oracle(t, debianImages[2])
		require.Contains(t, readString(t, filepath.Join(od.rootfs, "etc/os-release")), "bookworm")
		require.Equal(t, "hello from layer 1\n", readString(t, filepath.Join(od.rootfs, "opt/imgmount/hello-link.txt")))
		require.Equal(t, "hello from layer 2\n", readString(t, filepath.Join(od.rootfs, "opt/imgmount/hello.txt")))
		ents, err := os.ReadDir(filepath.Join(od.rootfs, "etc/apt/apt.conf.d"))
		require.NoError(t, err)
		require.Len(t, ents, 1, "opaque /etc/apt/apt.conf.d holds only layer 3's file")
		_, err = os.Lstat(filepath.Join(od.rootfs, "usr/share/doc"))
		require.True(t, os.IsNotExist(err), "usr/share/doc is whited out")
	})
}
