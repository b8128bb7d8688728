package integration

// Tests of `imgmount commit` and `imgmount export`. An upper directory is
// made by hand, as the writable mount leaves one (whiteout files, opaque
// markers, the user.imgmount.* bookkeeping xattrs), and the same edits are
// applied with ordinary file operations to a copy of umoci's unpack of the
// original image: that copy is the expected tree. Each output is read by
// independent tools only (skopeo, which checks every digest it copies;
// umoci unpack; GNU tar; podman) and compared with the expected tree path
// by path, every attribute included.
//
// Tool limits worked around here: umoci 0.4.7 cannot read zstd layers, so
// outputs with zstd layers are recompressed to gzip by skopeo on their way
// to umoci (the uncompressed tars, and so the diff_ids, stay the same);
// skopeo 1.9 cannot read a gzipped docker-archive, which commit never
// writes (it writes plain tarballs).

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// editTime is the mtime of every entry of the hand-made upper directory
// (and so of the same paths in the expected tree).
var editTime = time.Date(2024, 2, 3, 4, 5, 6, 789000000, time.UTC)

// edits is one hand-made upper directory and the tree umoci must unpack
// from an image committed with it.
type edits struct {
	upper    string
	expected string // the original's unpack with the edits applied
	lower    string // the original's unpack (read only)
}

// editor applies each edit to both trees.
type editor struct {
	t *testing.T
	e *edits
}

func (ed *editor) up(rel string) string  { return filepath.Join(ed.e.upper, rel) }
func (ed *editor) exp(rel string) string { return filepath.Join(ed.e.expected, rel) }

func (ed *editor) ok(err error) {
	ed.t.Helper()
	require.NoError(ed.t, err)
}

// copyUpDir makes the upper directory's copy of a lower directory and its
// parents, with the lower attributes, as the mount's copy-up does.
func (ed *editor) copyUpDir(rel string) {
	ed.t.Helper()
	parts := strings.Split(rel, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		if _, err := os.Lstat(ed.up(p)); err == nil {
			continue
		}
		var st unix.Stat_t
		ed.ok(unix.Lstat(filepath.Join(ed.e.lower, p), &st))
		ed.ok(os.Mkdir(ed.up(p), 0o700))
		ed.ok(os.Lchown(ed.up(p), int(st.Uid), int(st.Gid)))
		ed.ok(os.Chmod(ed.up(p), os.FileMode(st.Mode&0o777)|goSpecial(st.Mode)))
	}
}

// goSpecial converts setuid/setgid/sticky bits to os.FileMode.
func goSpecial(m uint32) os.FileMode {
	var f os.FileMode
	if m&unix.S_ISUID != 0 {
		f |= os.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		f |= os.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		f |= os.ModeSticky
	}
	return f
}

// writeBoth writes a regular file into both trees.
func (ed *editor) writeBoth(rel, body string, mode os.FileMode) {
	ed.t.Helper()
	ed.copyUpDir(filepath.Dir(rel))
	for _, p := range []string{ed.up(rel), ed.exp(rel)} {
		_ = os.Remove(p)
		ed.ok(os.WriteFile(p, []byte(body), mode))
		ed.ok(os.Chmod(p, mode))
	}
}

// whiteout deletes a lower path: a .wh. file above, removal below.
func (ed *editor) whiteout(rel string) {
	ed.t.Helper()
	ed.copyUpDir(filepath.Dir(rel))
	ed.ok(os.WriteFile(ed.up(filepath.Join(filepath.Dir(rel), ".wh."+filepath.Base(rel))), nil, 0o600))
	_, err := os.Lstat(ed.exp(rel))
	ed.ok(err) // the test must delete something that is there
	ed.ok(os.RemoveAll(ed.exp(rel)))
}

