package integration

// imgmount diff and imgmount inspect --files against an independent
// oracle: skopeo + umoci unpack each image (or a layout cut down to the
// first layers of one), walkTree describes both root filesystems, and the
// paths that differ between them must be the paths diff prints, with the
// same letter and the same list of what changed.

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

// unpackWithUmoci copies src (a skopeo reference) into an OCI layout and
// unpacks it with umoci, as root: owners, devices and xattrs are real.
func unpackWithUmoci(t *testing.T, src string) string {
	t.Helper()
	dir := t.TempDir()
	cmdOK(t, "skopeo", "copy", "-q", src, "oci:"+filepath.Join(dir, "oci")+":img")
	cmdOK(t, "umoci", "unpack", "--image", filepath.Join(dir, "oci")+":img", filepath.Join(dir, "bundle"))
	return filepath.Join(dir, "bundle", "rootfs")
}

// layoutPrefix writes an OCI layout holding the image tagged ref of
// layoutDir cut down to its first n layers (blobs hardlinked), tagged
// "img", and unpacks it with umoci: the oracle of the union of those
// layers.
func layoutPrefix(t *testing.T, layoutDir, ref string, n int) string {
	t.Helper()
	man, cfg, err := layoutManifest(layoutDir, ref)
	require.NoError(t, err)
	require.LessOrEqual(t, n, len(man.Layers))
	dir := t.TempDir()
	oci := filepath.Join(dir, "oci")
	blobs := filepath.Join(oci, "blobs", "sha256")
	require.NoError(t, os.MkdirAll(blobs, 0o755))
	for _, l := range man.Layers[:n] {
		src := filepath.Join(layoutDir, "blobs", l.Digest.Algorithm().String(), l.Digest.Encoded())
		if err := os.Link(src, filepath.Join(blobs, l.Digest.Encoded())); err != nil {
			cmdOK(t, "cp", src, filepath.Join(blobs, l.Digest.Encoded()))
		}
	}
	put := func(v any) ocispec.Descriptor {
		b, err := json.Marshal(v)
		require.NoError(t, err)
		d := digest.FromBytes(b)
		require.NoError(t, os.WriteFile(filepath.Join(blobs, d.Encoded()), b, 0o644))
		return ocispec.Descriptor{Digest: d, Size: int64(len(b))}
	}
	cfg.RootFS.DiffIDs = cfg.RootFS.DiffIDs[:n]
	cfg.History = nil
	cd := put(cfg)
	cd.MediaType = ocispec.MediaTypeImageConfig
	man.Config = cd
	man.Layers = man.Layers[:n]
	md := put(man)
	md.MediaType = ocispec.MediaTypeImageManifest
	md.Annotations = map[string]string{ocispec.AnnotationRefName: "img"}
	idx := ocispec.Index{Manifests: []ocispec.Descriptor{md}}
	idx.SchemaVersion = 2
	b, err := json.Marshal(idx)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(oci, "index.json"), b, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(oci, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644))
	cmdOK(t, "umoci", "unpack", "--image", oci+":img", filepath.Join(dir, "bundle"))
	return filepath.Join(dir, "bundle", "rootfs")
}

// oracleDiff compares two unpacked trees as imgmount diff must: path ->
// "A", "D", or "M what,what" (type, content, mode, owner, target, device,
// xattrs, in that order). Modification times and hardlinks are left out;
// a symlink's mode is not compared.
func oracleDiff(t *testing.T, rootA, rootB string) map[string]string {
	t.Helper()
	a, err := walkTree(rootA)
	require.NoError(t, err)
	b, err := walkTree(rootB)
	require.NoError(t, err)
	out := map[string]string{}
	for _, p := range allPaths(a, b) {
		na, nb := a[p], b[p]
		switch {
		case nb == nil:
			out[p] = "D"
		case na == nil:
			out[p] = "A"
		default:
			var what []string
			if na.Type != nb.Type {
				what = append(what, "type")
			}
			if na.Type == "reg" && nb.Type == "reg" && (na.Size != nb.Size || na.SHA256 != nb.SHA256) {
				what = append(what, "content")
			}
			if na.Perm != nb.Perm && na.Type != "symlink" && nb.Type != "symlink" {
				what = append(what, "mode")
			}
			if na.UID != nb.UID || na.GID != nb.GID {
				what = append(what, "owner")
			}
			if na.Type == "symlink" && nb.Type == "symlink" && na.Target != nb.Target {
				what = append(what, "target")
			}
			if na.Type == nb.Type && (na.Type == "char" || na.Type == "block") && na.Rdev != nb.Rdev {
				what = append(what, "device")
			}
			if na.Xattrs != nb.Xattrs {
				what = append(what, "xattrs")
			}
			if len(what) > 0 {
				out[p] = "M " + strings.Join(what, ",")
			}
		}
	}
	return out
}

