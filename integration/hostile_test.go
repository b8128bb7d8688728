package integration

// The hostile-image corpus: image tarballs built to break a tool that
// reads them (the project's hardening issue). Each one is given to the real
// binary three ways, each under a timeout: `imgmount IMAGE MNT` (a fresh
// --cache-dir), `imgmount inspect IMAGE` and `imgmount export IMAGE -o
// OUT.tar`. Whatever the input, a correct tool
//
//   - does not panic and does not hang;
//   - reads and writes nothing outside the image, the mountpoint, its cache
//     directory and the output: a sentinel tree around the work directory,
//     and the host's /etc/passwd and /etc/shadow, are the same afterwards,
//     and nothing new appears anywhere around it (see hostileBox);
//   - either refuses the input with a short, clear error (all three commands
//     alike), or mounts it, and then the whole mount can be walked (every
//     directory listed, every regular file read, every symlink read) with no
//     error, and the export is a tar that GNU tar extracts, into an empty
//     directory and nowhere else, to the very tree the mount shows;
//   - and what mounts also mounts writable with a fresh --upper, takes a
//     small edit (copy-ups, a new file and directory, a removal, a moved
//     symlink), and commits: the committed tarball and its new layer
//     extract with GNU tar into empty directories and nowhere else, and
//     the committed image shows the edited tree (runWritable).
//
// TestHostileTarCorpus wraps Go's own archive/tar test files as the single
// layer of an image; TestHostileAttacks holds the hand-built attacks, each
// with a comment saying what a correct tool does and a test of exactly that;
// TestHostileBox checks that the damage check notices damage.

import (
	"archive/tar"
	"bytes"
	"compress/bzip2"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// hostileTimeout bounds every run of the binary on a hostile input: each
// of them is a few kilobytes to a few megabytes, so a run that takes
// longer is a hang.
const hostileTimeout = 30 * time.Second

// hostileWant is what a correct tool does with one input.
type hostileWant struct {
	// refuse, when not nil, requires every command to fail with a clear
	// error that says each of these phrases (case-insensitively; "a|b"
	// accepts either). An empty, non-nil list accepts any clear error.
	refuse []string
	// either accepts a clear refusal as well as a mount (for the archive/tar
	// test files that GNU tar and Go's archive/tar disagree on): the three
	// commands must still agree, and a mount must still show tree or
	// oracle.
	either bool
	// tree, when set, is the whole mount, exactly (see hostileExpect).
	tree map[string]hnode
	// oracle, when set, is a directory whose tree the mount must equal.
	oracle string
	// warn lists phrases that the stderr of mount, inspect and export must
	// each hold (entries left out of the tree).
	warn []string
	// absent, with refuse: the refusal is a layer no member holds (a thin
	// image, to what stays inside the archive), which inspect describes
	// instead of refusing, marking layer absent[0] absent (issue 12).
	absent []int
	// check runs more checks on the mount.
	check func(t *testing.T, mnt string)
	// checkExport runs more checks on the exported tar and its extraction.
	checkExport func(t *testing.T, out, x string)
	// tarFails, when set, is what GNU tar may say when it cannot extract
	// the export (and nothing else may stop it); the export is then read
	// with archive/tar instead.
	tarFails string
	// bug, when set, names a bug of imgmount that makes the case fail: it
	// is skipped, saying so, until the bug is fixed (then delete bug).
	bug string
}

// hostileSource builds an input in one or more variants (layouts), by
// name; a single variant is named "".
type hostileSource map[string]func(t *testing.T) []byte

func one(f func(t *testing.T) []byte) hostileSource { return hostileSource{"": f} }

// hostileCase is one input.
type hostileCase struct {
	name  string
	image hostileSource
	want  hostileWant
}

// hnode is what the hostile walk knows of one path: the fields the mount,
// GNU tar's extraction and the export must agree on.
type hnode struct {
	Type   string // reg dir symlink fifo char block sock
	Size   int64  // regular files
	Sum    string // regular files: sha256 of the content (head and tail past hostileWhole)
	Target string // symlinks
}

func (n hnode) String() string {
	switch n.Type {
	case "reg":
		return fmt.Sprintf("reg size %d sha256 %.16s", n.Size, n.Sum)
	case "symlink":
		return fmt.Sprintf("symlink -> %.100q", n.Target)
	}
	return n.Type
}

// hostileWhole is the largest file the walk reads whole; of a larger one
// (a sparse file of a terabyte) it reads the first and last MiB.
const hostileWhole = 64 << 20

// hostileTree walks everything under root: every directory is listed,
// every regular file read, every symlink read, and every error (EIO from a
// mount, a short read) is returned. It goes by file descriptors (openat,
// fstatat, readlinkat) rather than by path, as filepath.WalkDir does, so
// that trees deeper than PATH_MAX can be walked. Root itself is left out.
func hostileTree(root string) (map[string]hnode, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: root, Err: err}
	}
	out := map[string]hnode{}
	var errs []error
	hostileWalkDir(fd, "", out, &errs)
	if len(errs) > 10 {
		errs = append(errs[:10], fmt.Errorf("and %d more errors", len(errs)-10))
	}
	return out, errors.Join(errs...)
}

// walkWithin is hostileTree of a mount, failing if the walk takes longer
// than d (a hang in the filesystem; the test's cleanup then unmounts, which
// ends the walk).
func walkWithin(mnt string, d time.Duration) (map[string]hnode, error) {
	type res struct {
		tree map[string]hnode
		err  error
	}
	c := make(chan res, 1)
	go func() {
		tree, err := hostileTree(mnt)
		c <- res{tree, err}
	}()
	select {
	case r := <-c:
		return r.tree, r.err
	case <-time.After(d):
		return nil, fmt.Errorf("walking %s did not finish within %s: the filesystem hangs", mnt, d)
	}
}

// hostileWalkDir walks the directory open as dirfd (at rel below the
// root), and closes it.
func hostileWalkDir(dirfd int, rel string, out map[string]hnode, errs *[]error) {
	f := os.NewFile(uintptr(dirfd), rel)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%.200s: listing: %w", rel, err))
	}
	sort.Strings(names)
	fail := func(p, what string, err error) {
		*errs = append(*errs, fmt.Errorf("%.200s: %s: %w", p, what, err))
	}
	for _, name := range names {
		p := name
		if rel != "" {
			p = rel + "/" + name
		}
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			fail(p, "lstat", err)
			continue
		}
		n := hnode{Type: fileType(st.Mode)}
		switch n.Type {
		case "dir":
			cfd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				fail(p, "open", err)
				break
			}
			hostileWalkDir(cfd, p, out, errs)
		case "reg":
			n.Size = st.Size
			if n.Sum, err = hostileSum(dirfd, name, st.Size); err != nil {
				fail(p, "read", err)
			}
		case "symlink":
			buf := make([]byte, 1<<16)
			k, err := unix.Readlinkat(dirfd, name, buf)
			if err != nil {
				fail(p, "readlink", err)
				break
			}
			n.Target = string(buf[:k])
		}
		out[p] = n
	}
}

// hostileSum reads the regular file name in dirfd, of size bytes as its
// stat says, and returns the sha256 of its content (of its first and last
// MiB past hostileWhole). Reading fewer or more bytes than size is an error.
func hostileSum(dirfd int, name string, size int64) (string, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	h := sha256.New()
	if size <= hostileWhole {
		n, err := io.Copy(h, f)
		if err != nil {
			return "", err
		}
		if n != size {
			return "", fmt.Errorf("read %d bytes, stat says %d", n, size)
		}
		return hex.EncodeToString(h.Sum(nil)), nil
	}
	buf := make([]byte, 1<<20)
	for _, off := range []int64{0, size - int64(len(buf))} {
		if _, err := f.ReadAt(buf, off); err != nil {
			return "", fmt.Errorf("at %d: %w", off, err)
		}
		h.Write(buf)
	}
	if n, err := f.ReadAt(buf[:1], size); n != 0 || err != io.EOF {
		return "", fmt.Errorf("reading at its size %d gave %d bytes, %v", size, n, err)
	}
	return "partial:" + hex.EncodeToString(h.Sum(nil)), nil
}

// hostileExpect turns a tree written as path → content into hnodes:
// "<dir>", "<fifo>" and "<char>" are those types, "-> T" a symlink to T,
// and anything else a regular file's content.
func hostileExpect(m map[string]string) map[string]hnode {
	out := map[string]hnode{}
	for p, v := range m {
		switch {
		case v == "<dir>":
			out[p] = hnode{Type: "dir"}
		case v == "<fifo>":
			out[p] = hnode{Type: "fifo"}
		case v == "<char>":
			out[p] = hnode{Type: "char"}
		case strings.HasPrefix(v, "-> "):
			out[p] = hnode{Type: "symlink", Target: v[3:]}
		default:
			s := sha256.Sum256([]byte(v))
			out[p] = hnode{Type: "reg", Size: int64(len(v)), Sum: hex.EncodeToString(s[:])}
		}
	}
	return out
}

