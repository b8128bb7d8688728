package cow

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/overlay/union"
	"github.com/imgmount/imgmount/tarindex"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The upper-directory fuzzer builds an arbitrary upper directory (see
// upperdir.go) from its input, over a small image, as a damaged or hostile
// one could be: whiteouts, opaque markers and AUFS names, copy-up
// temporaries, origin, child-origin, lower, root and stat-override xattrs
// with arbitrary values, every file type, hard links, symlinks out of it.
// Then it opens the view on it, walks it, makes edits through it, and
// writes it as a layer. Whatever the input: no panic and no hang; nothing
// outside the upper directory read into the layer or changed; every name
// the view shows is a plain name; the layer is a tar archive/tar reads,
// with clean names inside the root, hardlinks to earlier names, none of
// imgmount's bookkeeping, and the union builds over it.

// upperFuzzNames are the names the fuzzed upper directory's paths are made
// of: a few the image has, and every name the format gives a meaning.
var upperFuzzNames = []string{
	"a", "etc", "d", "ln", "p", "hosts", "null", "new",
	".wh.a", ".wh.etc", ".wh.d", ".wh.hosts", ".wh.ln", ".wh.", ".wh..", ".wh...",
	union.OpaqueMarker, union.WhiteoutMeta, ".wh..wh.plnk", tempPrefix + "1", tempPrefix,
	"é", strings.Repeat("n", 255), ".wh." + strings.Repeat("n", 251),
}

// upperFuzzTargets are symlink targets: inside, out of the upper directory
// (to a decoy beside it), absolute (to a host path that must not appear:
// none that exists, since the test runs as root).
var upperFuzzTargets = []string{
	"a", "etc", "etc/hosts", ".", "..", "../outside", "../outside/secret", "../outside/../upper/a",
	upperFuzzEscaped, upperFuzzEscaped + "/x", strings.Repeat("x/", 2000),
}

// upperFuzzEscaped is a host path that following an absolute symlink of
// the upper directory would make.
const upperFuzzEscaped = "/imgmount-fuzz-escaped"

// upperFuzzLinked is the content of the decoy a file of the upper
// directory may be hard-linked to: no layer may hold it.
const upperFuzzLinked = "linked secret, outside the upper directory\n"

// upperFuzzXattrs are xattr names set on upper entries.
var upperFuzzXattrs = []string{
	originXattr, lowerXattr, rootChangedXattr, StatXattr, XattrPrefix + "trusted.x", XattrPrefix + originXattr,
	XattrPrefix, "user.note", "user.imgmount.other", "security.selinux", "trusted.overlay.opaque",
	"child", // childOriginKey of the entry's own name, set on its directory
}

// upperFuzzValues are xattr values (besides bytes of the input).
var upperFuzzValues = []string{
	"", "0", "1", "2", "3", "7", "18446744073709551615", "-1", "1:", ":1", "2:999999",
	"0:0:0644", "0:0:4755:file", "5:5:0755:dir", "0:0:0666:char:1:3", "0:0:0660:block:8:0",
	"0:0:0644:fifo", "0:0:0777:symlink", "0:0:0644:socket", "1:2:3:4:5:6", "x",
}

// upperFuzzInput reads the fuzz input a byte at a time, zeros once used up.
type upperFuzzInput struct{ b []byte }

func (in *upperFuzzInput) next() byte {
	if len(in.b) == 0 {
		return 0
	}
	c := in.b[0]
	in.b = in.b[1:]
	return c
}

func (in *upperFuzzInput) pick(list []string) string { return list[int(in.next())%len(list)] }

// path is one to three names.
func (in *upperFuzzInput) path() []string {
	n := 1 + int(in.next())%3
	p := make([]string, n)
	for i := range p {
		p[i] = in.pick(upperFuzzNames)
	}
	return p
}

// upperFuzzImage is the image under the fuzzed upper directory.
func upperFuzzImage(f *testing.F) *archive.Image {
	return imagetest.Layers(f, []imagetest.Entry{
		imagetest.Dir("etc"), imagetest.File("etc/hosts", "hosts\n"), imagetest.File("etc/a", "a\n"), imagetest.Hardlink("etc/a2", "etc/a"),
		imagetest.Dir("d"), imagetest.Dir("d/e"), imagetest.File("d/e/f", "deep\n"), imagetest.File("a", "lower a\n"),
		imagetest.Symlink("ln", "etc/a"), imagetest.Fifo("p"),
		imagetest.File("null", "").With(func(h *tar.Header) { h.Typeflag, h.Devmajor, h.Devminor = tar.TypeChar, 1, 3 }),
	})
}

// openBeneath opens the directory of names below dirfd without following
// symlinks, making missing ones: the fuzzer's own writes stay inside the
// upper directory too. ok is false where a name is not a directory.
func openBeneath(dirfd int, names []string) (int, bool) {
	fd, err := unix.Openat(dirfd, ".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, false
	}
	for _, n := range names {
		_ = unix.Mkdirat(fd, n, 0o755)
		next, err := unix.Openat(fd, n, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return -1, false
		}
		fd = next
	}
	return fd, true
}

// buildFuzzUpper makes the upper directory dir from the input: each step
// is a kind byte, a path and what the kind needs. Steps that cannot be
// done (a parent that is a file) are skipped.
func buildFuzzUpper(in *upperFuzzInput, root int, lowerKey string) {
	var files [][]string // regular files made, for hard links
	for step := 0; step < 32 && len(in.b) > 0; step++ {
		kind := in.next()
		p := in.path()
		if kind%12 == 11 { // xattrs of the upper directory itself
			p = nil
		}
		var parent []string
		name := "."
		if len(p) > 0 {
			parent, name = p[:len(p)-1], p[len(p)-1]
		}
		dirfd, ok := openBeneath(root, parent)
		if !ok {
			continue
		}
		switch kind % 12 {
		case 0, 1: // a regular file
			fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
			if err == nil {
				_, _ = unix.Write(fd, bytes.Repeat([]byte{'c'}, int(in.next())%5*100))
				unix.Close(fd)
				files = append(files, p)
			}
		case 2: // a directory
			_ = unix.Mkdirat(dirfd, name, 0o755)
		case 3: // a symlink
			_ = unix.Symlinkat(in.pick(upperFuzzTargets), dirfd, name)
		case 4: // a hard link to a file made before, or to the decoy beside the upper directory
			if c := in.next(); c%4 == 0 {
				_ = unix.Linkat(root, "../outside/linked", dirfd, name, 0)
			} else if len(files) > 0 {
				from := files[int(c)%len(files)]
				if ffd, ok := openBeneath(root, from[:len(from)-1]); ok {
					_ = unix.Linkat(ffd, from[len(from)-1], dirfd, name, 0)
					unix.Close(ffd)
				}
			}
		case 5: // a fifo (under a whiteout's name too: TestWhiteoutOverFifo)
			_ = unix.Mkfifoat(dirfd, name, 0o644)
		case 6: // a device (root only): null, zero or full, which edits can write harmlessly
			_ = unix.Mknodat(dirfd, name, unix.S_IFCHR|0o644, int(unix.Mkdev(1, []uint32{3, 5, 7}[in.next()%3])))
		case 7: // a socket
			_ = unix.Mknodat(dirfd, name, unix.S_IFSOCK|0o644, 0)
		case 8: // a mode (fchmodat follows symlinks: never on one)
			var st unix.Stat_t
			mode := uint32(in.next())<<4 | uint32(in.next())
			if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT != unix.S_IFLNK {
				_ = unix.Fchmodat(dirfd, name, mode&0o7777, 0)
			}
		default: // an xattr
			key := in.pick(upperFuzzXattrs)
			if key == "child" {
				if len(p) == 0 {
					break
				}
				key, name = childOriginKey(name), "."
			}
			var v string
			switch c := in.next(); {
			case key == lowerXattr && c%2 == 0:
				v = lowerKey
			case c < 0x80:
				v = upperFuzzValues[int(c)%len(upperFuzzValues)]
			default:
				v = string(in.b[:min(len(in.b), int(c-0x80)%40)])
				in.b = in.b[len(v):]
			}
			if key == originXattr && strings.HasPrefix(v, "2:") {
				v = "2" // a child origin's ORIGIN:INO format is not this one's
			}
			_ = unix.Lsetxattr(procPath(dirfd, name), key, []byte(v), 0)
		}
		unix.Close(dirfd)
	}
}

// boxState describes every path under dir but the upper directory and
// the hard-linked decoy (which the view writes through its link, as
// overlayfs would): type, mode, size, content, link target.
func boxState(t *testing.T, dir string) map[string]string {
	m := map[string]string{}
	require.NoError(t, filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		switch filepath.Base(p) {
		case "upper":
			return filepath.SkipDir
		case "linked":
			return nil
		}
		s := fi.Mode().String() + " " + strconv.FormatInt(fi.Size(), 10)
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			s += " " + string(b)
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			l, _ := os.Readlink(p)
			s += " -> " + l
		}
		m[p] = s
		return nil
	}))
	return m
}