// treePath turns a path as imgmount prints it ("/etc/x", "/") into
// walkTree's ("etc/x", ".").
func treePath(p string) string {
	if p == "/" {
		return "."
	}
	return strings.TrimPrefix(p, "/")
}

// parseDiffText reads diff's lines into oracleDiff's form, checking that
// they come sorted by path.
func parseDiffText(t *testing.T, out string) map[string]string {
	t.Helper()
	got := map[string]string{}
	prev := ""
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		kind, rest, ok := strings.Cut(line, " ")
		require.True(t, ok, "line %q", line)
		p, what := rest, ""
		if kind == "M" {
			i := strings.LastIndex(rest, " (")
			require.True(t, i > 0 && strings.HasSuffix(rest, ")"), "line %q", line)
			p = rest[:i]
			var words []string
			for _, part := range strings.Split(rest[i+2:len(rest)-1], ", ") {
				words = append(words, strings.Fields(part)[0])
			}
			what = " " + strings.Join(words, ",")
		} else {
			require.Contains(t, []string{"A", "D"}, kind, "line %q", line)
		}
		require.True(t, prev == "" || prev < p, "not sorted: %q then %q", prev, p)
		prev = p
		got[treePath(p)] = kind + what
	}
	return got
}

// requireSameChanges compares diff's changes with the oracle's.
func requireSameChanges(t *testing.T, got, want map[string]string) {
	t.Helper()
	var diffs []string
	for _, p := range allKeys(got, want) {
		if got[p] != want[p] {
			diffs = append(diffs, fmt.Sprintf("%s: imgmount diff %q, oracle %q", p, got[p], want[p]))
		}
	}
	if len(diffs) > 0 {
		t.Fatalf("imgmount diff and the oracle disagree on %d paths (of %d changed):\n  %s", len(diffs), len(want), strings.Join(diffs, "\n  "))
	}
	t.Logf("%d changed paths, the same as the oracle's", len(want))
}