// hostileDiff lists the differences between two trees, path by path.
func hostileDiff(got, want map[string]hnode, gotName, wantName string) []string {
	d := diffList{max: 40}
	seen := map[string]bool{}
	var paths []string
	for _, m := range []map[string]hnode{got, want} {
		for p := range m {
			if !seen[p] {
				seen[p] = true
				paths = append(paths, p)
			}
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		g, gok := got[p]
		w, wok := want[p]
		switch {
		case !gok:
			d.add(fmt.Sprintf("%.200q: missing from %s (%s: %s)", p, gotName, wantName, w))
		case !wok:
			d.add(fmt.Sprintf("%.200q: in %s (%s) but not in %s", p, gotName, g, wantName))
		case g != w:
			d.add(fmt.Sprintf("%.200q: %s: %s, %s: %s", p, gotName, g, wantName, w))
		}
	}
	return d.lines()
}

func requireSameHTree(t *testing.T, got, want map[string]hnode, gotName, wantName string) {
	t.Helper()
	if diffs := hostileDiff(got, want, gotName, wantName); len(diffs) > 0 {
		t.Fatalf("%s differs from %s (%d paths there, %d expected):\n  %s", gotName, wantName, len(got), len(want), strings.Join(diffs, "\n  "))
	}
}

// hostileBox is where one input is run. The work directory, the parent of
// the mountpoint, sits inside a root that holds decoys an escape would hit
// first (root/etc/passwd is ../../etc/passwd from the export's extraction
// directory, and from the cache directories):
//
//	root/sentinel, root/etc/passwd, root/etc/shadow   decoys
//	root/w/sentinel                                   next to the mountpoint
//	root/w/image.tar                                  the input
//	root/w/mnt, root/w/cache-*, root/w/out, root/w/x  the tool's own places
//	root/w/upper, root/w/commit, root/w/cx, root/w/lx  and the writable pass's
//
// Everything under root but the tool's own places is recorded before and
// must be the same after (nothing changed, nothing new); so must the host's
// /etc/passwd and /etc/shadow, and the host paths the attacks aim at must
// not appear.
type hostileBox struct {
	root, work, image, mnt, out, outTar, x string
	// The writable pass's own places: the upper directory, the commit's
	// output directory, and the extractions of the committed tarball and
	// of its new layer.
	upper, commit, cx, lx string
	before                map[string]string
	hostBefore            map[string]string
}

// hostileHostPaths are host paths an escape would read, write or create.
var hostileHostPaths = []string{
	"/etc/passwd", "/etc/shadow",
	"/etc/imgmount-hostile-x", "/etc/imgmount-hostile-y", "/tmp/imgmount-hostile-escaped", "/imgmount-hostile-escaped",
}

func newHostileBox(t *testing.T, image []byte) *hostileBox {
	t.Helper()
	root := newMountpoint(t) // under the run's directory, where the leak check looks
	b := &hostileBox{root: root, work: filepath.Join(root, "w")}
	b.image = filepath.Join(b.work, "image.tar")
	b.mnt = filepath.Join(b.work, "mnt")
	b.out = filepath.Join(b.work, "out")
	b.outTar = filepath.Join(b.out, "out.tar")
	b.x = filepath.Join(b.work, "x")
	b.upper, b.commit = filepath.Join(b.work, "upper"), filepath.Join(b.work, "commit")
	b.cx, b.lx = filepath.Join(b.work, "cx"), filepath.Join(b.work, "lx")
	for _, d := range []string{filepath.Join(root, "etc"), b.work, b.mnt, b.out, b.x, b.upper, b.commit, b.cx, b.lx,
		b.cache("mount"), b.cache("inspect"), b.cache("export"), b.cache("rw"), b.cache("commit"), b.cache("committed")} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	for p, body := range map[string]string{
		"sentinel": "root sentinel\n", "etc/passwd": "decoy passwd\n", "etc/shadow": "decoy shadow\n", "w/sentinel": "next to the mountpoint\n",
	} {
		require.NoError(t, os.WriteFile(filepath.Join(root, p), []byte(body), 0o644))
	}
	require.NoError(t, os.WriteFile(b.image, image, 0o644))
	b.before = b.snapshot(t)
	b.hostBefore = hostState(t)
	return b
}

// cache is the cache directory of one command, made empty for it.
func (b *hostileBox) cache(cmd string) string { return filepath.Join(b.work, "cache-"+cmd) }

// own tells whether p (under root) is one of the tool's own places.
func (b *hostileBox) own(p string) bool {
	switch p {
	case b.mnt, b.out, b.x, b.upper, b.commit, b.cx, b.lx:
		return true
	}
	return strings.HasPrefix(p, filepath.Join(b.work, "cache-"))
}

// snapshot describes every path under root outside the tool's own places
// (their names are recorded, not their content).
func (b *hostileBox) snapshot(t *testing.T) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(b.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if b.own(p) {
			m[p] = "(own)"
			return fs.SkipDir
		}
		m[p] = describePath(p)
		return nil
	})
	require.NoError(t, err)
	return m
}

// describePath is p's type, mode, size, mtime and content digest, or
// "absent".
func describePath(p string) string {
	fi, err := os.Lstat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "absent"
		}
		return "error: " + err.Error()
	}
	s := fmt.Sprintf("%v size %d mtime %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
	switch {
	case fi.Mode().IsRegular():
		b, err := os.ReadFile(p)
		if err != nil {
			return s + " read error: " + err.Error()
		}
		sum := sha256.Sum256(b)
		s += " sha256 " + hex.EncodeToString(sum[:])
	case fi.Mode()&fs.ModeSymlink != 0:
		l, _ := os.Readlink(p)
		s += " -> " + l
	}
	return s
}

func hostState(t *testing.T) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, p := range hostileHostPaths {
		m[p] = describePath(p)
	}
	return m
}

// requireNothingEscaped checks the box and the host after every command.
func (b *hostileBox) requireNothingEscaped(t *testing.T) {
	t.Helper()
	require.Empty(t, b.escapes(t), "something outside the image, mountpoint, cache and output was changed or created")
}

// escapes lists what changed in the box, outside the tool's own places,
// and on the host.
func (b *hostileBox) escapes(t *testing.T) []string {
	t.Helper()
	after := b.snapshot(t)
	var d []string
	for _, p := range allKeys(b.before, after) {
		if b.before[p] != after[p] {
			d = append(d, fmt.Sprintf("%s: before %q, after %q", p, orAbsent(b.before[p]), orAbsent(after[p])))
		}
	}
	host := hostState(t)
	for _, p := range hostileHostPaths {
		if b.hostBefore[p] != host[p] {
			d = append(d, fmt.Sprintf("host %s: before %q, after %q", p, b.hostBefore[p], host[p]))
		}
	}
	return d
}