// walkView lists the view from dir down, reads what it shows, and checks
// the names it shows; it returns the paths seen.
func walkView(t *testing.T, v *View, dir string, depth int, seen *[]string) {
	ents, err := v.ReadDir(dir)
	if err != nil || depth > 8 {
		return
	}
	for _, e := range ents {
		require.NotContains(t, []string{"", ".", ".."}, e.Name, "in %q", dir)
		require.NotContains(t, e.Name, "/", "in %q", dir)
		require.False(t, strings.HasPrefix(e.Name, union.WhiteoutPrefix), "the view shows %q in %q: a whiteout or bookkeeping name", e.Name, dir)
		p := union.Join(dir, e.Name)
		*seen = append(*seen, p)
		if _, err := v.Lookup(p); err != nil {
			continue // changed meanwhile, or refused: no panic is what counts
		}
		switch e.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			walkView(t, v, p, depth+1, seen)
		case unix.S_IFREG:
			if f, err := v.Open(p, unix.O_RDONLY); err == nil {
				_, _ = f.ReadAt(make([]byte, 512), 0)
				f.Close()
			}
		case unix.S_IFLNK:
			_, _ = v.Readlink(p)
		}
	}
}

// editView makes edits through the view on paths of the walk and of the
// input: copy-up by chmod and xattr, creation under them, removal, rename,
// link. Errors are answers; only panics and escapes count.
func editView(v *View, in *upperFuzzInput, seen []string) {
	paths := append([]string{}, seen[:min(len(seen), 12)]...)
	for range 6 {
		paths = append(paths, strings.Join(in.path(), "/"))
	}
	mode, uid := uint32(0o640), uint32(7)
	for i, p := range paths {
		switch (int(in.next()) + i) % 9 {
		case 0:
			_, _ = v.Setattr(p, nil, SetAttr{Mode: &mode})
		case 1:
			_, _ = v.Setattr(p, nil, SetAttr{UID: &uid})
		case 2:
			_ = v.Setxattr(p, nil, "user.edit", []byte("v"), 0)
		case 3:
			if f, _, err := v.Create(union.Join(p, "new-file"), unix.O_RDWR, 0o644, Owner{}); err == nil {
				_, _ = f.WriteAt([]byte("new"), 0)
				f.Close()
			}
		case 4:
			_, _ = v.Mkdir(union.Join(p, "new-dir"), 0o755, Owner{})
		case 5:
			_ = v.Unlink(p)
		case 6:
			_ = v.Rmdir(p)
		case 7:
			_ = v.Rename(p, paths[(i+1)%len(paths)], 0)
		case 8:
			if f, err := v.Open(p, unix.O_RDWR); err == nil {
				_, _ = f.WriteAt([]byte("written"), 0)
				f.Close()
			}
			_, _ = v.Link(p, p+"-link")
		}
	}
}