// diffRun runs imgmount diff (text and JSON), requires status 0 and the
// same changes both ways, and returns them.
func diffRun(t *testing.T, args ...string) map[string]string {
	t.Helper()
	r := run(t, 5*time.Minute, append([]string{"diff", "--cache-dir", sharedCache}, args...)...)
	require.Equal(t, 0, r.code, "%s", r)
	got := parseDiffText(t, r.stdout)
	r = run(t, 5*time.Minute, append([]string{"diff", "--json", "--cache-dir", sharedCache}, args...)...)
	require.Equal(t, 0, r.code, "%s", r)
	var js struct {
		Equal   bool `json:"equal"`
		Changes []struct {
			Path   string   `json:"path"`
			Change string   `json:"change"`
			What   []string `json:"what"`
		} `json:"changes"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &js), r.stdout)
	fromJSON := map[string]string{}
	for _, c := range js.Changes {
		v := c.Change
		if len(c.What) > 0 {
			v += " " + strings.Join(c.What, ",")
		}
		fromJSON[treePath(c.Path)] = v
	}
	require.Equal(t, got, fromJSON, "text and JSON")
	require.Equal(t, len(got) == 0, js.Equal)
	return got
}

func devEntry(name string, major, minor int64) imagetest.Entry {
	return imagetest.Entry{Hdr: tar.Header{Name: name, Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: major, Devminor: minor, ModTime: imagetest.MTime}}
}

func ownedBy(e imagetest.Entry, uid, gid int) imagetest.Entry {
	return e.With(func(h *tar.Header) { h.Uid, h.Gid = uid, gid })
}

func withXattrs(e imagetest.Entry, kv ...string) imagetest.Entry {
	return e.With(func(h *tar.Header) {
		h.PAXRecords = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			h.PAXRecords["SCHILY.xattr."+kv[i]] = kv[i+1]
		}
	})
}

// diffLayers are the layers of the diff test images: a base, release 1,
// and release 2, which changes everything diff looks at.
func diffLayers(t *testing.T) (base, rel1, rel2 []byte) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 8192)
	base = imagetest.LayerTar(t, []imagetest.Entry{
		imagetest.Dir("etc"), imagetest.File("etc/hostname", "base\n"), imagetest.File("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
		imagetest.File("etc/keep", "keep\n"),
		imagetest.Dir("etc/conf.d"), imagetest.File("etc/conf.d/a.conf", "a=1\n"), imagetest.File("etc/conf.d/b.conf", "b=1\n"),
		imagetest.Dir("usr"), imagetest.Dir("usr/bin"), imagetest.Dir("usr/lib"),
		imagetest.FileMode("usr/bin/tool", "tool v1\n", 0o755), imagetest.Hardlink("usr/bin/tool-link", "usr/bin/tool"),
		imagetest.File("usr/bin/same-size", "aaaa"),
		withXattrs(imagetest.FileMode("usr/bin/caps", "caps\n", 0o755), "user.a", "1", "user.b", "2"),
		imagetest.File("usr/lib/libx.so.1", "lib 1\n"), imagetest.Symlink("usr/lib/libx.so", "libx.so.1"),
		imagetest.Symlink("bin", "usr/bin"),
		imagetest.Dir("var"), ownedBy(imagetest.DirMode("var/log", 0o750), 0, 4), imagetest.File("var/log/messages", "boot\n"),
		imagetest.Fifo("var/fifo"),
		imagetest.Dir("dev"), devEntry("dev/null", 1, 3), devEntry("dev/tty", 5, 0),
		imagetest.Dir("home"), ownedBy(imagetest.DirMode("home/user", 0o700), 1000, 1000),
		ownedBy(imagetest.File("home/user/.profile", "PS1=$\n"), 1000, 1000),
		imagetest.Dir("opt"), imagetest.Dir("opt/data"), imagetest.File("opt/data/big", string(big)), imagetest.File("opt/data/small", "s"),
	})
	rel1 = imagetest.LayerTar(t, []imagetest.Entry{
		imagetest.File("etc/hostname", "rel1\n"),
		imagetest.Dir("opt/app"), imagetest.FileMode("opt/app/main", "v1 main", 0o755), imagetest.File("opt/app/config", "x=1\n"),
	})
	rel2 = imagetest.LayerTar(t, []imagetest.Entry{
		imagetest.File("etc/hostname", "rel2\n"),                                                                // same size: by hash
		imagetest.File("usr/bin/same-size", "bbbb"),                                                             // same size: by hash
		imagetest.File("etc/keep", "keep\n").With(func(h *tar.Header) { h.ModTime = h.ModTime.Add(time.Hour) }), // the same again
		imagetest.FileMode("opt/app/main", "v2 main!", 0o755),
		imagetest.Whiteout("opt/app/config"),
		imagetest.Opaque("etc/conf.d"), imagetest.File("etc/conf.d/b.conf", "b=1\n"),
		imagetest.FileMode("usr/bin/tool", "tool v1\n", 0o4755),
		ownedBy(imagetest.DirMode("home/user", 0o700), 2000, 2000),
		imagetest.File("usr/lib/libx.so.2", "lib 2\n"), imagetest.Symlink("usr/lib/libx.so", "libx.so.2"),
		imagetest.Dir("bin"), imagetest.File("bin/new", "new\n"),
		imagetest.Symlink("var/log/messages", "/dev/null"),
		imagetest.File("opt/data", "now a file\n"),
		devEntry("dev/tty", 5, 1),
		imagetest.Whiteout("var/fifo"),
		withXattrs(imagetest.FileMode("usr/bin/caps", "caps\n", 0o755), "user.a", "1", "user.b", "3", "user.c", "new"),
		imagetest.Dir("srv"), imagetest.Dir("srv/www"), imagetest.File("srv/www/index.html", "<html>\n"),
	})
	return base, rel1, rel2
}

// diffTestImages writes release 1 (base, rel1) as docker save writes it,
// and release 2 (base, rel1, rel2; gzip layers) as an OCI archive tagged
// "rel2"; and both in one Docker 25 tarball, as app:1 and app:2.
func diffTestImages(t *testing.T) (dir, a, b, both string, layers [][]byte) {
	base, rel1, rel2 := diffLayers(t)
	dir = t.TempDir()
	ia := imagetest.Build(t, imagetest.Spec{Tags: []string{"app:1"}, Layers: []imagetest.LayerSpec{{Tar: base}, {Tar: rel1}}})
	ib := imagetest.Build(t, imagetest.Spec{Tags: []string{"rel2"}, Layers: []imagetest.LayerSpec{
		{Tar: base, Comp: tarindex.CompressionGzip}, {Tar: rel1, Comp: tarindex.CompressionGzip}, {Tar: rel2, Comp: tarindex.CompressionGzip}}})
	a = imagetest.Legacy(t, ia).Write(t, dir, "release-1.tar")
	b = imagetest.OCI(t, false, ib).Write(t, dir, "release-2.tar")
	ib.Img.Tags = []string{"app:2"}
	both = imagetest.OCI(t, true, ia, imagetest.Build(t, ib.Img)).Write(t, dir, "both.tar")
	return dir, a, b, both, [][]byte{base, rel1, rel2}
}

// wantReleaseDiff is what diff release-1.tar release-2.tar prints.
const wantReleaseDiff = `M /bin (type symlink→dir)
A /bin/new
M /dev/tty (device 5,0→5,1)
D /etc/conf.d/a.conf
M /etc/hostname (content)
M /home/user (owner 1000:1000→2000:2000)
D /opt/app/config
M /opt/app/main (content)
M /opt/data (type dir→file, mode 0755→0644)
D /opt/data/big
D /opt/data/small
A /srv
A /srv/www
A /srv/www/index.html
M /usr/bin/caps (xattrs +user.c ~user.b)
M /usr/bin/same-size (content)
M /usr/bin/tool (mode 0755→4755)
M /usr/lib/libx.so (target "libx.so.1"→"libx.so.2")
A /usr/lib/libx.so.2
D /var/fifo
M /var/log/messages (type file→symlink)
`

func TestDiffImages(t *testing.T) {
	requireFUSE(t)
	_, a, b, both, _ := diffTestImages(t)
	rootA := unpackWithUmoci(t, "docker-archive:"+a)
	rootB := unpackWithUmoci(t, "oci-archive:"+b+":rel2")
	want := oracleDiff(t, rootA, rootB)

	r := run(t, 5*time.Minute, "diff", "--cache-dir", sharedCache, a, b)
	require.Equal(t, 0, r.code, "%s", r)
	require.Equal(t, wantReleaseDiff, r.stdout)
	require.Empty(t, r.stderr)
	requireSameChanges(t, diffRun(t, a, b), want)

	t.Run("reverse", func(t *testing.T) {
		requireSameChanges(t, diffRun(t, b, a), oracleDiff(t, rootB, rootA))
	})
	t.Run("one tarball", func(t *testing.T) {
		requireSameChanges(t, diffRun(t, "--image-a", "app:1", "--image-b", "app:2", both, both), want)
	})
	t.Run("layers", func(t *testing.T) {
		// Release 2's first two layers are release 1.
		requireSameChanges(t, diffRun(t, "--layers", b, "1", "2"), want)
		requireSameChanges(t, diffRun(t, "--layers", b, "2"), want)
		require.Empty(t, diffRun(t, "--layers", b, "2", "2"))
	})
	t.Run("equal", func(t *testing.T) {
		require.Empty(t, diffRun(t, a, a))
		require.Empty(t, diffRun(t, "--image-a", "app:2", both, b))
	})
	t.Run("errors", func(t *testing.T) {
		r := run(t, time.Minute, "diff", "--cache-dir", sharedCache, "--layers", b, "3")
		require.Equal(t, 2, r.code, "%s", r)
		require.Contains(t, r.stderr, "layer 3: "+b+" has 3 layers, 0 to 2")
		r = run(t, time.Minute, "diff", "--cache-dir", sharedCache, both, b)
		require.Equal(t, 3, r.code, "%s", r)
		require.Contains(t, r.stderr, "--image")
	})
}

// The Debian image and the union-semantics one: pairs of their layers,
// against umoci's unpack of the layout cut down to those layers; and the
// same image in two layouts and compressions shows no difference.
func TestDiffLayersOracle(t *testing.T) {
	requireFUSE(t)
	for _, img := range []testImage{debianImages[2], trickyOCI} {
		t.Run(img.name, func(t *testing.T) {
			od := oracle(t, img)
			man, _, err := layoutManifest(od.layout, od.ref)
			require.NoError(t, err)
			n := len(man.Layers)
			require.GreaterOrEqual(t, n, 2)
			roots := map[int]string{n - 1: od.rootfs}
			root := func(i int) string {
				if roots[i] == "" {
					roots[i] = layoutPrefix(t, od.layout, od.ref, i+1)
				}
				return roots[i]
			}
			for _, pair := range [][2]int{{0, n - 1}, {n - 2, n - 1}, {n - 1, 0}} {
				t.Run(fmt.Sprintf("layers %d %d", pair[0], pair[1]), func(t *testing.T) {
					want := oracleDiff(t, root(pair[0]), root(pair[1]))
					require.NotEmpty(t, want)
					requireSameChanges(t, diffRun(t, "--layers", img.path(), fmt.Sprint(pair[0]), fmt.Sprint(pair[1])), want)
				})
			}
		})
	}
	t.Run("formats", func(t *testing.T) {
		start := time.Now()
		require.Empty(t, diffRun(t, debianImages[0].path(), debianImages[3].path()))
		require.Empty(t, diffRun(t, trickyDocker.path(), trickyOCI.path()))
		t.Logf("docker-archive against oci zstd: equal in %s (four runs)", time.Since(start).Round(time.Millisecond))
	})
}

// lastWriters is, for each path the layers name, the last layer whose tar
// has an entry of that name (whiteouts left out): the oracle of the
// layer column of inspect --files.
func lastWriters(t *testing.T, layers [][]byte) map[string]int {
	t.Helper()
	out := map[string]int{}
	for i, data := range layers {
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
			if strings.HasPrefix(path.Base(name), ".wh.") {
				continue
			}
			out[name] = i
		}
	}
	return out
}

func TestInspectFilesOracle(t *testing.T) {
	requireFUSE(t)
	_, _, b, _, layers := diffTestImages(t)
	tree, err := walkTree(unpackWithUmoci(t, "oci-archive:"+b+":rel2"))
	require.NoError(t, err)
	writers := lastWriters(t, layers)

	r := run(t, 5*time.Minute, "inspect", "--files", "--cache-dir", sharedCache, b)
	require.Equal(t, 0, r.code, "%s", r)
	types := map[string]string{"file": "reg", "dir": "dir", "symlink": "symlink", "fifo": "fifo", "char": "char", "block": "block"}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
		f := strings.Fields(line)
		require.GreaterOrEqual(t, len(f), 4, "line %q", line)
		layer, typ, size := f[0], f[1], f[2]
		p := line[strings.Index(line, " /")+1:]
		if typ == "symlink" {
			p = p[:strings.Index(p, " -> ")]
		}
		p = treePath(p)
		n := tree[p]
		require.NotNil(t, n, "%s: listed but not in umoci's unpack", p)
		seen[p] = true
		require.Equal(t, n.Type, types[typ], p)
		switch n.Type {
		case "reg":
			require.Equal(t, fmt.Sprint(n.Size), size, p)
		case "symlink":
			require.Equal(t, fmt.Sprint(len(n.Target)), size, p)
			require.True(t, strings.HasSuffix(line, " -> "+n.Target), line)
		case "char":
			require.Equal(t, n.Rdev, size, p)
		}
		if w, ok := writers[p]; ok {
			require.Equal(t, fmt.Sprint(w), layer, "%s: the last layer that wrote it", p)
		} else {
			require.Equal(t, "-", layer, "%s: no layer names it", p)
		}
	}
	var missing []string
	for p := range tree {
		if !seen[p] {
			missing = append(missing, p)
		}
	}
	sort.Strings(missing)
	require.Empty(t, missing, "in umoci's unpack, not listed")
	require.Equal(t, "2", strings.Fields(grepLine(t, r.stdout, " /usr/bin/tool\n"))[0])
	require.Equal(t, "0", strings.Fields(grepLine(t, r.stdout, " /usr/bin/tool-link\n"))[0])
}

func grepLine(t *testing.T, out, suffix string) string {
	t.Helper()
	for _, line := range strings.SplitAfter(out, "\n") {
		if strings.HasSuffix(line, suffix) {
			return line
		}
	}
	t.Fatalf("no line ending in %q", suffix)
	return ""
}

// inspect on a tarball of two images says which layers they share, as
// skopeo's reading of their configs does.
func TestInspectShared(t *testing.T) {
	requireFUSE(t)
	_, _, _, both, _ := diffTestImages(t)
	ids := map[string][]digest.Digest{}
	for _, tag := range []string{"1", "2"} {
		var cfg ocispec.Image
		require.NoError(t, json.Unmarshal([]byte(cmdOK(t, "skopeo", "inspect", "--config", "oci-archive:"+both+":"+tag)), &cfg))
		ids[tag] = cfg.RootFS.DiffIDs
	}
	r := run(t, 5*time.Minute, "inspect", "--json", "--image", "app:2", "--cache-dir", sharedCache, both)
	require.Equal(t, 0, r.code, "%s", r)
	var got struct {
		Layers []struct {
			DiffID     string `json:"diff_id"`
			SharedWith []struct {
				Tags []string `json:"tags"`
			} `json:"shared_with"`
		} `json:"layers"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &got))
	require.Len(t, got.Layers, len(ids["2"]))
	shared := 0
	for i, l := range got.Layers {
		require.Equal(t, ids["2"][i].String(), l.DiffID)
		if slices.Contains(ids["1"], ids["2"][i]) {
			shared++
			require.Len(t, l.SharedWith, 1, "layer %d", i)
			require.Contains(t, l.SharedWith[0].Tags, "docker.io/library/app:1")
		} else {
			require.Empty(t, l.SharedWith, "layer %d", i)
		}
	}
	require.Equal(t, 2, shared)

	r = run(t, 5*time.Minute, "inspect", "--image", "app:2", "--cache-dir", sharedCache, both)
	require.Equal(t, 0, r.code, "%s", r)
	require.Regexp(t, `(?m)^Shared with the other images of the tarball:\n  0  [0-9a-f]{12}  .*app:1\n  1  [0-9a-f]{12}  .*app:1\nTotal:`, r.stdout)

	// Without --image: the whole tarball, each image and the layers they
	// share (issue 12), as archive/tar reads its manifest.json and
	// configs; the shared ones are skopeo's too.
	requireTarballInspect(t, both)
	r = run(t, 5*time.Minute, "inspect", "--json", "--cache-dir", sharedCache, both)
	require.Equal(t, 0, r.code, "%s", r)
	var all struct {
		Layers []struct {
			DiffID digest.Digest `json:"diff_id"`
			UsedBy []int         `json:"used_by"`
		} `json:"layers"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &all))
	var sharedIDs []digest.Digest
	for _, l := range all.Layers {
		if len(l.UsedBy) > 1 {
			sharedIDs = append(sharedIDs, l.DiffID)
		}
	}
	var skopeoShared []digest.Digest
	for _, d := range ids["2"] {
		if slices.Contains(ids["1"], d) {
			skopeoShared = append(skopeoShared, d)
		}
	}
	require.Equal(t, skopeoShared, sharedIDs)
	// And the multi-image fixture (Docker 25's layout, nothing shared).
	requireTarballInspect(t, filepath.Join(dataDir, "multi-image.tar"))
}
