package integration

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

// oracleImage reads the manifest and config of the image in the oracle's
// OCI layout (written by skopeo, or extracted by tar).
func oracleImage(t *testing.T, od oracleDirs) (ocispec.Manifest, ocispec.Image) {
	t.Helper()
	man, cfg, err := layoutManifest(od.layout, od.ref)
	require.NoError(t, err)
	require.Len(t, cfg.RootFS.DiffIDs, len(man.Layers))
	return man, cfg
}

// layerTar returns the uncompressed tar of a layer of the oracle's layout,
// checked against its diff_id.
func layerTar(t *testing.T, od oracleDirs, i int) []byte {
	t.Helper()
	man, cfg := oracleImage(t, od)
	d := man.Layers[i].Digest
	blob, err := os.ReadFile(filepath.Join(od.layout, "blobs", d.Algorithm().String(), d.Encoded()))
	require.NoError(t, err)
	data, err := decompressBytes(blob)
	require.NoError(t, err)
	require.Equal(t, cfg.RootFS.DiffIDs[i], sha256Digest(data), "layer %d of the oracle's layout", i)
	return data
}

// layerDirName is the name --layers gives layer i.
func layerDirName(i int, diffID string) string {
	hexPart := diffID[strings.IndexByte(diffID, ':')+1:]
	return fmt.Sprintf("%02d-%s", i, hexPart[:12])
}

// expectedLayer describes what a layer's tar holds, as a tree: the last of
// duplicate entries wins, a hardlink looks like its target as it stood,
// whiteout files are ordinary entries. Parents that the tar does not list
// are in implicit: only their being directories is known. An entry beneath
// a non-directory of the same layer is left out, as GNU tar leaves it.
func expectedLayer(t *testing.T, data []byte) (nodes map[string]*node, implicit map[string]bool) {
	t.Helper()
	nodes = map[string]*node{}
	implicit = map[string]bool{".": true}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		name := path.Clean("/" + hdr.Name)[1:]
		if name == "" {
			name = "."
		}
		if underNonDir(nodes, name) {
			// As GNU tar does ("Cannot open: Not a directory"): an entry
			// beneath a non-directory of the same layer is not extracted,
			// and the non-directory stays. umoci writes such layers: a
			// directory replaced by a file, then whiteouts of its old
			// children beneath the file.
			if hdr.Typeflag == tar.TypeReg {
				_, _ = io.Copy(io.Discard, tr)
			}
			continue
		}
		n := &node{
			Perm:  uint32(hdr.Mode) & 07777,
			UID:   uint32(hdr.Uid),
			GID:   uint32(hdr.Gid),
			Mtime: fmt.Sprintf("%d.%09d", hdr.ModTime.Unix(), hdr.ModTime.Nanosecond()),
		}
		switch hdr.Typeflag {
		case tar.TypeReg, tar.TypeGNUSparse, '\x00':
			n.Type = "reg"
			h := sha256.New()
			sz, err := io.Copy(h, tr)
			require.NoError(t, err)
			n.Size, n.SHA256, n.Nlink = sz, hex.EncodeToString(h.Sum(nil)), 1
		case tar.TypeDir:
			n.Type = "dir"
		case tar.TypeSymlink:
			n.Type, n.Target = "symlink", hdr.Linkname
		case tar.TypeLink:
			target := path.Clean("/" + hdr.Linkname)[1:]
			tn, ok := nodes[target]
			require.True(t, ok, "hardlink %s to %s: target not earlier in the layer", name, target)
			c := *tn
			n = &c
		case tar.TypeChar, tar.TypeBlock:
			n.Type = map[byte]string{tar.TypeChar: "char", tar.TypeBlock: "block"}[hdr.Typeflag]
			n.Rdev = fmt.Sprintf("%d,%d", hdr.Devmajor, hdr.Devminor)
		case tar.TypeFifo:
			n.Type = "fifo"
		default:
			t.Fatalf("layer entry %s: unexpected typeflag %q", name, hdr.Typeflag)
		}
		if hdr.Typeflag != tar.TypeLink {
			var xs []string
			for k, v := range hdr.PAXRecords {
				if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok && x != "security.selinux" {
					xs = append(xs, x+"="+hex.EncodeToString([]byte(v)))
				}
			}
			sort.Strings(xs)
			n.Xattrs = strings.Join(xs, ",")
		}
		nodes[name] = n
		delete(implicit, name)
		for p := path.Dir(name); ; p = path.Dir(p) {
			if _, ok := nodes[p]; !ok {
				nodes[p] = &node{Type: "dir"}
				implicit[p] = true
			}
			if p == "." {
				break
			}
		}
	}
	return nodes, implicit
}