// checkUpperLayer writes the upper directory dir as a layer and checks it;
// it returns the layer, nil if the writer refused the directory.
func checkUpperLayer(t *testing.T, dir string) []byte {
	var buf bytes.Buffer
	n, err := WriteUpperLayer(&buf, dir, func(string) {})
	if err != nil {
		require.Contains(t, err.Error(), dir, "errors name the upper directory")
		return nil
	}
	tr := tar.NewReader(bytes.NewReader(buf.Bytes()))
	names := map[string]bool{}
	count := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err, "archive/tar reads the layer")
		count++
		name := strings.TrimSuffix(h.Name, "/")
		if name != "." {
			require.False(t, path.IsAbs(name), "%q: absolute", h.Name)
			require.Equal(t, path.Clean(name), name, "%q: not clean", h.Name)
			require.False(t, name == ".." || strings.HasPrefix(name, "../"), "%q: outside the root", h.Name)
			base := path.Base(name)
			require.False(t, strings.HasPrefix(base, union.WhiteoutMeta) && base != union.OpaqueMarker, "%q: bookkeeping in the layer", h.Name)
		}
		for k := range h.PAXRecords {
			require.False(t, strings.HasPrefix(k, "SCHILY.xattr."+privatePrefix), "%q: xattr %s in the layer", h.Name, k)
		}
		if h.Typeflag == tar.TypeLink {
			require.True(t, names[h.Linkname], "%q: hard link to %q, no earlier entry", h.Name, h.Linkname)
		}
		names[h.Name] = true
		body, err := io.ReadAll(tr)
		require.NoError(t, err)
		require.False(t, bytes.Contains(body, []byte(upperFuzzLinked[:20])), "%q: the content of a file outside the upper directory", h.Name)
	}
	require.Equal(t, n, count, "entries written")
	return buf.Bytes()
}