// TestHostileBox checks that the box notices what it must: a decoy
// changed, a file created next to the mountpoint, a directory created at
// the root of the box, a symlink planted among the decoys.
func TestHostileBox(t *testing.T) {
	requireTools(t)
	for _, escape := range []func(b *hostileBox) error{
		func(b *hostileBox) error {
			return os.WriteFile(filepath.Join(b.root, "etc/passwd"), []byte("pwned\n"), 0o644)
		},
		func(b *hostileBox) error { return os.WriteFile(filepath.Join(b.work, "new"), nil, 0o644) },
		func(b *hostileBox) error { return os.Mkdir(filepath.Join(b.root, "tmp"), 0o755) },
		func(b *hostileBox) error { return os.Symlink("/", filepath.Join(b.root, "etc/link")) },
	} {
		b := newHostileBox(t, []byte("image"))
		require.Empty(t, b.escapes(t))
		require.NoError(t, escape(b))
		require.NotEmpty(t, b.escapes(t))
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func orAbsent(s string) string {
	if s == "" {
		return "absent"
	}
	return s
}

func allKeys(ms ...map[string]string) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range ms {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	sort.Strings(out)
	return out
}

// requireSaid requires each phrase (case-insensitively; "a|b": either) in
// the stderr of r, where the box's path (which holds the test's name) is
// not counted.
func (b *hostileBox) requireSaid(t *testing.T, r result, what string, phrases []string) {
	t.Helper()
	low := strings.ToLower(strings.ReplaceAll(r.stderr, b.root, "<box>"))
	for _, p := range phrases {
		ok := false
		for _, alt := range strings.Split(p, "|") {
			if strings.Contains(low, strings.ToLower(alt)) {
				ok = true
			}
		}
		if !ok {
			t.Fatalf("%s: stderr should say %q:\n%s", what, p, r)
		}
	}
}

// requireDirNames requires that dir holds exactly names.
func requireDirNames(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	got := []string{}
	for _, e := range ents {
		got = append(got, e.Name())
	}
	want := append([]string{}, names...)
	sort.Strings(want)
	require.Equal(t, want, got, "what %s holds", dir)
}

// runHostile runs the three commands on one input and checks what want
// says, and that nothing escaped.
func runHostile(t *testing.T, image []byte, want hostileWant) {
	t.Helper()
	if want.bug != "" {
		t.Skip("BUG: " + want.bug)
	}
	requireFUSE(t)
	b := newHostileBox(t, image)
	mustRefuse := want.refuse != nil
	// Nothing the tool prints may come from the host's /etc/passwd, which
	// the attacks point at.
	hostPasswd, err := os.ReadFile("/etc/passwd")
	require.NoError(t, err)
	hostLine, _, _ := strings.Cut(string(hostPasswd), "\n")
	noHostData := func(r result) {
		t.Helper()
		require.NotContains(t, r.stdout+r.stderr, hostLine, "the tool printed the host's /etc/passwd: %s", r)
	}

	// mount
	r := run(t, hostileTimeout, "--cache-dir", b.cache("mount"), b.image, b.mnt)
	t.Cleanup(func() { unmount(t, b.mnt) })
	noHostData(r)
	var tree map[string]hnode
	if mustRefuse || (want.either && r.code != 0) {
		requireClearError(t, r)
		b.requireSaid(t, r, "mount", want.refuse)
		requireNoMount(t, b.mnt)
	} else {
		require.Equal(t, 0, r.code, "must mount: %s", r)
		require.True(t, isMounted(b.mnt), "imgmount returned 0 but nothing is mounted: %s", r)
		require.False(t, r.pipesHeld, "the daemon keeps the caller's stdout/stderr open: %s", r)
		b.requireSaid(t, r, "mount", want.warn)
		if want.warn != nil {
			t.Logf("mount warned: %s", firstLine(r.stderr))
		}
		tree, err = walkWithin(b.mnt, hostileTimeout)
		require.NoError(t, err, "walking the whole mount (every directory listed, file read, symlink read)")
		if want.tree != nil {
			requireSameHTree(t, tree, want.tree, "the mount", "the expected tree")
		}
		if want.oracle != "" {
			o, err := hostileTree(want.oracle)
			require.NoError(t, err)
			requireSameHTree(t, tree, o, "the mount", "GNU tar's extraction of the layer")
		}
		if want.check != nil {
			want.check(t, b.mnt)
		}
		t.Logf("mounted: %d paths walked, every file and symlink read", len(tree))
		unmount(t, b.mnt)
		requireNoMount(t, b.mnt)
	}
	requireDirNames(t, b.mnt)
	b.requireNothingEscaped(t)

	// inspect: the same verdict
	r = run(t, hostileTimeout, "inspect", "--cache-dir", b.cache("inspect"), b.image)
	noHostData(r)
	switch {
	case tree == nil && want.absent != nil:
		require.Equal(t, 0, r.code, "inspect describes a thin image: %s", r)
		require.Regexp(t, fmt.Sprintf(`(?m)^  %d  [0-9a-f]{12}  absent `, want.absent[0]), r.stdout, "inspect marks the layer absent")
	case tree == nil:
		requireClearError(t, r)
		b.requireSaid(t, r, "inspect", want.refuse)
	default:
		require.Equal(t, 0, r.code, "inspect must succeed where mount did: %s", r)
		b.requireSaid(t, r, "inspect", want.warn)
	}
	b.requireNothingEscaped(t)

	// export: the same verdict; the tar is what the mount showed
	r = run(t, hostileTimeout, "export", "--cache-dir", b.cache("export"), b.image, "-o", b.outTar)
	noHostData(r)
	if tree == nil {
		requireClearError(t, r)
		b.requireSaid(t, r, "export", want.refuse)
		requireDirNames(t, b.out) // nothing written, nothing left behind
		b.requireNothingEscaped(t)
		t.Logf("refused by mount, inspect and export: %s", firstLine(r.stderr))
		return
	}
	require.Equal(t, 0, r.code, "export must succeed where mount did: %s", r)
	b.requireSaid(t, r, "export", want.warn)
	requireDirNames(t, b.out, "out.tar")
	out, err := exec.Command("tar", "-xf", b.outTar, "-C", b.x).CombinedOutput()
	switch {
	case err != nil && want.tarFails != "":
		require.Contains(t, string(out), want.tarFails, "why GNU tar fails")
		requireSameHTree(t, exportTree(t, b.outTar), tree, "the export (as read by archive/tar)", "the mount")
		t.Logf("exported: GNU tar cannot extract it (%s); archive/tar reads the same %d paths", want.tarFails, len(tree))
	default:
		require.NoError(t, err, "GNU tar must extract the export: tar -xf %s -C %s:\n%s", b.outTar, b.x, out)
		x, err := hostileTree(b.x)
		require.NoError(t, err)
		requireSameHTree(t, x, tree, "GNU tar's extraction of the export", "the mount")
		t.Logf("exported: GNU tar extracts the same %d paths", len(x))
	}
	if want.checkExport != nil {
		want.checkExport(t, b.outTar, b.x)
	}
	b.requireNothingEscaped(t)

	b.runWritable(t, tree, noHostData)
}

// hostileEditDepth and hostileEditLen bound the paths the writable pass
// edits: in the image's first levels, short enough for one system call.
const (
	hostileEditDepth = 8
	hostileEditLen   = 1024
)

// runWritable is the writable pass over an input that mounted as tree:
// mounted again with a fresh --upper, it takes a small edit (a new file
// and directory, a copy-up by append, a copy-up of a directory by a
// new entry in it and a chmod, a removal, a renamed symlink: whatever
// of these the tree offers), shows exactly the edited tree, and is
// committed; the committed tarball extracts with GNU tar into an empty
// directory, so does its new layer (holding the edit), the committed
// image mounts showing the edited tree, and nothing outside the image,
// the upper directory and the outputs is read or written.
func (b *hostileBox) runWritable(t *testing.T, tree map[string]hnode, noHostData func(result)) {
	t.Helper()
	r := run(t, hostileTimeout, "--cache-dir", b.cache("rw"), "--upper", b.upper, b.image, b.mnt)
	noHostData(r)
	require.Equal(t, 0, r.code, "must mount writable where it mounts read-only: %s", r)
	require.True(t, isMounted(b.mnt), "imgmount returned 0 but nothing is mounted: %s", r)
	edited, layer, did := hostileEdit(t, b.mnt, tree)
	got, err := walkWithin(b.mnt, hostileTimeout)
	require.NoError(t, err, "walking the writable mount after the edit")
	requireSameHTree(t, got, edited, "the writable mount", "the edited tree")
	unmount(t, b.mnt)
	requireNoMount(t, b.mnt)
	requireDirNames(t, b.mnt)
	b.requireNothingEscaped(t)

	commitTar := filepath.Join(b.commit, "commit.tar")
	r = run(t, hostileTimeout, "commit", "--cache-dir", b.cache("commit"), b.image, "--upper", b.upper, "-o", commitTar)
	noHostData(r)
	require.Equal(t, 0, r.code, "commit must succeed where the writable mount did: %s", r)
	requireDirNames(t, b.commit, "commit.tar")
	b.requireNothingEscaped(t)

	out, err := exec.Command("tar", "-xf", commitTar, "-C", b.cx).CombinedOutput()
	require.NoError(t, err, "GNU tar must extract the committed tarball: %s", out)
	var manifest []struct{ Layers []string }
	mb, err := os.ReadFile(filepath.Join(b.cx, "manifest.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(mb, &manifest))
	require.Len(t, manifest, 1)
	newLayer := manifest[0].Layers[len(manifest[0].Layers)-1]
	require.True(t, filepath.IsLocal(newLayer), "the committed manifest names %q", newLayer)
	out, err = exec.Command("tar", "-xf", filepath.Join(b.cx, newLayer), "-C", b.lx).CombinedOutput()
	require.NoError(t, err, "GNU tar must extract the new layer: %s", out)
	x, err := hostileTree(b.lx)
	require.NoError(t, err)
	for p, n := range layer {
		require.Equal(t, n, x[p], "%q in the new layer", p)
	}
	b.requireNothingEscaped(t)

	r = run(t, hostileTimeout, "--cache-dir", b.cache("committed"), commitTar, b.mnt)
	noHostData(r)
	require.Equal(t, 0, r.code, "the committed image must mount: %s", r)
	got, err = walkWithin(b.mnt, hostileTimeout)
	require.NoError(t, err, "walking the committed image")
	requireSameHTree(t, got, edited, "the committed image", "the edited tree")
	unmount(t, b.mnt)
	requireNoMount(t, b.mnt)
	b.requireNothingEscaped(t)
	t.Logf("writable: %s; committed (%d paths in the new layer), extracted and mounted again", strings.Join(did, ", "), len(x))
}

// hostileEdit edits the writable mount mnt of tree and returns the tree
// it must show now, entries the new layer must hold, and what it did. Only
// paths of the walk are touched, none through a symlink (the kernel would
// follow it out of the mount): their parents are directories of the mount.
func hostileEdit(t *testing.T, mnt string, tree map[string]hnode) (edited, layer map[string]hnode, did []string) {
	t.Helper()
	edited = map[string]hnode{}
	for p, n := range tree {
		edited[p] = n
	}
	layer = map[string]hnode{}
	set := func(p string, n hnode) { edited[p], layer[p] = n, n }
	paths := make([]string, 0, len(tree))
	for p := range tree {
		if strings.Count(p, "/") < hostileEditDepth && len(p) < hostileEditLen {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	at := func(p string) string { return filepath.Join(mnt, p) }

	require.NoError(t, os.WriteFile(at("imgmount-edit"), []byte("edited\n"), 0o644))
	set("imgmount-edit", hostileExpect(map[string]string{"x": "edited\n"})["x"])
	require.NoError(t, os.MkdirAll(at("imgmount-dir"), 0o755))
	require.NoError(t, os.WriteFile(at("imgmount-dir/new"), []byte("new\n"), 0o644))
	set("imgmount-dir", hnode{Type: "dir"})
	set("imgmount-dir/new", hostileExpect(map[string]string{"x": "new\n"})["x"])
	did = append(did, "new file and directory")

	used := map[string]bool{"imgmount-edit": true, "imgmount-dir": true}
	// Copy-up by append: the first small regular file of one link.
	for _, p := range paths {
		var st unix.Stat_t
		if n := tree[p]; n.Type != "reg" || n.Size > 1<<20 || unix.Lstat(at(p), &st) != nil || st.Nlink != 1 {
			continue
		}
		old, err := os.ReadFile(at(p))
		require.NoError(t, err)
		f, err := os.OpenFile(at(p), os.O_WRONLY|os.O_APPEND, 0)
		require.NoError(t, err, "opening %q to append", p)
		_, err = f.WriteString("appended\n")
		require.NoError(t, err)
		require.NoError(t, f.Close())
		set(p, hostileExpect(map[string]string{"x": string(old) + "appended\n"})["x"])
		used[p] = true
		did = append(did, fmt.Sprintf("appended to %.60q", p))
		break
	}
	// A directory copied up: a new file in the first one, and a chmod.
	for _, p := range paths {
		if tree[p].Type != "dir" || used[p] {
			continue
		}
		require.NoError(t, os.WriteFile(at(p+"/imgmount-new"), []byte("in a lower dir\n"), 0o644))
		require.NoError(t, os.Chmod(at(p), 0o700))
		set(p+"/imgmount-new", hostileExpect(map[string]string{"x": "in a lower dir\n"})["x"])
		used[p] = true
		did = append(did, fmt.Sprintf("file added in %.60q, chmod", p))
		break
	}
	// A symlink renamed: the upper directory holds it (to wherever it
	// points), and a whiteout for its old name.
	for _, p := range paths {
		if tree[p].Type != "symlink" || used[p] {
			continue
		}
		require.NoError(t, os.Rename(at(p), at(p+"-moved")))
		set(p+"-moved", tree[p])
		delete(edited, p)
		used[p] = true
		did = append(did, fmt.Sprintf("symlink %.60q (-> %.30q) moved", p, tree[p].Target))
		break
	}
	// The last entry that is no directory removed: a whiteout.
	for i := len(paths) - 1; i >= 0; i-- {
		p := paths[i]
		if tree[p].Type == "dir" || used[p] {
			continue
		}
		require.NoError(t, os.Remove(at(p)))
		delete(edited, p)
		dir, base := filepath.Split(p)
		layer[dir+".wh."+base] = hostileExpect(map[string]string{"x": ""})["x"]
		did = append(did, fmt.Sprintf("%s %.60q removed", tree[p].Type, p))
		break
	}
	return edited, layer, did
}

// exportTree reads an exported tar with archive/tar, for trees GNU tar
// cannot extract. Hardlinks take their target's description.
func exportTree(t *testing.T, p string) map[string]hnode {
	t.Helper()
	f, err := os.Open(p)
	require.NoError(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	out := map[string]hnode{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		name := strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")
		if name == "" || name == "." {
			continue
		}
		switch h.Typeflag {
		case tar.TypeDir:
			out[name] = hnode{Type: "dir"}
		case tar.TypeSymlink:
			out[name] = hnode{Type: "symlink", Target: h.Linkname}
		case tar.TypeLink:
			out[name] = out[strings.TrimSuffix(h.Linkname, "/")]
		case tar.TypeReg:
			require.LessOrEqual(t, h.Size, int64(hostileWhole), "exportTree reads small files only")
			s := sha256.New()
			n, err := io.Copy(s, tr)
			require.NoError(t, err)
			out[name] = hnode{Type: "reg", Size: n, Sum: hex.EncodeToString(s.Sum(nil))}
		default:
			out[name] = hnode{Type: fmt.Sprintf("tar type %q", h.Typeflag)}
		}
	}
	return out
}

// hostileBuilt is an image (tagged hostile:latest, for the host's
// platform) of layer tars as they are; mutate, if set, edits its config.
func hostileBuilt(t *testing.T, mutate func(*ocispec.Image), layers ...imagetest.LayerSpec) *imagetest.Built {
	t.Helper()
	return imagetest.Build(t, imagetest.Spec{
		Tags:     []string{"hostile:latest"},
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Layers:   layers,
		Mutate:   mutate,
	})
}

// hostileDocker is a docker-archive (docker save before 25: uncompressed
// layers) of b.
func hostileDocker(t *testing.T, b *imagetest.Built) []byte {
	t.Helper()
	return imagetest.Legacy(t, b).Tar(t)
}

// hostileOCI is an OCI archive of b.
func hostileOCI(t *testing.T, b *imagetest.Built) []byte {
	t.Helper()
	return imagetest.OCI(t, false, b).Tar(t)
}

// goTarFiles returns Go's own archive/tar test files: every *.tar, and
// the *.tar.base64 and *.tar.bz2 ones decoded.
func goTarFiles(t *testing.T) map[string][]byte {
	t.Helper()
	out, err := exec.Command("go", "env", "GOROOT").Output()
	require.NoError(t, err, "go env GOROOT")
	dir := filepath.Join(strings.TrimSpace(string(out)), "src", "archive", "tar", "testdata")
	ents, err := os.ReadDir(dir)
	require.NoError(t, err, "Go's archive/tar test files")
	files := map[string][]byte{}
	for _, e := range ents {
		name := e.Name()
		b, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		switch {
		case strings.HasSuffix(name, ".tar"):
		case strings.HasSuffix(name, ".tar.base64"):
			b, err = base64.StdEncoding.DecodeString(string(b))
			require.NoError(t, err, name)
		case strings.HasSuffix(name, ".tar.bz2"):
			b, err = io.ReadAll(bzip2.NewReader(bytes.NewReader(b)))
			require.NoError(t, err, name)
		default:
			continue
		}
		files[name] = b
	}
	require.NotEmpty(t, files)
	return files
}

// gnuExtract extracts layer with GNU tar into a new directory and tells
// whether GNU tar succeeded.
func gnuExtract(t *testing.T, layer []byte) (dir string, ok bool, msg string) {
	t.Helper()
	tmp := t.TempDir()
	p := filepath.Join(tmp, "layer.tar")
	require.NoError(t, os.WriteFile(p, layer, 0o644))
	dir = filepath.Join(tmp, "rootfs")
	require.NoError(t, os.Mkdir(dir, 0o755))
	// GNU tar spends half a minute on gnu-sparse-many-zeros.tar (to make
	// an empty file): past a few seconds it counts as failing.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "tar", "-xf", p, "-C", dir).CombinedOutput()
	if ctx.Err() != nil {
		return dir, false, "GNU tar took more than 5s"
	}
	return dir, err == nil, strings.TrimSpace(string(out))
}

// goTarReads tells whether Go's archive/tar reads every header of layer.
func goTarReads(layer []byte) error {
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		_, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// goTarTree is what Go's archive/tar reads of a layer, as a tree: names
// cleaned, parents implied, the last of duplicates winning, hardlinks
// taking their target's content.
func goTarTree(t *testing.T, layer []byte) map[string]hnode {
	t.Helper()
	out := map[string]hnode{}
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		name, err := tarindex.CleanName(h.Name)
		if err != nil || name == "." || h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		for d := filepath.Dir(name); d != "."; d = filepath.Dir(d) {
			if out[d].Type != "dir" {
				out[d] = hnode{Type: "dir"}
			}
		}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeGNUSparse:
			if h.Size > hostileWhole {
				t.Skipf("%s: %d bytes: too large for this oracle", name, h.Size)
			}
			s := sha256.New()
			n, err := io.Copy(s, tr)
			require.NoError(t, err)
			out[name] = hnode{Type: "reg", Size: n, Sum: hex.EncodeToString(s.Sum(nil))}
		case tar.TypeLink:
			target, err := tarindex.CleanName(h.Linkname)
			require.NoError(t, err)
			out[name] = out[target]
		case tar.TypeSymlink:
			out[name] = hnode{Type: "symlink", Target: h.Linkname}
		case tar.TypeDir:
			out[name] = hnode{Type: "dir"}
		case tar.TypeChar:
			out[name] = hnode{Type: "char"}
		case tar.TypeBlock:
			out[name] = hnode{Type: "block"}
		case tar.TypeFifo:
			out[name] = hnode{Type: "fifo"}
		default:
			out[name] = hnode{Type: fmt.Sprintf("tar type %q", h.Typeflag)}
		}
	}
	return out
}

// tarCorpusOverrides are the files where GNU tar and Go's archive/tar
// (which Docker, containerd and imgmount build on) disagree, and what a
// correct tool does there.
var tarCorpusOverrides = map[string]hostileWant{
	// A GNU incremental dump directory (type 'D'). GNU tar makes a
	// directory of it; Docker and containerd refuse the layer ("unhandled
	// tar header type"), as imgmount does: a container layer never holds
	// one.
	"gnu-incremental.tar": {refuse: []string{"test2", "unsupported tar type 'D'"}},
	// Written by Go 1.7's buggy tar.Writer: a GNU-magic header whose
	// prefix field holds "aaa...a". GNU tar ignores the field ("foo");
	// Go's archive/tar reads it back as Go 1.7 meant it, and so Docker sees
	// "aaa...a/foo", as imgmount must.
	"invalid-go17.tar": {tree: hostileExpect(map[string]string{
		strings.Repeat("a", 97):          "<dir>",
		strings.Repeat("a", 97) + "/foo": "",
	})},
}

// TestHostileTarCorpus: each of Go's archive/tar test files as the single
// layer of an image, as a docker-archive (the layer served in place) and
// as an OCI archive (the layer gzipped). What a correct tool does:
//
//   - GNU tar extracts the file: mount it, showing what GNU tar extracts
//     (paths, types, sizes, content, symlink targets);
//   - GNU tar fails but Go's archive/tar reads every header: either mount
//     it (then walk, export and re-extract it cleanly) or refuse it clearly;
//   - neither reads it: refuse it with a clear error.
func TestHostileTarCorpus(t *testing.T) {
	requireFUSE(t)
	files := goTarFiles(t)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		layer := files[name]
		t.Run(name, func(t *testing.T) {
			dir, gnuOK, gnuMsg := gnuExtract(t, layer)
			goErr := goTarReads(layer)
			var want hostileWant
			switch {
			case gnuOK && goErr == nil:
				want.oracle = dir
			case gnuOK:
				want.oracle, want.either = dir, true
				t.Logf("GNU tar extracts it, Go's archive/tar does not (%v): a clear refusal, or a mount showing what GNU tar extracts", goErr)
			case goErr == nil:
				want.either, want.tree = true, goTarTree(t, layer)
				t.Logf("GNU tar fails (%s), Go's archive/tar reads it: a clear refusal, or a mount showing what archive/tar reads", gnuMsg)
			default:
				want.refuse = []string{}
				t.Logf("GNU tar fails (%s), and Go's archive/tar (%v): a clear refusal", gnuMsg, goErr)
			}
			if o, ok := tarCorpusOverrides[name]; ok {
				want = o
			}
			for _, v := range []struct {
				name   string
				comp   tarindex.Compression
				layout func(*testing.T, *imagetest.Built) []byte
			}{
				{"docker", tarindex.CompressionNone, hostileDocker},
				{"oci-gzip", tarindex.CompressionGzip, hostileOCI},
			} {
				t.Run(v.name, func(t *testing.T) {
					runHostile(t, v.layout(t, hostileBuilt(t, nil, imagetest.LayerSpec{Tar: layer, Comp: v.comp})), want)
				})
			}
		})
	}
}

// hostileBase is the lower layer under every layer attack: what an attack
// could try to reach, delete or replace.
func hostileBase() []imagetest.Entry {
	return []imagetest.Entry{
		imagetest.Dir("etc"), imagetest.File("etc/passwd", "image passwd\n"), imagetest.File("etc/shadow", "image shadow\n"),
		imagetest.Dir("d"), imagetest.File("d/keep", "keep\n"), imagetest.File("d/gone", "gone\n"),
		imagetest.File("x", "lower x\n"),
	}
}

// hostileBaseTree is the mount of hostileBase alone, edited by edits
// (path → content as hostileExpect reads it; "" removes the path, "<empty>"
// is an empty file).
func hostileBaseTree(edits map[string]string) map[string]hnode {
	m := map[string]string{
		"etc": "<dir>", "etc/passwd": "image passwd\n", "etc/shadow": "image shadow\n",
		"d": "<dir>", "d/keep": "keep\n", "d/gone": "gone\n", "x": "lower x\n",
	}
	for p, v := range edits {
		switch v {
		case "":
			delete(m, p)
		case "<empty>":
			m[p] = ""
		default:
			m[p] = v
		}
	}
	return hostileExpect(m)
}

// onBase is an image whose second layer holds entries, over hostileBase.
func onBase(entries ...imagetest.Entry) hostileSource { return onBaseLayers(entries) }

// onBaseLayers is an image of hostileBase and then layers: a docker-archive
// (the layers served in place) and an OCI archive (the layers gzipped).
func onBaseLayers(layers ...[]imagetest.Entry) hostileSource {
	build := func(comp tarindex.Compression, layout func(*testing.T, *imagetest.Built) []byte) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			specs := []imagetest.LayerSpec{{Tar: imagetest.LayerTar(t, hostileBase()), Comp: comp}}
			for _, entries := range layers {
				specs = append(specs, imagetest.LayerSpec{Tar: imagetest.LayerTar(t, entries), Comp: comp})
			}
			return layout(t, hostileBuilt(t, nil, specs...))
		}
	}
	return hostileSource{
		"docker":   build(tarindex.CompressionNone, hostileDocker),
		"oci-gzip": build(tarindex.CompressionGzip, hostileOCI),
	}
}

// alone is an image of the one layer of entries (and raw members after
// them, see imagetest.LayerTar), in both layouts as onBaseLayers.
func alone(entries []imagetest.Entry, raw ...[]byte) hostileSource {
	src := hostileSource{}
	for name, v := range map[string]struct {
		comp   tarindex.Compression
		layout func(*testing.T, *imagetest.Built) []byte
	}{"docker": {tarindex.CompressionNone, hostileDocker}, "oci-gzip": {tarindex.CompressionGzip, hostileOCI}} {
		src[name] = func(t *testing.T) []byte {
			return v.layout(t, hostileBuilt(t, nil, imagetest.LayerSpec{Tar: imagetest.LayerTar(t, entries, raw...), Comp: v.comp}))
		}
	}
	return src
}

// baseBuilt is the image of hostileBase alone.
func baseBuilt(t *testing.T, comp tarindex.Compression) *imagetest.Built {
	return hostileBuilt(t, nil, imagetest.LayerSpec{Tar: imagetest.LayerTar(t, hostileBase()), Comp: comp})
}

// legacyEdit is a docker-archive of hostileBase with its layout edited by
// edit, which gets the manifest.json entry to change (then written back).
func legacyEdit(edit func(t *testing.T, l *imagetest.Layout, e *imagetest.DockerEntry)) hostileSource {
	return one(func(t *testing.T) []byte {
		l := imagetest.Legacy(t, baseBuilt(t, tarindex.CompressionNone))
		var m []imagetest.DockerEntry
		require.NoError(t, json.Unmarshal(l.Files["manifest.json"].Body, &m))
		require.Len(t, m, 1)
		edit(t, l, &m[0])
		l.Add("manifest.json", imagetest.JSON(t, m))
		return l.Tar(t)
	})
}

// ociEdit is an OCI archive of b with its layout edited by edit.
func ociEdit(b func(t *testing.T) *imagetest.Built, edit func(t *testing.T, l *imagetest.Layout, b *imagetest.Built)) hostileSource {
	return one(func(t *testing.T) []byte {
		built := b(t)
		l := imagetest.OCI(t, false, built)
		edit(t, l, built)
		return l.Tar(t)
	})
}

func gzipBase(t *testing.T) *imagetest.Built { return baseBuilt(t, tarindex.CompressionGzip) }

// hostileIndex is an image index listing descs.
func hostileIndex(t *testing.T, descs ...ocispec.Descriptor) []byte {
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: descs}
	idx.SchemaVersion = 2
	return imagetest.JSON(t, idx)
}

// editManifest replaces b's manifest in the OCI layout l by an edited
// copy, which index.json then lists.
func editManifest(t *testing.T, l *imagetest.Layout, b *imagetest.Built, edit func(*ocispec.Manifest)) {
	t.Helper()
	var m ocispec.Manifest
	require.NoError(t, json.Unmarshal(b.Manifest, &m))
	edit(&m)
	mb := imagetest.JSON(t, m)
	l.DelBlob(b.ManifestDesc.Digest)
	l.Blob(mb)
	l.Add("index.json", hostileIndex(t, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(mb), Size: int64(len(mb))}))
}

// nestedIndexes is an OCI archive of hostileBase whose index.json leads to
// the image manifest through n nested image indexes.
func nestedIndexes(n int) hostileSource {
	return ociEdit(gzipBase, func(t *testing.T, l *imagetest.Layout, b *imagetest.Built) {
		d := b.ManifestDesc
		d.Platform = nil
		for i := 0; i < n; i++ {
			body := hostileIndex(t, d)
			l.Blob(body)
			d = indexDesc(body)
		}
		l.Add("index.json", hostileIndex(t, d))
	})
}

func indexDesc(b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

// sameInode requires that the paths (under mnt) are one inode with that
// many links.
func sameInode(links int, paths ...string) func(t *testing.T, mnt string) {
	return func(t *testing.T, mnt string) {
		var first unix.Stat_t
		for i, p := range paths {
			var st unix.Stat_t
			require.NoError(t, unix.Lstat(filepath.Join(mnt, p), &st), p)
			require.EqualValues(t, links, st.Nlink, "%s: link count", p)
			if i == 0 {
				first = st
			} else {
				require.Equal(t, first.Ino, st.Ino, "%s and %s are one hardlinked inode", paths[0], p)
			}
		}
	}
}

const tib = int64(1) << 40

// requireSparseTiB checks the 1 TiB sparse file of the sparse-1tib case:
// its size, its start, some of its hole and its end; on disk (onDisk), that
// it takes almost no space.
func requireSparseTiB(t *testing.T, p string, onDisk bool) {
	t.Helper()
	f, err := os.Open(p)
	require.NoError(t, err)
	defer f.Close()
	var st unix.Stat_t
	require.NoError(t, unix.Fstat(int(f.Fd()), &st))
	require.Equal(t, tib, st.Size, "size")
	if onDisk {
		require.Less(t, st.Blocks*512, int64(1<<20), "the extracted file is sparse on disk")
	}
	for _, c := range []struct {
		off  int64
		want string
	}{{0, "start"}, {tib / 2, strings.Repeat("\x00", 4096)}, {tib - 4096 - 3, strings.Repeat("\x00", 4096)}, {tib - 3, "end"}} {
		buf := make([]byte, len(c.want)+10)
		n, err := f.ReadAt(buf, c.off)
		if c.off+int64(len(buf)) > tib {
			require.ErrorIs(t, err, io.EOF)
		} else {
			require.NoError(t, err)
		}
		require.Equal(t, c.want, string(buf[:min(n, len(c.want))]), "content at %d", c.off)
	}
}

// lyingSparse is a PAX 0.1 sparse member of 200 bytes (10 at 0, 10 at
// 100) with the text old of its PAX records replaced by new, which must be
// as long (so that the record's length stays right).
func lyingSparse(t *testing.T, old, new string) []byte {
	t.Helper()
	require.Equal(t, len(old), len(new))
	m := imagetest.RawSparse("lies", 200, map[int64]string{0: "AAAAAAAAAA", 100: "BBBBBBBBBB"})
	require.Equal(t, 1, bytes.Count(m, []byte(old)), "the record %q", old)
	return bytes.Replace(m, []byte(old), []byte(new), 1)
}

// TestHostileAttacks: hand-built attacks, each in a layer (or the layout)
// of an otherwise valid image. Each case says what a correct tool does.
func TestHostileAttacks(t *testing.T) {
	requireFUSE(t)
	long253 := strings.Repeat("w", 253)
	long255 := strings.Repeat("a", 255)
	long4096 := strings.Repeat("b", 4096)
	deep := strings.Repeat("a/", 4096)
	deepTree := map[string]string{}
	for p := "a"; len(p) < len(deep); p += "/a" {
		deepTree[p] = "<dir>"
	}
	deepTree[deep+"bottom"] = "bottom\n"

	cases := []hostileCase{
		// Names. ".." that climbs out of the root is refused, naming the
		// member (DESIGN.md: unsafe names are normalised or rejected, never
		// followed; a layer that tries is hostile).
		{"dotdot-name", onBase(imagetest.File("../../etc/passwd", "pwned\n")),
			hostileWant{refuse: []string{"../../etc/passwd", "escapes the root|unsafe"}}},
		{"dotdot-inside-name", onBase(imagetest.File("d/../../../tmp/imgmount-hostile-escaped", "pwned\n")),
			hostileWant{refuse: []string{"imgmount-hostile-escaped", "escapes the root|unsafe"}}},
		// An absolute name is relative to the image's root, as GNU tar
		// (which strips the "/") and Docker extract it: it replaces the
		// image's own file and nothing of the host.
		{"absolute-names", onBase(
			imagetest.File("/etc/passwd", "layer passwd\n"),
			imagetest.File("/tmp/imgmount-hostile-escaped", "inside\n"),
			imagetest.File("//etc//./imgmount-hostile-x", "inside too\n")),
			hostileWant{tree: hostileBaseTree(map[string]string{
				"etc/passwd": "layer passwd\n", "tmp": "<dir>", "tmp/imgmount-hostile-escaped": "inside\n", "etc/imgmount-hostile-x": "inside too\n",
			})}},

		// A symlinked parent. Entries under a symlink to "/" or to "../.."
		// land where the link leads within the image's root (as umoci and
		// Docker extract them: ".." stops at the root), never on the host;
		// the links themselves are shown as stored.
		{"symlink-parent", onBase(
			imagetest.Symlink("evil", "/"), imagetest.File("evil/etc/imgmount-hostile-x", "via evil\n"),
			imagetest.Symlink("up", "../.."), imagetest.File("up/etc/imgmount-hostile-y", "via up\n"),
			imagetest.Symlink("d/up", "../../../.."), imagetest.File("d/up/x", "x via d/up\n")),
			hostileWant{tree: hostileBaseTree(map[string]string{
				"evil": "-> /", "up": "-> ../..", "d/up": "-> ../../../..",
				"etc/imgmount-hostile-x": "via evil\n", "etc/imgmount-hostile-y": "via up\n", "x": "x via d/up\n",
			})}},

		// The same with the links in one layer and the entries through
		// them in the next, with a whiteout and an opaque marker through
		// symlinked parents (they remove the image's etc/passwd and d's
		// children, nothing of the host's), and a hardlink through one.
		{"symlink-parent-lower-layer", onBaseLayers(
			[]imagetest.Entry{imagetest.Symlink("evil", "/"), imagetest.Symlink("up", "../..")},
			[]imagetest.Entry{
				imagetest.File("evil/etc/imgmount-hostile-x", "via evil\n"), imagetest.File("up/etc/imgmount-hostile-y", "via up\n"),
				imagetest.Whiteout("evil/etc/passwd"), imagetest.Opaque("up/d"),
				imagetest.Hardlink("h", "evil/etc/shadow"),
			}),
			hostileWant{tree: hostileBaseTree(map[string]string{
				"evil": "-> /", "up": "-> ../..", "etc/passwd": "", "d/keep": "", "d/gone": "", "h": "image shadow\n",
				"etc/imgmount-hostile-x": "via evil\n", "etc/imgmount-hostile-y": "via up\n",
			})}},

		// Hardlinks. A target is a path in the image: "/etc/shadow" is the
		// image's etc/shadow (one inode with the link), never the host's.
		{"hardlink-absolute", onBase(imagetest.Hardlink("stolen", "/etc/shadow")),
			hostileWant{tree: hostileBaseTree(map[string]string{"stolen": "image shadow\n"}),
				check: sameInode(2, "etc/shadow", "stolen")}},
		// A target the image lacks is an error naming the link: the layer
		// cannot be extracted (Docker fails it, GNU tar fails the member),
		// and the host's file must not stand in for it.
		{"hardlink-absolute-missing", onBase(imagetest.Hardlink("stolen", "/etc/gshadow")),
			hostileWant{refuse: []string{"stolen", "does not exist"}}},
		{"hardlink-dotdot", onBase(imagetest.Hardlink("stolen", "../../etc/shadow")),
			hostileWant{refuse: []string{"../../etc/shadow", "escapes the root|unsafe"}}},
		// Through symlinks: "evil/etc/shadow" with evil -> / is the image's
		// etc/shadow again (link(2) on an extracting host would follow evil
		// to the host's). A hardlink to a symlink is the symlink itself.
		{"hardlink-through-symlink", onBase(
			imagetest.Symlink("evil", "/"), imagetest.Hardlink("h1", "evil/etc/shadow"),
			imagetest.Symlink("up", "../.."), imagetest.Hardlink("h2", "up/etc/shadow"),
			imagetest.Symlink("ln", "/etc/shadow"), imagetest.Hardlink("h3", "ln")),
			hostileWant{tree: hostileBaseTree(map[string]string{
				"evil": "-> /", "up": "-> ../..", "ln": "-> /etc/shadow",
				"h1": "image shadow\n", "h2": "image shadow\n", "h3": "-> /etc/shadow",
			}), check: sameInode(3, "etc/shadow", "h1", "h2")}},

		// Whiteouts of "." and ".." (".wh..", ".wh...") and of "" (".wh.")
		// delete nothing, and no whiteout file is ever shown.
		{"whiteout-dots", onBase(
			imagetest.File(".wh...", ""), imagetest.File(".wh..", ""), imagetest.File(".wh.", ""),
			imagetest.File("d/.wh...", ""), imagetest.File("d/.wh..", "")),
			hostileWant{tree: hostileBaseTree(nil)}},
		// ".wh.../../x" is "x" once cleaned (the ".." undoes ".wh..."), as
		// containerd and umoci clean names before anything else: an empty
		// file x over the lower one; nothing is whited out.
		{"whiteout-dotdot-x", onBase(imagetest.File(".wh.../../x", "")),
			hostileWant{tree: hostileBaseTree(map[string]string{"x": "<empty>"})}},
		// One ".." more climbs out of the root: refused.
		{"whiteout-dotdot-escape", onBase(imagetest.File(".wh.../../../x", "")),
			hostileWant{refuse: []string{".wh.../../../x", "escapes the root|unsafe"}}},
		// An opaque marker at the root (anywhere in the layer, spelled
		// "./.wh..wh..opq") hides every lower entry and keeps its own layer's.
		{"whiteout-root-opaque", onBase(imagetest.File("new", "new\n"), imagetest.File("./.wh..wh..opq", "")),
			hostileWant{tree: hostileExpect(map[string]string{"new": "new\n"})}},

		// manifest.json. Member paths are inside the archive: ".." that
		// climbs out is refused; a leading "/" means the archive's root (as
		// docker load joins it under its own directory), so that image
		// mounts.
		{"manifest-layer-dotdot", legacyEdit(func(t *testing.T, l *imagetest.Layout, e *imagetest.DockerEntry) {
			e.Layers[0] = "../../" + e.Layers[0]
		}), hostileWant{refuse: []string{"layer 0", "escapes the root|unsafe"}}},
		{"manifest-layer-absolute", legacyEdit(func(t *testing.T, l *imagetest.Layout, e *imagetest.DockerEntry) {
			e.Layers[0] = "/" + e.Layers[0]
		}), hostileWant{tree: hostileBaseTree(nil)}},
		{"manifest-config-dotdot", legacyEdit(func(t *testing.T, l *imagetest.Layout, e *imagetest.DockerEntry) {
			e.Config = "../" + e.Config
		}), hostileWant{refuse: []string{"config", "escapes the root|unsafe"}}},
		{"manifest-config-absolute", legacyEdit(func(t *testing.T, l *imagetest.Layout, e *imagetest.DockerEntry) {
			e.Config = "/" + e.Config
		}), hostileWant{tree: hostileBaseTree(nil)}},
		// A member that is a symlink out of the archive is followed inside
		// the archive only: /etc/passwd is no member, so the layer (or
		// config) is missing; one that climbs out with ".." is refused; a
		// loop is an error, not a hang.
		{"layer-symlink-to-host", legacyEdit(func(t *testing.T, l *imagetest.Layout, e *imagetest.DockerEntry) {
			l.Put(imagetest.TarFile{Name: e.Layers[0], Link: "/etc/passwd"})
		}), hostileWant{refuse: []string{"layer 0", "not in the tarball"}, absent: []int{0}}},
		{"layer-hardlink-to-host", legacyEdit(func(t *testing.T, l *imagetest.Layout, e *imagetest.DockerEntry) {
			l.Put(imagetest.TarFile{Name: e.Layers[0], Hard: "/etc/passwd"})
		}), hostileWant{refuse: []string{"layer 0", "not in the tarball"}, absent: []int{0}}},
		{"layer-hardlink-dotdot", legacyEdit(func(t *testing.T, l *imagetest.Layout, e *imagetest.DockerEntry) {
			l.Put(imagetest.TarFile{Name: e.Layers[0], Hard: "../../etc/passwd"})
		}), hostileWant{refuse: []string{"../../etc/passwd", "escapes the root|unsafe"}}},
		{"layer-symlink-dotdot", legacyEdit(func(t *testing.T, l *imagetest.Layout, e *imagetest.DockerEntry) {
			l.Put(imagetest.TarFile{Name: e.Layers[0], Link: "../../../../../../etc/passwd"})
		}), hostileWant{refuse: []string{"layer 0", "escapes the root|unsafe"}}},
		{"config-symlink-to-host", legacyEdit(func(t *testing.T, l *imagetest.Layout, e *imagetest.DockerEntry) {
			l.Del(e.Config)
			e.Config = "config.json"
			l.Put(imagetest.TarFile{Name: e.Config, Link: "/etc/passwd"})
		}), hostileWant{refuse: []string{"config", "not in the tarball"}}},
		{"oci-config-symlink-to-host", ociEdit(gzipBase, func(t *testing.T, l *imagetest.Layout, b *imagetest.Built) {
			l.Put(imagetest.TarFile{Name: "blobs/sha256/" + b.ConfigDigest.Encoded(), Link: "/etc/passwd"})
		}), hostileWant{refuse: []string{"config", "not in the tarball"}}},
		{"layer-symlink-loop", legacyEdit(func(t *testing.T, l *imagetest.Layout, e *imagetest.DockerEntry) {
			l.Put(imagetest.TarFile{Name: e.Layers[0], Link: "../loop/layer.tar"})
			l.Put(imagetest.TarFile{Name: "loop/layer.tar", Link: "../" + e.Layers[0]})
		}), hostileWant{refuse: []string{"layer 0", "too many levels of links"}}},
		{"layer-symlink-self", legacyEdit(func(t *testing.T, l *imagetest.Layout, e *imagetest.DockerEntry) {
			l.Put(imagetest.TarFile{Name: e.Layers[0], Link: "layer.tar"})
		}), hostileWant{refuse: []string{"layer 0", "too many levels of links"}}},

		// index.json. No blob can list its own digest (that would be a
		// sha256 fixed point), so a self-referencing index is a blob stored
		// under a digest it does not have, listing that digest: refused as
		// a blob that does not match its name, not walked forever.
		{"index-self-reference", ociEdit(gzipBase, func(t *testing.T, l *imagetest.Layout, b *imagetest.Built) {
			self := digest.FromString("self")
			body := hostileIndex(t, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: self, Size: 1000}, b.ManifestDesc)
			l.Add("blobs/sha256/"+self.Encoded(), body)
			l.Add("index.json", hostileIndex(t, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageIndex, Digest: self, Size: int64(len(body))}))
		}), hostileWant{refuse: []string{digest.FromString("self").Encoded()[:12], "digest"}}},
		// 1,000 nested indexes, each valid: refused at a depth limit with
		// a clear error, without recursing 1,000 deep. The limit is 8
		// (README, Hostile images): 8 nested indexes mount, 9 do not.
		{"index-nested-1000", nestedIndexes(1000), hostileWant{refuse: []string{"nested too deeply"}}},
		{"index-nested-9", nestedIndexes(9), hostileWant{refuse: []string{"nested too deeply"}}},
		{"index-nested-8", nestedIndexes(8), hostileWant{tree: hostileBaseTree(nil)}},
		// 10,000 layers, all one blob (a valid image, if an absurd one):
		// mounted, showing that layer's tree, within the timeout.
		{"layers-10000", one(func(t *testing.T) []byte {
			layer := imagetest.LayerSpec{Tar: imagetest.LayerTar(t, hostileBase())}
			layers := make([]imagetest.LayerSpec, 10000)
			for i := range layers {
				layers[i] = layer
			}
			return hostileOCI(t, hostileBuilt(t, nil, layers...))
		}), hostileWant{tree: hostileBaseTree(nil)}},
		// A config whose 100,000 diff_ids do not match the manifest's one
		// layer: refused, saying so.
		{"config-100000-diffids", one(func(t *testing.T) []byte {
			b := hostileBuilt(t, func(c *ocispec.Image) {
				for i := len(c.RootFS.DiffIDs); i < 100000; i++ {
					c.RootFS.DiffIDs = append(c.RootFS.DiffIDs, digest.FromString(fmt.Sprint(i)))
				}
			}, imagetest.LayerSpec{Tar: imagetest.LayerTar(t, hostileBase()), Comp: tarindex.CompressionGzip})
			return hostileOCI(t, b)
		}), hostileWant{refuse: []string{"100000 diff_ids"}}},

		// 4,096 nested directories (paths of 8 KiB, past PATH_MAX): the
		// mount shows them all and reads the file at the bottom. GNU tar
		// cannot extract paths that long (the kernel refuses them), so the
		// export is read with archive/tar.
		{"deep-4096", one(func(t *testing.T) []byte {
			return hostileDocker(t, hostileBuilt(t, nil, imagetest.LayerSpec{Tar: imagetest.LayerTar(t, []imagetest.Entry{imagetest.File(deep+"bottom", "bottom\n")})}))
		}), hostileWant{tree: hostileExpect(deepTree), tarFails: "File name too long"}},
		// A 255-byte name is shown; a 4,096-byte one cannot be on any Linux
		// filesystem (NAME_MAX): it is left out with a warning naming it
		// (from mount, inspect and export alike) and its directory lists
		// the rest.
		{"long-names", onBase(
			imagetest.Dir("names"), imagetest.File("names/ok", "ok\n"),
			imagetest.File("names/"+long255, "255\n"), imagetest.File("names/"+long4096, "4096\n")),
			hostileWant{
				tree: hostileBaseTree(map[string]string{"names": "<dir>", "names/ok": "ok\n", "names/" + long255: "255\n"}),
				warn: []string{"warning", "names/" + long4096[:60], "left out"},
				check: func(t *testing.T, mnt string) {
					ents, err := os.ReadDir(filepath.Join(mnt, "names"))
					require.NoError(t, err)
					require.Len(t, ents, 2)
					require.Equal(t, long255, ents[0].Name())
					require.Equal(t, "ok", ents[1].Name())
				}}},

		// A whiteout of a 253-byte name is a 257-byte entry, which real
		// layers hold (containerd and Docker write ".wh." + the name
		// whatever its length): it deletes the lower file, as containerd
		// and umoci apply it, and is no name to leave out.
		{"whiteout-long-name", onBaseLayers(
			[]imagetest.Entry{imagetest.File("d/"+long253, "253\n")},
			[]imagetest.Entry{imagetest.Whiteout("d/" + long253)}),
			hostileWant{tree: hostileBaseTree(nil)}},
		// Symlink targets: 4,095 bytes is the most readlink gives, and is
		// shown whole; a 4,096-byte one is left out with a warning naming
		// it, and its directory lists the rest.
		{"long-symlink-targets", onBase(
			imagetest.Dir("links"), imagetest.File("links/ok", "ok\n"),
			imagetest.Symlink("links/t4095", strings.Repeat("c", 4095)), imagetest.Symlink("links/t4096", strings.Repeat("c", 4096))),
			hostileWant{
				tree: hostileBaseTree(map[string]string{"links": "<dir>", "links/ok": "ok\n", "links/t4095": "-> " + strings.Repeat("c", 4095)}),
				warn: []string{"warning", "links/t4096", "left out"},
			}},
		// Device nodes and a setuid-root file: shown as what they are, but
		// the mount is nosuid and nodev, so a device node in an image
		// cannot open the host's device (opening one fails).
		{"devices-setuid", onBase(
			imagetest.Dir("dev"),
			imagetest.File("dev/null", "").With(func(h *tar.Header) { h.Typeflag, h.Devmajor, h.Devminor, h.Mode = tar.TypeChar, 1, 3, 0o666 }),
			imagetest.FileMode("suid", "#!/bin/sh\nid\n", 0o4755)),
			hostileWant{
				tree: hostileBaseTree(map[string]string{"dev": "<dir>", "dev/null": "<char>", "suid": "#!/bin/sh\nid\n"}),
				check: func(t *testing.T, mnt string) {
					mi, ok := mountAt(mnt)
					require.True(t, ok)
					opts := strings.Split(mi.options, ",")
					require.Contains(t, opts, "nosuid", "mount options %s", mi.options)
					require.Contains(t, opts, "nodev", "mount options %s", mi.options)
					fi, err := os.Stat(filepath.Join(mnt, "suid"))
					require.NoError(t, err)
					require.Equal(t, fs.ModeSetuid, fi.Mode()&fs.ModeSetuid, "the setuid bit is shown")
					f, err := os.Open(filepath.Join(mnt, "dev/null"))
					if err == nil {
						f.Close()
					}
					require.ErrorIs(t, err, fs.ErrPermission, "opening a device node on a nodev mount")
				}}},

		// A 1 TiB sparse file (5 bytes at the start, 3 at the end): mounted
		// without reading or writing a terabyte, its end readable; exported
		// as a sparse member (a few blocks), which GNU tar extracts as a
		// sparse file.
		{"sparse-1tib", alone([]imagetest.Entry{imagetest.Dir("big")},
			imagetest.RawSparse("big/tib", tib, map[int64]string{0: "start", tib - 3: "end"}),
		), hostileWant{
			check: func(t *testing.T, mnt string) {
				requireSparseTiB(t, filepath.Join(mnt, "big/tib"), false)
			},
			checkExport: func(t *testing.T, out, x string) {
				fi, err := os.Stat(out)
				require.NoError(t, err)
				require.Less(t, fi.Size(), int64(1<<20), "the export of a 1 TiB sparse file is written sparse")
				requireSparseTiB(t, filepath.Join(x, "big/tib"), true)
			},
		}},

		// Digests are names in the cache directory and the layout: one that
		// is not a digest ("sha256:../../..") is refused before it names
		// anything, in the config's diff_ids and in the manifest alike.
		{"diffid-path", one(func(t *testing.T) []byte {
			return hostileOCI(t, hostileBuilt(t, func(c *ocispec.Image) {
				c.RootFS.DiffIDs[0] = "sha256:../../../../tmp/imgmount-hostile-escaped"
			}, imagetest.LayerSpec{Tar: imagetest.LayerTar(t, hostileBase()), Comp: tarindex.CompressionGzip}))
		}), hostileWant{refuse: []string{"diff_ids[0]"}}},
		{"layer-digest-path", ociEdit(gzipBase, func(t *testing.T, l *imagetest.Layout, b *imagetest.Built) {
			editManifest(t, l, b, func(m *ocispec.Manifest) { m.Layers[0].Digest = "sha256:../../../../tmp/imgmount-hostile-escaped" })
		}), hostileWant{refuse: []string{"layers[0]", "digest"}}},

		// Sparse maps that lie: fragments out of order or overlapping, or
		// past the file's size. Reading them would serve some bytes twice,
		// or bytes of the next member; archive/tar refuses them, and so must
		// a correct tool, clearly.
		{"sparse-map-overlapping", alone(nil, lyingSparse(t, "GNU.sparse.map=0,10,100,10", "GNU.sparse.map=0,10,005,10")),
			hostileWant{refuse: []string{"invalid tar header|sparse"}}},
		{"sparse-map-unordered", alone(nil, lyingSparse(t, "GNU.sparse.map=0,10,100,10", "GNU.sparse.map=100,10,0,10")),
			hostileWant{refuse: []string{"invalid tar header|sparse"}}},
		{"sparse-map-past-size", alone(nil, lyingSparse(t, "GNU.sparse.size=200", "GNU.sparse.size=050")),
			hostileWant{refuse: []string{"invalid tar header|sparse"}}},

		// Truncated and mismatching blobs: refused, saying what is wrong.
		// A layer cut short while the manifest keeps its size:
		{"layer-truncated", ociEdit(gzipBase, func(t *testing.T, l *imagetest.Layout, b *imagetest.Built) {
			l.Add("blobs/sha256/"+b.BlobDigests[0].Encoded(), b.Blobs[0][:len(b.Blobs[0])/2])
		}), hostileWant{refuse: []string{"layer 0", "truncated"}}},
		// ...and with a manifest that describes the cut blob: the gzip
		// stream ends early.
		{"layer-truncated-described", ociEdit(gzipBase, func(t *testing.T, l *imagetest.Layout, b *imagetest.Built) {
			cut := b.Blobs[0][:len(b.Blobs[0])/2]
			l.DelBlob(b.BlobDigests[0])
			l.Blob(cut)
			editManifest(t, l, b, func(m *ocispec.Manifest) {
				m.Layers[0].Digest, m.Layers[0].Size = digest.FromBytes(cut), int64(len(cut))
			})
		}), hostileWant{refuse: []string{"layer 0", "unexpected eof|truncated|corrupt"}}},
		// An uncompressed layer.tar cut in the middle of a file:
		{"legacy-layer-truncated", legacyEdit(func(t *testing.T, l *imagetest.Layout, e *imagetest.DockerEntry) {
			body := l.Files[e.Layers[0]].Body
			l.Add(e.Layers[0], body[:1536+3])
		}), hostileWant{refuse: []string{"layer 0", "truncated|unexpected eof|diff_id"}}},
		// A config blob under another config's digest (OCI), and a legacy
		// "<digest>.json" config holding another config:
		{"config-under-other-digest", ociEdit(gzipBase, func(t *testing.T, l *imagetest.Layout, b *imagetest.Built) {
			other := hostileBuilt(t, nil, imagetest.LayerSpec{Tar: imagetest.LayerTar(t, []imagetest.Entry{imagetest.File("other", "other\n")})})
			l.Add("blobs/sha256/"+b.ConfigDigest.Encoded(), other.Config)
		}), hostileWant{refuse: []string{"digest"}}},
		{"legacy-config-under-other-digest", legacyEdit(func(t *testing.T, l *imagetest.Layout, e *imagetest.DockerEntry) {
			other := hostileBuilt(t, nil, imagetest.LayerSpec{Tar: imagetest.LayerTar(t, []imagetest.Entry{imagetest.File("other", "other\n")})})
			l.Add(e.Config, other.Config)
		}), hostileWant{refuse: []string{"digest"}}},
		// An uncompressed layer blob holding another layer's tar:
		{"layer-under-other-digest", ociEdit(func(t *testing.T) *imagetest.Built { return baseBuilt(t, tarindex.CompressionNone) },
			func(t *testing.T, l *imagetest.Layout, b *imagetest.Built) {
				swapped := imagetest.LayerTar(t, []imagetest.Entry{imagetest.File("etc/passwd", "swapped\n")})
				require.Less(t, len(swapped), len(b.Blobs[0]))
				swapped = append(swapped, make([]byte, len(b.Blobs[0])-len(swapped))...) // the size the manifest says
				l.Add("blobs/sha256/"+b.BlobDigests[0].Encoded(), swapped)
			}), hostileWant{refuse: []string{"layer 0", "does not match|diff_id"}}},

		// Duplicate members in the outer tar: tools disagree on which copy
		// counts, so a correct tool refuses, naming the member.
		{"duplicate-manifest", one(func(t *testing.T) []byte {
			l := imagetest.Legacy(t, baseBuilt(t, tarindex.CompressionNone))
			var files []imagetest.TarFile
			for _, n := range l.Names {
				files = append(files, l.Files[n])
			}
			files = append(files, imagetest.TarFile{Name: "manifest.json", Body: []byte(`[{"Config":"other.json","Layers":[]}]`)})
			return imagetest.Tar(t, files...)
		}), hostileWant{refuse: []string{`"manifest.json"`, "more than once"}}},
		// "./manifest.json" is "manifest.json" to every extractor: a
		// duplicate too.
		{"duplicate-after-cleaning", one(func(t *testing.T) []byte {
			l := imagetest.Legacy(t, baseBuilt(t, tarindex.CompressionNone))
			var files []imagetest.TarFile
			for _, n := range l.Names {
				files = append(files, l.Files[n])
			}
			files = append(files, imagetest.TarFile{Name: "./manifest.json", Body: []byte(`[{"Config":"other.json","Layers":[]}]`)})
			return imagetest.Tar(t, files...)
		}), hostileWant{refuse: []string{"manifest.json", "more than once"}}},
		{"duplicate-blob", one(func(t *testing.T) []byte {
			b := gzipBase(t)
			l := imagetest.OCI(t, false, b)
			var files []imagetest.TarFile
			for _, n := range l.Names {
				files = append(files, l.Files[n])
			}
			files = append(files, imagetest.TarFile{Name: "blobs/sha256/" + b.BlobDigests[0].Encoded(), Body: []byte("another layer")})
			return imagetest.Tar(t, files...)
		}), hostileWant{refuse: []string{"blobs/sha256/", "more than once"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if f, ok := c.image[""]; ok {
				runHostile(t, f(t), c.want)
				return
			}
			variants := make([]string, 0, len(c.image))
			for v := range c.image {
				variants = append(variants, v)
			}
			sort.Strings(variants)
			for _, v := range variants {
				t.Run(v, func(t *testing.T) { runHostile(t, c.image[v](t), c.want) })
			}
		})
	}
}