// opaque hides every lower child of a directory.
func (ed *editor) opaque(rel string) {
	ed.t.Helper()
	ed.copyUpDir(rel)
	ed.ok(os.WriteFile(ed.up(filepath.Join(rel, ".wh..wh..opq")), nil, 0o600))
	ents, err := os.ReadDir(ed.exp(rel))
	ed.ok(err)
	require.NotEmpty(ed.t, ents, "the opaque directory must hide something")
	for _, e := range ents {
		ed.ok(os.RemoveAll(ed.exp(filepath.Join(rel, e.Name()))))
	}
}

func (ed *editor) xattrUp(rel, name, value string) {
	ed.t.Helper()
	ed.ok(unix.Lsetxattr(ed.up(rel), name, []byte(value), 0))
}

func (ed *editor) xattrExp(rel, name, value string) {
	ed.t.Helper()
	ed.ok(unix.Lsetxattr(ed.exp(rel), name, []byte(value), 0))
}

// settle gives every upper entry but whiteouts editTime, and the same
// paths of the expected tree too.
func (ed *editor) settle() {
	ed.t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(editTime.UnixNano()), unix.NsecToTimespec(editTime.UnixNano())}
	var rels []string
	ed.ok(filepath.Walk(ed.e.upper, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == ed.e.upper || strings.HasPrefix(fi.Name(), ".wh.") {
			return err
		}
		rel, _ := filepath.Rel(ed.e.upper, p)
		rels = append(rels, rel)
		return nil
	}))
	// Deepest first, so that setting a file's time cannot disturb its
	// directory's afterwards (it does not, but the order costs nothing).
	slices.Reverse(rels)
	for _, rel := range rels {
		for _, p := range []string{ed.up(rel), ed.exp(rel)} {
			ed.ok(unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW))
		}
	}
}