// Step kinds of buildFuzzUpper, for the seeds.
const (
	stepFile    = 0
	stepDir     = 2
	stepSymlink = 3
	stepLink    = 4
	stepFifo    = 5
	stepDevice  = 6
	stepSocket  = 7
	stepChmod   = 8
	stepXattr   = 9
	stepRoot    = 11 // an xattr of the upper directory itself
)

// upperStep encodes one step of buildFuzzUpper: kind, the path p (names of
// upperFuzzNames) and args as the kind reads them.
func upperStep(kind byte, p string, args ...byte) []byte {
	names := strings.Split(p, "/")
	b := []byte{kind, byte(len(names) - 1)}
	for _, n := range names {
		i := indexOf(upperFuzzNames, n)
		b = append(b, byte(i))
	}
	return append(b, args...)
}

// xattrStep sets the xattr key (of upperFuzzXattrs) to value (of
// upperFuzzValues, or the lower key if "LOWER") on p, or on the upper
// directory itself (kind stepRoot).
func xattrStep(kind byte, p, key, value string) []byte {
	v := byte(0) // the lower key
	if value != "LOWER" {
		v = byte(indexOf(upperFuzzValues, value))
		if key == lowerXattr && v%2 == 0 {
			v += byte(len(upperFuzzValues)) // the same value, odd
		}
	}
	return upperStep(kind, p, byte(indexOf(upperFuzzXattrs, key)), v)
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	panic("not in the list: " + s)
}

// upperFuzzSeeds are upper directories as a mount leaves them, and as
// crashes and hostile hands could.
func upperFuzzSeeds() [][]byte {
	target := func(s string) byte { return byte(indexOf(upperFuzzTargets, s)) }
	var seeds [][]byte
	for _, steps := range [][][]byte{
		nil,
		// Over the lower key: etc with a whiteout of hosts and a new
		// file; d opaque with a new file; a copied up, with its origin; a
		// copy-up's temporary left by a crash; a symlink out.
		{
			xattrStep(stepRoot, "a", lowerXattr, "LOWER"),
			upperStep(stepDir, "etc"), upperStep(stepFile, "etc/.wh.hosts", 0), upperStep(stepFile, "etc/new", 1),
			upperStep(stepDir, "d"), upperStep(stepFile, "d/"+union.OpaqueMarker, 0), upperStep(stepFile, "d/new", 2),
			upperStep(stepFile, "a", 3), xattrStep(stepXattr, "a", originXattr, "7"),
			upperStep(stepFile, "etc/"+tempPrefix+"1", 1),
			upperStep(stepSymlink, "ln", target("../outside/secret")),
		},
		// A fifo and a device copied up, their origins on the directory;
		// a regular file standing for a device (an unprivileged mount's),
		// another whose override says it is a directory.
		{
			xattrStep(stepRoot, "a", lowerXattr, "LOWER"),
			upperStep(stepFifo, "p"), xattrStep(stepXattr, "p", "child", "2:999999"),
			upperStep(stepDevice, "null", 0), xattrStep(stepXattr, "null", "child", "3"),
			upperStep(stepFile, "etc/a", 0), xattrStep(stepXattr, "etc/a", StatXattr, "0:0:0666:char:1:3"),
			upperStep(stepFile, "d", 0), xattrStep(stepXattr, "d", StatXattr, "5:5:0755:dir"),
		},
		// Hard links: across directories, one named as a whiteout, one to
		// a file outside the upper directory.
		{
			upperStep(stepDir, "etc"), upperStep(stepFile, "etc/a", 1),
			upperStep(stepLink, "a", 1), upperStep(stepLink, "etc/.wh.hosts", 1), upperStep(stepLink, "new", 0),
		},
		// The root changed, with an origin, over other layers; an origin
		// on etc; xattrs kept for namespaces the mount cannot write.
		{
			xattrStep(stepRoot, "a", rootChangedXattr, ""), xattrStep(stepRoot, "a", originXattr, "1"),
			xattrStep(stepRoot, "a", lowerXattr, "x"),
			upperStep(stepDir, "etc"), xattrStep(stepXattr, "etc", originXattr, "2"),
			xattrStep(stepXattr, "etc", XattrPrefix+"trusted.x", "1"), xattrStep(stepXattr, "etc", "security.selinux", "x"),
		},
		// A socket, AUFS names, a 255-byte name and its whiteout, symlinks
		// to the root, absolute and long.
		{
			upperStep(stepSocket, "new"), upperStep(stepFile, ".wh..wh.plnk", 0), upperStep(stepFile, union.WhiteoutMeta, 0),
			upperStep(stepDir, strings.Repeat("n", 255)), upperStep(stepFile, ".wh."+strings.Repeat("n", 251), 0),
			upperStep(stepSymlink, "etc", target("..")), upperStep(stepSymlink, "d", target(upperFuzzEscaped)),
			upperStep(stepSymlink, "p", target(strings.Repeat("x/", 2000))), upperStep(stepChmod, "new", 0, 0),
		},
	} {
		seeds = append(seeds, bytes.Join(steps, nil))
	}
	return seeds
}