// underNonDir tells whether an ancestor of name is, so far in the layer,
// something other than a directory.
func underNonDir(nodes map[string]*node, name string) bool {
	for p := path.Dir(name); p != "." && p != "/"; p = path.Dir(p) {
		if n, ok := nodes[p]; ok && n.Type != "dir" {
			return true
		}
	}
	return false
}

// TestLayers mounts each image with --layers and compares each layer's
// directory with the layer's own tar (read from the independent OCI
// layout): names NN-<12 hex of diff_id>, whiteout files visible in the
// layer that holds them, every entry's attributes and content.
func TestLayers(t *testing.T) {
	for _, img := range allImages {
		t.Run(img.name, func(t *testing.T) {
			requireFUSE(t)
			od := oracle(t, img)
			_, cfg := oracleImage(t, od)
			mnt := mountImage(t, img.path(), "--layers")

			var want []string
			for i, d := range cfg.RootFS.DiffIDs {
				want = append(want, layerDirName(i, d.String()))
			}
			ents, err := os.ReadDir(mnt)
			require.NoError(t, err)
			var got []string
			for _, e := range ents {
				got = append(got, e.Name())
			}
			require.Equal(t, want, got, "one directory per layer, NN-<12 hex of diff_id>")

			for i, name := range want {
				exp, implicit := expectedLayer(t, layerTar(t, od, i))
				m, err := walkTree(filepath.Join(mnt, name))
				if err != nil {
					t.Errorf("layer %s: errors reading: %v", name, err)
				}
				if diffs := diffLayer(m, exp, implicit, 40); len(diffs) > 0 {
					t.Errorf("layer %s differs from its tar (%d entries in the tar):\n  %s", name, len(exp), strings.Join(diffs, "\n  "))
				}
			}
			switch img.kind {
			case "debian":
				requireRegular(t, filepath.Join(mnt, want[1], "usr/share/.wh.doc"))
				requireRegular(t, filepath.Join(mnt, want[1], "etc/.wh.issue.net"))
				requireRegular(t, filepath.Join(mnt, want[2], "opt/imgmount/.wh.empty"))
				requireRegular(t, filepath.Join(mnt, want[3], "etc/apt/apt.conf.d/.wh..wh..opq"))
				_, err := os.Lstat(filepath.Join(mnt, want[0], "usr/share/doc"))
				require.NoError(t, err, "layer 0 still holds what layer 1 whites out")
			case "tricky":
				for _, p := range []string{"b/.wh.target", "c/.wh.foo", "d/.wh.foo", "e/.wh..wh..opq", "k/.wh.sub"} {
					requireRegular(t, filepath.Join(mnt, want[1], p))
				}
				require.Equal(t, "v1 target\n", readString(t, filepath.Join(mnt, want[0], "a/target")))
				require.Equal(t, "v2 target\n", readString(t, filepath.Join(mnt, want[1], "a/target")))
			}
		})
	}
}

func requireRegular(t *testing.T, p string) {
	t.Helper()
	fi, err := os.Lstat(p)
	require.NoError(t, err, "whiteout file visible in its layer")
	require.True(t, fi.Mode().IsRegular(), "%s: %v", p, fi.Mode())
}

// diffLayer compares a layer directory with its tar; nlink and hardlink
// groups are not part of a single layer's contract.
func diffLayer(m, exp map[string]*node, implicit map[string]bool, max int) []string {
	diffs := diffList{max: max}
	add := diffs.add
	sorted := allPaths(m, exp)
	for _, p := range sorted {
		mn, en := m[p], exp[p]
		switch {
		case mn == nil:
			add(fmt.Sprintf("%s: in the tar (%s), missing from the layer directory", p, en.Type))
		case en == nil:
			add(fmt.Sprintf("%s: in the layer directory (%s), not in the tar", p, mn.Type))
		case implicit[p]:
			if mn.Type != "dir" {
				add(fmt.Sprintf("%s: implicit parent directory shown as %s", p, mn.Type))
			}
		default:
			mf, ef := mn.fields(), en.fields()
			for _, f := range fieldOrder {
				if f == "nlink" || f == "links" {
					continue
				}
				if mf[f] != ef[f] {
					add(fmt.Sprintf("%s: %s: mount %q, tar %q", p, f, mf[f], ef[f]))
				}
			}
		}
	}
	return diffs.lines()
}