// makeEdits builds the upper directory and the expected tree for the
// Debian test image whose unpack is lower: a changed file, an added file
// with an xattr and a second name, a symlink, a deleted file, a deleted
// directory, an opaque directory, and what an unprivileged mount records
// in xattrs (owner and setuid bit, a device it could not create, a
// capability it could not set, its own bookkeeping).
// They are removed when the test owner ends (t itself, or a parent that
// shares them between subtests).
func makeEdits(t *testing.T, lower string, owner *testing.T) *edits {
	t.Helper()
	dir := filepath.Join(runDir, "edits", sanitize(t.Name()))
	require.NoError(t, os.MkdirAll(dir, 0o755))
	owner.Cleanup(func() { os.RemoveAll(dir) })
	e := &edits{upper: filepath.Join(dir, "upper"), expected: filepath.Join(dir, "expected"), lower: lower}
	require.NoError(t, os.Mkdir(e.upper, 0o755))
	cmdOK(t, "cp", "-a", lower, e.expected)
	ed := &editor{t: t, e: e}

	ed.writeBoth("etc/debian_version", "12.99-imgmount\n", 0o644)
	ed.xattrUp("etc/debian_version", "user.imgmount.origin", "1234") // bookkeeping: never committed

	ed.writeBoth("etc/imgmount-added", "added by the commit test\n", 0o640)
	ed.xattrUp("etc/imgmount-added", "user.commit", "yes\x00binary")
	ed.xattrExp("etc/imgmount-added", "user.commit", "yes\x00binary")
	ed.copyUpDir("usr/local/bin")
	ed.ok(os.Link(ed.up("etc/imgmount-added"), ed.up("usr/local/bin/added-link")))
	ed.ok(os.Link(ed.exp("etc/imgmount-added"), ed.exp("usr/local/bin/added-link")))
	for _, p := range []string{ed.up("usr/local/bin/added-symlink"), ed.exp("usr/local/bin/added-symlink")} {
		ed.ok(os.Symlink("../../../etc/imgmount-added", p))
	}

	ed.whiteout("etc/hostname")
	ed.whiteout("usr/share/man")
	ed.opaque("var/log")
	ed.writeBoth("var/log/fresh.log", "fresh\n", 0o644)

	// An unprivileged mount's records: the real file is 0644 and owned by
	// whoever mounted; the view (and the layer) is 1000:1000 04755 with a
	// capability.
	ed.writeBoth("usr/local/bin/override-tool", "#!/bin/sh\necho tool\n", 0o644)
	ed.xattrUp("usr/local/bin/override-tool", "user.imgmount.stat", "1000:1000:4755")
	ed.xattrUp("usr/local/bin/override-tool", "user.imgmount.xattr.security.capability", capNetBindService())
	ed.ok(os.Lchown(ed.exp("usr/local/bin/override-tool"), 1000, 1000))
	ed.ok(os.Chmod(ed.exp("usr/local/bin/override-tool"), 0o755|os.ModeSetuid))
	ed.xattrExp("usr/local/bin/override-tool", "security.capability", capNetBindService())

	ed.copyUpDir("dev")
	ed.ok(os.WriteFile(ed.up("dev/commit-null"), nil, 0o600))
	ed.xattrUp("dev/commit-null", "user.imgmount.stat", "0:0:0666:char:1:3")
	ed.ok(unix.Mknod(ed.exp("dev/commit-null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	ed.ok(unix.Chmod(ed.exp("dev/commit-null"), 0o666))

	ed.copyUpDir("home")
	for _, p := range []string{ed.up("home/app"), ed.exp("home/app")} {
		ed.ok(os.Mkdir(p, 0o700))
	}
	ed.xattrUp("home/app", "user.imgmount.stat", "1000:1000:0750")
	ed.ok(os.Lchown(ed.exp("home/app"), 1000, 1000))
	ed.ok(os.Chmod(ed.exp("home/app"), 0o750))
	ed.writeBoth("home/app/.profile", "export APP=1\n", 0o644)

	ed.settle()
	return e
}

// cmdStdout runs a command and returns its stdout (stderr kept apart, so
// that warnings cannot spoil JSON).
func cmdStdout(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "%s %s:\n%s", name, strings.Join(args, " "), stderr.String())
	return out
}

// commitOK runs imgmount commit and returns the image ID it prints.
func commitOK(t *testing.T, args ...string) string {
	t.Helper()
	r := run(t, 5*time.Minute, append([]string{"commit", "--cache-dir", sharedCache}, args...)...)
	require.Equal(t, 0, r.code, "%s", r)
	id := strings.TrimSpace(r.stdout)
	require.NoError(t, digest.Digest(id).Validate(), "commit prints the image ID: %s", r)
	return id
}

// outMembers lists an output tarball's members and checks that every
// blob hashes to its name.
func outMembers(t *testing.T, out string) map[string]bool {
	t.Helper()
	f, err := os.Open(out)
	require.NoError(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	names := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names
		}
		require.NoError(t, err)
		names[hdr.Name] = true
		if hdr.Typeflag != tar.TypeReg || !strings.HasPrefix(hdr.Name, "blobs/sha256/") {
			continue
		}
		h := sha256.New()
		_, err = io.Copy(h, tr)
		require.NoError(t, err)
		require.Equal(t, strings.TrimPrefix(hdr.Name, "blobs/sha256/"), hex.EncodeToString(h.Sum(nil)), "blob %s", hdr.Name)
	}
}

// copyCommitted reads the output with skopeo, which checks every digest,
// into an OCI layout and returns the layout's reference. transport is
// oci-archive or docker-archive.
func copyCommitted(t *testing.T, out, transport string, zstdLayers bool) string {
	t.Helper()
	dir := filepath.Join(filepath.Dir(out), sanitize(filepath.Base(out))+"-"+transport)
	require.NoError(t, os.RemoveAll(dir))
	require.NoError(t, os.MkdirAll(dir, 0o755))
	args := []string{"copy", "-q"}
	if zstdLayers {
		args = append(args, "--dest-compress", "--dest-compress-format", "gzip")
	}
	cmdOK(t, "skopeo", append(args, transport+":"+out, "oci:"+filepath.Join(dir, "oci")+":img")...)
	return filepath.Join(dir, "oci") + ":img"
}

// unpackCommitted copies the output (see copyCommitted) and unpacks it
// with umoci; it returns the rootfs.
func unpackCommitted(t *testing.T, out, transport string, zstdLayers bool) string {
	t.Helper()
	layout := copyCommitted(t, out, transport, zstdLayers)
	bundle := filepath.Join(filepath.Dir(strings.TrimSuffix(layout, ":img")), "bundle")
	cmdOK(t, "umoci", "unpack", "--image", layout, bundle)
	return filepath.Join(bundle, "rootfs")
}

// requireSameTree compares two directories path by path.
func requireSameTree(t *testing.T, got, want, what string, skipRoot ...bool) {
	t.Helper()
	w, err := walkTree(want)
	require.NoError(t, err)
	g, err := walkTree(got)
	require.NoError(t, err)
	if len(skipRoot) > 0 && skipRoot[0] {
		delete(w, ".")
		delete(g, ".")
	}
	diffs := diffTrees(g, w, 60)
	if len(diffs) > 0 {
		t.Fatalf("%s differs from the expected tree (%d paths expected, %d there); lines read \"<path>: <field>: %s, expected\":\n  %s",
			what, len(w), len(g), what, strings.Join(diffs, "\n  "))
	}
	t.Logf("%s: %d paths identical in type, mode, owner, size, content, target, mtime, rdev, xattrs and hardlinks", what, len(w))
}

// skopeoConfig reads the config of the image in a tarball.
func skopeoConfig(t *testing.T, ref string) ocispec.Image {
	t.Helper()
	var cfg ocispec.Image
	require.NoError(t, json.Unmarshal(cmdStdout(t, "skopeo", "inspect", "--config", ref), &cfg))
	return cfg
}

// skopeoLayerDigests lists the layer blobs of the image in a tarball as
// stored.
func skopeoLayerDigests(t *testing.T, ref string) []digest.Digest {
	t.Helper()
	var man ocispec.Manifest
	require.NoError(t, json.Unmarshal(cmdStdout(t, "skopeo", "inspect", "--raw", ref), &man))
	var out []digest.Digest
	for _, l := range man.Layers {
		out = append(out, l.Digest)
	}
	return out
}

func skopeoRef(img testImage) string {
	ref := img.transport + ":" + img.path()
	if img.ref != "" {
		ref += ":" + img.ref
	}
	return ref
}

// TestCommitFormats commits the same edits in every output format and
// layer compression and checks what the tools read back.
func TestCommitFormats(t *testing.T) {
	requireFUSE(t)
	parent, shared := t, map[string]*edits{}
	for _, c := range []struct {
		img      testImage
		format   string // "" for the default (both layouts)
		compress string
	}{
		{debianImages[0], "", "none"},
		{debianImages[0], "", "gzip"},
		{debianImages[0], "", "zstd"},
		{debianImages[0], "docker", "gzip"},
		{debianImages[0], "oci", "none"},
		{debianImages[2], "", "gzip"}, // gzip layers in the original: copied as they are
	} {
		name := fmt.Sprintf("%s/%s-%s", c.img.name, orNone(c.format), c.compress)
		t.Run(name, func(t *testing.T) {
			e := shared[c.img.name]
			if e == nil {
				// Made once per image for all its cases: on the parent,
				// so that it outlives this case.
				e = makeEdits(t, oracle(t, c.img).rootfs, parent)
				shared[c.img.name] = e
			}
			out := filepath.Join(t.TempDir(), "committed.tar")
			args := []string{c.img.path(), "--upper", e.upper, "-o", out, "--compress", c.compress,
				"-m", "commit test", "--env", "IMGMOUNT_TEST=2", "--env", "ADDED=yes", "--label", "org.imgmount.commit=1"}
			if c.format != "" {
				args = append(args, "--format", c.format)
			}
			id := commitOK(t, args...)
			members := outMembers(t, out)
			for _, d := range skopeoLayerDigests(t, skopeoRef(c.img)) {
				require.True(t, members["blobs/sha256/"+d.Encoded()], "the original layer blob %s is copied as it is", d)
			}
			hasOCI, hasDocker := c.format != "docker", c.format != "oci"
			require.Equal(t, hasOCI, members["index.json"] && members["oci-layout"])
			require.Equal(t, hasDocker, members["manifest.json"])

			orig := skopeoConfig(t, skopeoRef(c.img))
			transports := []string{}
			if hasDocker {
				transports = append(transports, "docker-archive")
			}
			if hasOCI {
				transports = append(transports, "oci-archive")
			}
			for _, tr := range transports {
				cfg := skopeoConfig(t, tr+":"+out)
				require.Equal(t, append(append([]digest.Digest{}, orig.RootFS.DiffIDs...), cfg.RootFS.DiffIDs[len(cfg.RootFS.DiffIDs)-1]), cfg.RootFS.DiffIDs, "%s: one diff_id appended", tr)
				require.Len(t, cfg.RootFS.DiffIDs, len(orig.RootFS.DiffIDs)+1)
				require.Equal(t, "commit test", cfg.History[len(cfg.History)-1].Comment)
				require.Contains(t, cfg.Config.Env, "IMGMOUNT_TEST=2", "replaced")
				require.NotContains(t, cfg.Config.Env, "IMGMOUNT_TEST=1")
				require.Contains(t, cfg.Config.Env, "ADDED=yes")
				require.Equal(t, "1", cfg.Config.Labels["org.imgmount.commit"])
				require.Equal(t, orig.Config.Cmd, cfg.Config.Cmd)
			}
			// Every layout is copied (skopeo checks each digest); one is
			// unpacked: both point at the same blobs.
			rootfs := unpackCommitted(t, out, transports[0], c.compress == "zstd")
			requireSameTree(t, rootfs, e.expected, "umoci unpack of the "+transports[0]+" commit")
			for _, tr := range transports[1:] {
				copyCommitted(t, out, tr, c.compress == "zstd")
			}
			// The image ID is the config's digest.
			cfgRef := transports[0] + ":" + out
			raw := cmdStdout(t, "skopeo", "inspect", "--config", "--raw", cfgRef)
			require.Equal(t, id, digest.FromBytes(raw).String())
		})
	}
}

// TestCommitSquash checks a squashed commit: one layer with the whole
// union, the runtime config kept.
func TestCommitSquash(t *testing.T) {
	requireFUSE(t)
	img := debianImages[0]
	od := oracle(t, img)
	e := makeEdits(t, od.rootfs, t)
	out := filepath.Join(t.TempDir(), "squashed.tar")
	commitOK(t, img.path(), "--upper", e.upper, "--squash", "--compress", "gzip", "-o", out, "--tag", "imgmount-test/squashed:1")
	outMembers(t, out)
	orig := skopeoConfig(t, skopeoRef(img))
	for _, tr := range []string{"docker-archive", "oci-archive"} {
		cfg := skopeoConfig(t, tr+":"+out)
		require.Len(t, cfg.RootFS.DiffIDs, 1, tr)
		require.Len(t, cfg.History, 1, tr)
		require.Equal(t, orig.Config.Env, cfg.Config.Env, tr)
		require.Equal(t, orig.Config.Cmd, cfg.Config.Cmd, tr)
		require.Equal(t, orig.Config.Entrypoint, cfg.Config.Entrypoint, tr)
		require.Equal(t, orig.Config.WorkingDir, cfg.Config.WorkingDir, tr)
		require.Equal(t, orig.Config.User, cfg.Config.User, tr)
		require.Equal(t, orig.Config.Labels, cfg.Config.Labels, tr)
		require.Equal(t, orig.Config.ExposedPorts, cfg.Config.ExposedPorts, tr)
		require.Equal(t, orig.Platform, cfg.Platform, tr)
	}
	require.Len(t, skopeoLayerDigests(t, "docker-archive:"+out), 1)
	// skopeo finds the image by its tag, in manifest.json and in index.json.
	cmdStdout(t, "skopeo", "inspect", "docker-archive:"+out+":imgmount-test/squashed:1")
	cmdStdout(t, "skopeo", "inspect", "oci-archive:"+out+":1")
	requireSameTree(t, unpackCommitted(t, out, "oci-archive", false), e.expected, "umoci unpack of the squashed commit")

	// podman loads the squashed Debian image (its one layer has none of
	// the original layers' whiteouts podman 4.3 trips on) and mounts the
	// same tree (but for its root directory, which is podman's own).
	podman := podmanStore(t)
	podman("load", "-i", out)
	root := podman("image", "mount", "imgmount-test/squashed:1")
	requireSameTree(t, root, e.expected, "podman image mount of the squashed commit", true)
}

// TestCommitThin leaves the base image's layers out and mounts the result
// with --base.
func TestCommitThin(t *testing.T) {
	requireFUSE(t)
	img := debianImages[0]
	od := oracle(t, img)
	e := makeEdits(t, od.rootfs, t)
	full := filepath.Join(t.TempDir(), "full.tar")
	thin := filepath.Join(t.TempDir(), "thin.tar")
	commitOK(t, img.path(), "--upper", e.upper, "-o", full)
	commitOK(t, img.path(), "--upper", e.upper, "-o", thin, "--thin-from", img.path())

	members := outMembers(t, thin)
	baseLayers := skopeoLayerDigests(t, skopeoRef(img))
	for _, d := range baseLayers {
		require.False(t, members["blobs/sha256/"+d.Encoded()], "the thin tarball holds the base layer %s", d)
	}
	fullLayers := skopeoLayerDigests(t, "oci-archive:"+full)
	require.True(t, members["blobs/sha256/"+fullLayers[len(fullLayers)-1].Encoded()], "the new layer is in the thin tarball")
	thinFi, err := os.Stat(thin)
	require.NoError(t, err)
	t.Logf("thin tarball: %d bytes", thinFi.Size())

	// inspect describes it without the base, the base's layers absent
	// (issue 12); --files, which needs them, names the first.
	r := run(t, time.Minute, "inspect", "--cache-dir", sharedCache, thin)
	require.Equal(t, 0, r.code, "%s", r)
	require.Regexp(t, `(?m)^  0  `+baseLayers[0].Encoded()[:12]+`  absent `, r.stdout)
	require.Contains(t, r.stdout, "--base BASE.tar")
	r = run(t, time.Minute, "inspect", "--files", "--cache-dir", sharedCache, thin)
	requireClearError(t, r, baseLayers[0].Encoded()[:12], "--base")

	mnt := mountImage(t, thin, "--base", img.path())
	compareWithOracle(t, mnt, e.expected, false)
	fullMnt := mountImage(t, full)
	compareWithOracle(t, fullMnt, e.expected, false)
}

// TestCommitLive commits a live writable mount by its mountpoint: the
// committed image must unpack to exactly what the mount shows.
func TestCommitLive(t *testing.T) {
	requireFUSE(t)
	img := debianImages[0]
	upper := filepath.Join(t.TempDir(), "upper")
	mnt := mountImage(t, img.path(), "--upper", upper)
	write := func(rel, body string) {
		require.NoError(t, os.WriteFile(filepath.Join(mnt, rel), []byte(body), 0o644))
	}
	write("etc/imgmount-live", "written through the mount\n")
	f, err := os.OpenFile(filepath.Join(mnt, "etc/debian_version"), os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.WriteString("appended\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.Remove(filepath.Join(mnt, "etc/hostname")))
	require.NoError(t, os.RemoveAll(filepath.Join(mnt, "usr/share/man")))
	require.NoError(t, os.MkdirAll(filepath.Join(mnt, "srv/live/sub"), 0o750))
	write("srv/live/sub/file", "deep\n")
	require.NoError(t, os.Link(filepath.Join(mnt, "etc/imgmount-live"), filepath.Join(mnt, "srv/live/link")))
	require.NoError(t, os.Symlink("/etc/imgmount-live", filepath.Join(mnt, "srv/live/symlink")))
	require.NoError(t, unix.Setxattr(filepath.Join(mnt, "etc/imgmount-live"), "user.live", []byte("1"), 0))

	out := filepath.Join(t.TempDir(), "live.tar")
	r := run(t, 5*time.Minute, "commit", mnt, "-o", out, "-m", "live")
	require.Equal(t, 0, r.code, "%s", r)

	r = run(t, time.Minute, "commit", mnt, "--upper", upper, "-o", out+".2")
	requireClearError(t, r, "--upper")

	rootfs := unpackCommitted(t, out, "oci-archive", false)
	requireSameTree(t, rootfs, mnt, "umoci unpack of the live commit (expected: the mount itself)")
	require.Equal(t, "written through the mount\n", readString(t, filepath.Join(rootfs, "etc/imgmount-live")))
	require.True(t, strings.HasSuffix(readString(t, filepath.Join(rootfs, "etc/debian_version")), "appended\n"))
	for _, gone := range []string{"etc/hostname", "usr/share/man"} {
		_, err := os.Lstat(filepath.Join(rootfs, gone))
		require.True(t, errors.Is(err, os.ErrNotExist), "%s deleted in the mount: %v", gone, err)
	}
	cfg := skopeoConfig(t, "oci-archive:"+out)
	require.Equal(t, "live", cfg.History[len(cfg.History)-1].Comment)
}

// TestCommitNotAMount refuses a directory that is not a writable mount.
func TestCommitNotAMount(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	r := run(t, time.Minute, "commit", dir, "-o", filepath.Join(dir, "out.tar"))
	requireClearError(t, r, "not a writable imgmount mount")
	ro := mountImage(t, smallOCI.path())
	r = run(t, time.Minute, "commit", ro, "-o", filepath.Join(dir, "out.tar"))
	requireClearError(t, r, "not a writable imgmount mount")
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, ents, "a failed commit leaves nothing")
}

// TestCommitLeavesNothing: a commit that fails, or is interrupted, leaves
// no output and no temporary file.
func TestCommitLeavesNothing(t *testing.T) {
	requireFUSE(t)
	img := debianImages[0]
	outDir := t.TempDir()
	out := filepath.Join(outDir, "out.tar")

	upper := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(upper, "etc"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(upper, "etc/broken"), []byte("x"), 0o644))
	require.NoError(t, unix.Setxattr(filepath.Join(upper, "etc/broken"), "user.imgmount.stat", []byte("nobody:0:0644"), 0))
	r := run(t, 5*time.Minute, "commit", "--cache-dir", sharedCache, img.path(), "--upper", upper, "-o", out)
	requireClearError(t, r, "etc/broken")
	requireEmptyDir(t, outDir)

	// Interrupted: SIGINT while the commit is writing to a pipe nobody
	// reads (so it is surely still at work), its scratch files in outDir.
	// The signal cancels the work, which stops at its next write and
	// removes its scratch files; a write blocked on the pipe cannot stop,
	// and the commit is left to end with the process: either way it exits
	// soon, having written nothing.
	cmd := exec.Command(binPath, "commit", "--cache-dir", sharedCache, img.path(), "--squash", "--compress", "zstd", "-o", "-")
	cmd.Env = append(binEnv(), "TMPDIR="+outDir)
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	defer pr.Close()
	cmd.Stdout = pw
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	pw.Close()
	require.Eventually(t, func() bool {
		ents, _ := os.ReadDir(outDir)
		return len(ents) > 0
	}, time.Minute, 10*time.Millisecond, "the commit's scratch directory")
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err = <-waited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("commit still running 30 s after SIGINT; stderr: %s", stderr.String())
	}
	require.Equal(t, 1, exitCode(err), "stderr: %s", stderr.String())
	require.Contains(t, stderr.String(), "interrupted by SIGINT; - was not written")
	requireEmptyDir(t, outDir)
}

func requireEmptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	require.Empty(t, names, "left in %s", dir)
}

// podmanStore gives a podman command working on a private store (removed
// when the test ends).
func podmanStore(t *testing.T) func(args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("podman"); err != nil {
		if os.Getenv("IMGMOUNT_REQUIRE_FUSE") == "1" {
			t.Fatal("podman is not installed (scripts/setup.sh installs it) (IMGMOUNT_REQUIRE_FUSE=1)")
		}
		t.Skip("podman is not installed (scripts/setup.sh installs it)")
	}
	store, err := os.MkdirTemp(runDir, "podman-")
	require.NoError(t, err)
	base := []string{"--root", filepath.Join(store, "root"), "--runroot", filepath.Join(store, "run"), "--storage-driver", "vfs"}
	t.Cleanup(func() {
		_ = exec.Command("podman", append(base, "image", "unmount", "-a")...).Run()
		_ = exec.Command("podman", append(base, "rmi", "-a", "-f")...).Run()
		os.RemoveAll(store)
	})
	return func(args ...string) string {
		t.Helper()
		return strings.TrimSpace(string(cmdStdout(t, "podman", append(base, args...)...)))
	}
}

// TestCommitPodman loads a commit into podman (a private store) and looks
// at the image it made. The Debian test image cannot be used: podman 4.3
// fails to apply its own layers (the same-layer whiteout case the README
// describes), so the bundled example image is.
func TestCommitPodman(t *testing.T) {
	requireFUSE(t)
	podman := podmanStore(t)
	upper := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(upper, "app"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(upper, "app/committed.txt"), []byte("committed\n"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(upper, "etc"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(upper, "etc/.wh.motd"), nil, 0o600))
	out := filepath.Join(t.TempDir(), "example-committed.tar")
	id := commitOK(t, exampleImage.path(), "--upper", upper, "--compress", "gzip", "--tag", "imgmount-test/example:committed", "-o", out)

	podman("load", "-i", out)
	require.Equal(t, strings.TrimPrefix(id, "sha256:"), podman("image", "inspect", "--format", "{{.Id}}", "imgmount-test/example:committed"), "podman's image ID is the config digest")
	root := podman("image", "mount", "imgmount-test/example:committed")
	require.Equal(t, "committed\n", readString(t, filepath.Join(root, "app/committed.txt")))
	_, err := os.Lstat(filepath.Join(root, "etc/motd"))
	require.True(t, errors.Is(err, os.ErrNotExist), "etc/motd was deleted: %v", err)
	require.Contains(t, readString(t, filepath.Join(root, "app/hello.sh")), "Hello from the imgmount example image")
}

// TestExport checks the union as one plain tar, extracted by GNU tar:
// with edits (the expected tree), and the union-semantics image as it is
// (umoci's unpack of it).
func TestExport(t *testing.T) {
	requireFUSE(t)
	extract := func(t *testing.T, tarball string) string {
		dir := filepath.Join(t.TempDir(), "x")
		require.NoError(t, os.Mkdir(dir, 0o755))
		cmdOK(t, "tar", "-xpf", tarball, "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", dir)
		return dir
	}
	t.Run("debian-with-upper", func(t *testing.T) {
		img := debianImages[0]
		e := makeEdits(t, oracle(t, img).rootfs, t)
		out := filepath.Join(t.TempDir(), "rootfs.tar")
		r := run(t, 5*time.Minute, "export", "--cache-dir", sharedCache, img.path(), "--upper", e.upper, "-o", out)
		require.Equal(t, 0, r.code, "%s", r)
		requireSameTree(t, extract(t, out), e.expected, "tar -x of the export")
	})
	t.Run("tricky-to-stdout", func(t *testing.T) {
		img := trickyOCI
		od := oracle(t, img)
		out := filepath.Join(t.TempDir(), "rootfs.tar")
		// -o - streams to stdout: through a shell redirect into a file.
		sh(t, "XDG_CACHE_HOME="+shellQuote(xdgCache)+" "+shellQuote(binPath)+" export --cache-dir "+shellQuote(sharedCache)+" "+shellQuote(img.path())+" -o - > "+shellQuote(out))
		requireSameTree(t, extract(t, out), od.rootfs, "tar -x of the export")
	})
}