// FuzzUpperDir: see the top of this file.
func FuzzUpperDir(f *testing.F) {
	img := upperFuzzImage(f)
	for _, seed := range upperFuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		defer imagetest.Watchdog(20 * time.Second)()
		box := t.TempDir()
		upper := filepath.Join(box, "upper")
		require.NoError(t, os.Mkdir(upper, 0o755))
		require.NoError(t, os.Mkdir(filepath.Join(box, "outside"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(box, "outside", "secret"), []byte("secret\n"), 0o600))
		require.NoError(t, os.WriteFile(filepath.Join(box, "outside", "linked"), []byte(upperFuzzLinked), 0o600))
		if err := unix.Lsetxattr(upper, "user.imgmount.test", []byte("x"), 0); err != nil {
			t.Skipf("no user xattrs where the fuzzer works (%s): %v", box, err)
		}
		_ = unix.Lremovexattr(upper, "user.imgmount.test")
		tree, err := union.BuildUnion(img)
		require.NoError(t, err)

		in := &upperFuzzInput{b: data}
		root, err := unix.Open(upper, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		buildFuzzUpper(in, root, lowerKey(tree))
		unix.Close(root)
		outside := boxState(t, box)
		escaped := func() {
			t.Helper()
			require.Equal(t, outside, boxState(t, box), "something outside the upper directory changed")
			if _, err := os.Lstat(upperFuzzEscaped); !errors.Is(err, os.ErrNotExist) {
				os.RemoveAll(upperFuzzEscaped)
				t.Fatalf("%s made on the host, following a symlink of the upper directory", upperFuzzEscaped)
			}
		}

		if v, err := New(tree, upper); err == nil {
			var seen []string
			walkView(t, v, "", 0, &seen)
			editView(v, in, seen)
			require.NoError(t, v.Close())
			escaped()
			// What the view made of it opens again.
			tree2, err := union.BuildUnion(img)
			require.NoError(t, err)
			v2, err := New(tree2, upper)
			require.NoError(t, err, "an upper directory the view opened and edited opens again")
			seen = nil
			walkView(t, v2, "", 0, &seen)
			require.NoError(t, v2.Close())
		}
		escaped()

		layer := checkUpperLayer(t, upper)
		escaped()
		if layer == nil {
			return
		}
		ix, err := tarindex.Build(bytes.NewReader(layer), 0, int64(len(layer)))
		require.NoError(t, err, "the layer indexes")
		img2 := &archive.Image{Layers: append(append([]*archive.Layer{}, img.Layers...),
			&archive.Layer{Index: len(img.Layers), Data: layer, TarIndex: ix, Size: int64(len(layer))})}
		if _, err := union.BuildUnion(img2); err != nil {
			require.ErrorIs(t, err, archive.ErrCorruptLayer)
		}
	})
}
