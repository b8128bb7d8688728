package integration

// The test images. The Debian one comes from testdata/debian.sh
// (debootstrap + umoci + skopeo); the Docker 25 variants of it, the
// union-semantics ("tricky") image, the multi-image and multi-platform
// tarballs and the bad inputs are written here.

import (
	"archive/tar"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// goImagesVersion is part of the Docker 25 stamp: bump it when the
// conversion changes, so cached conversions are redone.
const goImagesVersion = "1"

// testImage is one image tarball the tests mount, and how the independent
// tools read it.
type testImage struct {
	name      string // file name in dataDir
	format    string // the format `imgmount inspect` must report
	transport string // skopeo transport that reads it
	ref       string // the image within it, for skopeo ("" if only one)
	gz        bool   // outer tarball gzipped: skopeo 1.9 reads only the plain tar
	zstd      bool   // has zstd layers: recompressed to gzip for umoci 0.4.7, which lacks zstd
	kind      string // debian, tricky, small or example: which extra checks apply
}

func (ti testImage) path() string { return filepath.Join(dataDir, ti.name) }

var (
	debianImages = []testImage{
		{name: "debian-docker.tar", format: "docker-archive", transport: "docker-archive", kind: "debian"},
		{name: "debian-docker.tar.gz", format: "docker-archive", transport: "docker-archive", gz: true, kind: "debian"},
		{name: "debian-oci-gzip.tar", format: "oci-archive", transport: "oci-archive", ref: "bookworm", kind: "debian"},
		{name: "debian-oci-zstd.tar", format: "oci-archive", transport: "oci-archive", ref: "bookworm", zstd: true, kind: "debian"},
		{name: "debian-docker25.tar", format: "docker-oci", transport: "oci-archive", ref: "bookworm", kind: "debian"},
		{name: "debian-docker25-containerd.tar", format: "docker-oci", transport: "oci-archive", ref: "bookworm", kind: "debian"},
	}
	trickyOCI    = testImage{name: "tricky-oci.tar", format: "oci-archive", transport: "oci-archive", ref: "tricky", zstd: true, kind: "tricky"}
	trickyDocker = testImage{name: "tricky-docker.tar", format: "docker-archive", transport: "docker-archive", kind: "tricky"}
	sparseOCI    = testImage{name: "sparse-oci.tar", format: "oci-archive", transport: "oci-archive", ref: "sparse", kind: "sparse"}
	smallOCI     = testImage{name: "small-oci.tar", format: "oci-archive", transport: "oci-archive", ref: "small", kind: "small"}
	exampleImage = testImage{name: "example.tar", format: "docker-archive", transport: "docker-archive", kind: "example"}

	allImages = append(append([]testImage{}, debianImages...), trickyOCI, trickyDocker, sparseOCI, smallOCI, exampleImage)
)

const debianRepoTag = "imgmount-test/debian:bookworm"

// buildImages makes every test image in dir that is missing or stale.
func buildImages(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	start := time.Now()
	if err := runLogged(exec.Command("bash", filepath.Join(repoRoot, "integration", "testdata", "debian.sh"), dir)); err != nil {
		return fmt.Errorf("building the Debian image: %w", err)
	}
	if err := buildDocker25(dir); err != nil {
		return fmt.Errorf("Docker 25 tarballs: %w", err)
	}
	if err := buildTricky(dir); err != nil {
		return fmt.Errorf("union-semantics image: %w", err)
	}
	if err := buildSparse(dir); err != nil {
		return fmt.Errorf("sparse image: %w", err)
	}
	if err := buildSmallAndMulti(dir); err != nil {
		return fmt.Errorf("multi-image and multi-platform tarballs: %w", err)
	}
	if err := buildBad(dir); err != nil {
		return fmt.Errorf("bad inputs: %w", err)
	}
	if err := runLogged(exec.Command("bash", filepath.Join(repoRoot, "example", "build.sh"), filepath.Join(dir, exampleImage.name))); err != nil {
		return fmt.Errorf("example image: %w", err)
	}
	fmt.Printf("test images ready in %s (%.1fs)\n", dir, time.Since(start).Seconds())
	return nil
}

// runLogged runs cmd with its output passed through, prefixed by nothing:
// the scripts print short progress lines of their own.
func runLogged(cmd *exec.Cmd) error {
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	return cmd.Run()
}

// buildDocker25 writes the Debian image as Docker 25+ saves it, with the
// classic image store (uncompressed blobs) and the containerd one
// (compressed blobs as pulled).
func buildDocker25(dir string) error {
	stampPath := filepath.Join(dir, "debian-docker25.stamp")
	debStamp, err := os.ReadFile(filepath.Join(dir, "debian.stamp"))
	if err != nil {
		return err
	}
	want := strings.TrimSpace(string(debStamp)) + " " + goImagesVersion
	if got, err := os.ReadFile(stampPath); err == nil && string(got) == want {
		if _, err := os.Stat(filepath.Join(dir, "debian-docker25-containerd.tar")); err == nil {
			return nil
		}
	}
	layoutDir := filepath.Join(dir, "debian", "oci")
	for _, v := range []struct {
		name string
		keep bool
	}{{"debian-docker25.tar", false}, {"debian-docker25-containerd.tar", true}} {
		b, err := docker25FromLayout(layoutDir, "bookworm", debianRepoTag, v.keep)
		if err != nil {
			return err
		}
		if err := writeIfChanged(filepath.Join(dir, v.name), b); err != nil {
			return err
		}
	}
	return os.WriteFile(stampPath, []byte(want), 0o644)
}

// capNetBindService is a security.capability value (vfs_cap_data revision
// 2) granting CAP_NET_BIND_SERVICE, effective.
func capNetBindService() string {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000001)
	binary.LittleEndian.PutUint32(b[4:], 1<<10)
	return string(b)
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	_, _ = rand.NewChaCha8(s).Read(b)
	return b
}

func withMtime(t time.Time) func(*tar.Header) {
	return func(h *tar.Header) {
		h.ModTime = t
		h.Format = tar.FormatPAX
	}
}

// trickyLayers builds the union-semantics cases of DESIGN.md, base first.
func trickyLayers(dir string) ([]layerIn, error) {
	long120 := strings.Repeat("n", 120)
	c60 := func(c string) string { return strings.Repeat(c, 60) }
	deep := "long/" + c60("a") + "/" + c60("b") + "/" + c60("c")

	l0 := []tarEntry{
		dirE(".", 0o755),
		// hardlink whose target a later layer replaces (three names)
		dirE("a", 0o755), fileE("a/target", "v1 target\n", 0o644), hardlinkE("a/link", "a/target"), hardlinkE("a/link2", "a/target"),
		// hardlink whose target a later layer whites out
		dirE("b", 0o755), fileE("b/target", "keep me\n", 0o644), hardlinkE("b/link", "b/target"),
		// .wh.foo before foo, and foo before .wh.foo, in one layer
		dirE("c", 0o755), fileE("c/foo", "old c\n", 0o644),
		dirE("d", 0o755), fileE("d/foo", "old d\n", 0o644),
		// opaque marker after new siblings
		dirE("e", 0o755), fileE("e/old1", "old1\n", 0o644), fileE("e/old2", "old2\n", 0o644), dirE("e/sub", 0o755), fileE("e/sub/deep", "deep\n", 0o644),
		// file replaced by dir and back; dir replaced by file
		dirE("f", 0o755), fileE("f/x", "file x v0\n", 0o644),
		dirE("g", 0o755), dirE("g/y", 0o750), fileE("g/y/child", "child\n", 0o644),
		dirE("h", 0o755),
		// a subtree whited out, then re-created
		dirE("k", 0o755), dirE("k/sub", 0o755), dirE("k/sub/deep", 0o755), fileE("k/sub/deep/file", "deep file\n", 0o644),
		// symlinks
		dirE("m", 0o755), symlinkE("m/rel", "../a/target"), symlinkE("m/abs", "/etc/passwd"),
		symlinkE("m/dangling", "nowhere/at/all"), symlinkE("m/todir", "../a"), symlinkE("m/loop", "loop"),
		// opaque marker before new siblings (the usual order)
		dirE("o", 0o755), fileE("o/lower1", "lower1\n", 0o644), dirE("o/lowerdir", 0o755), fileE("o/lowerdir/f", "f\n", 0o644),
		dirE("w", 0o755), fileE("w/keep", "keep\n", 0o644), fileE("w/gone", "gone\n", 0o644),
		// device nodes and a fifo
		dirE("dev", 0o755),
		devE("dev/mynull", tar.TypeChar, 1, 3, 0o666),
		devE("dev/myloop", tar.TypeBlock, 7, 0, 0o660),
		devE("dev/fifo", tar.TypeFifo, 0, 0, 0o644),
		devE("dev/fifo2", tar.TypeFifo, 0, 0, 0o600).with(owner(1000, 1000)),
		// permissions and owners
		dirE("perm", 0o755),
		fileE("perm/suid", "#!/bin/sh\n", 0o4755),
		fileE("perm/sgid", "#!/bin/sh\n", 0o2755),
		dirE("perm/sticky", 0o1777),
		fileE("perm/ro", "ro\n", 0o400),
		fileE("perm/none", "none\n", 0),
		fileE("perm/owned", "owned\n", 0o640).with(owner(1000, 1000)),
		fileE("perm/bigid", "bigid\n", 0o644).with(owner(100000, 200000)),
		fileE("perm/nobody", "nobody\n", 0o644).with(owner(65534, 65534)),
		dirE("perm/sgiddir", 0o2775).with(owner(0, 50)),
		// PAX xattrs, binary values and a file capability included
		dirE("x", 0o755),
		fileE("x/attrs", "has xattrs\n", 0o755).with(xattrs("user.foo", "bar", "user.bin", "\x00\x01\xfe\xff", "security.capability", capNetBindService())),
		dirE("x/dirattr", 0o755).with(xattrs("user.dir", "1")),
		// long names: PAX path, GNU long name, long symlink target, long hardlink
		dirE("long", 0o755),
		fileE("long/"+long120, "pax long name\n", 0o644),
		dirE("long/"+c60("a"), 0o755), dirE("long/"+c60("a")+"/"+c60("b"), 0o755), dirE(deep, 0o755),
		fileE(deep+"/file", "deep long path\n", 0o644),
		fileE("long/gnu-"+strings.Repeat("g", 150), "gnu long name\n", 0o644).with(func(h *tar.Header) { h.Format = tar.FormatGNU }),
		symlinkE("long/linkto", strings.Repeat("../x/", 30)+"attrs"),
		hardlinkE("long/hl-"+strings.Repeat("h", 110), "long/"+long120),
		// names that are not ASCII
		dirE("utf", 0o755), fileE("utf/héllo wörld.txt", "utf-8\n", 0o644), fileE("utf/日本語", "nihongo\n", 0o644),
		// times: nanoseconds (PAX), old, past 2038
		dirE("t", 0o755),
		fileE("t/nanos", "nanos\n", 0o644).with(withMtime(time.Date(2023, 5, 6, 7, 8, 9, 123456789, time.UTC))),
		fileE("t/old", "old\n", 0o644).with(withMtime(time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC))),
		fileE("t/future", "future\n", 0o644).with(withMtime(time.Date(2040, 2, 29, 12, 0, 0, 0, time.UTC))),
		dirE("t/dirnanos", 0o755).with(withMtime(time.Date(2022, 1, 1, 1, 1, 1, 500000000, time.UTC))),
		// sizes: empty, and a large file crossing many FUSE read sizes
		dirE("z", 0o755), fileE("z/empty", "", 0o644), bytesE("z/big", randomBytes(3<<20+17, 1), 0o644),
		// three names for one file in one layer
		dirE("hl", 0o755), fileE("hl/a", "three names\n", 0o644), hardlinkE("hl/b", "hl/a"), hardlinkE("hl/c", "hl/a"),
		dirE("lower-only", 0o700), fileE("lower-only/f", "untouched\n", 0o600),
		// symlinks standing where a later layer's parents are
		dirE("sym", 0o755), dirE("sym/real", 0o755), fileE("sym/real/r", "r\n", 0o644), fileE("sym/real/gone", "gone\n", 0o644),
		symlinkE("sym/l", "real"), symlinkE("sym/abs", "/sym/real"), symlinkE("sym/chain", "l"),
	}
	l1 := []tarEntry{
		dirE("a", 0o755), fileE("a/target", "v2 target\n", 0o644),
		dirE("b", 0o755), whiteoutE("b", "target"),
		dirE("c", 0o755), whiteoutE("c", "foo"), fileE("c/foo", "new c\n", 0o644),
		dirE("d", 0o755), fileE("d/foo", "new d\n", 0o644), whiteoutE("d", "foo"),
		dirE("e", 0o755), fileE("e/new1", "new1\n", 0o644), opaqueE("e"),
		dirE("f", 0o755), dirE("f/x", 0o755), fileE("f/x/inner", "inner\n", 0o644),
		dirE("g", 0o755), fileE("g/y", "now a file\n", 0o644),
		dirE("h", 0o755),
		fileE("h/dup", "first\n", 0o644), fileE("h/dup", "second\n", 0o600),
		dirE("h/dupdir", 0o700), dirE("h/dupdir", 0o755).with(owner(1, 1)),
		fileE("h/dup2", "file first\n", 0o644), symlinkE("h/dup2", "dup"),
		dirE("k", 0o755), whiteoutE("k", "sub"),
		dirE("w", 0o755), whiteoutE("w", "gone"), whiteoutE("w", "neverexisted"),
		dirE("o", 0o755), opaqueE("o"), fileE("o/new", "new\n", 0o644),
		dirE("newdir", 0o755), opaqueE("newdir"), fileE("newdir/file", "file\n", 0o644),
		dirE("l1", 0o755), fileE("l1/orig", "orig\n", 0o644), hardlinkE("l1/hl", "l1/orig"),
		dirE("perm", 0o755), fileE("perm/ro", "ro\n", 0o444),
		dirE("m", 0o755), dirE("m/rel", 0o755), fileE("m/rel/in", "dir over symlink\n", 0o644),
		dirE("dev", 0o755), whiteoutE("dev", "fifo"),
		fileE("sym/l/via-rel", "via rel\n", 0o644), fileE("sym/abs/via-abs", "via abs\n", 0o644),
		fileE("sym/chain/via-chain", "via chain\n", 0o644), whiteoutE("sym/l", "gone"),
	}
	l2 := []tarEntry{
		dirE("f", 0o755), fileE("f/x", "file x again\n", 0o644),
		dirE("k", 0o755), dirE("k/sub", 0o711), fileE("k/sub/new", "new after whiteout\n", 0o644),
		dirE("h", 0o755), fileE("h/dup", "third\n", 0o644),
	}
	var layers []layerIn
	for i, l := range [][]tarEntry{l0, l1, l2} {
		b, err := tarBytes(l)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		comp := []string{"gzip", "", "zstd"}[i]
		layers = append(layers, layerIn{tar: b, compression: comp, createdBy: fmt.Sprintf("tricky layer %d (%s)", i, orNone(comp))})
	}
	// A sparse file in PAX 1.0 format, written by GNU tar (umoci reads it;
	// the other sparse formats are in sparse-oci.tar).
	b, err := sparseLayer(dir, "pax", "--format=posix", "--sparse-version=1.0")
	if err != nil {
		return nil, err
	}
	layers = append(layers, layerIn{tar: b, createdBy: "GNU tar --sparse --format=posix --sparse-version=1.0"})
	return layers, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// sparseLayer makes sparse/<kind>-holes (8 MiB with three bits of data)
// and sparse/<kind>-allhole (1 MiB, no data) and tars them with GNU tar
// --sparse and the given format options.
func sparseLayer(dir, kind string, format ...string) ([]byte, error) {
	tmp, err := os.MkdirTemp(dir, "sparse-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	sd := filepath.Join(tmp, "sparse")
	if err := os.Mkdir(sd, 0o755); err != nil {
		return nil, err
	}
	_ = os.Chmod(sd, 0o755)
	f, err := os.Create(filepath.Join(sd, kind+"-holes"))
	if err != nil {
		return nil, err
	}
	const size = 8 << 20
	err = f.Truncate(size)
	for _, w := range []struct {
		off int64
		s   string
	}{{0, "start"}, {4 << 20, "middle"}, {size - 3, "end"}} {
		if err == nil {
			_, err = f.WriteAt([]byte(w.s), w.off)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(sd, kind+"-allhole"), nil, 0o644)
	}
	if err == nil {
		err = os.Truncate(filepath.Join(sd, kind+"-allhole"), 1<<20)
	}
	if err != nil {
		return nil, err
	}
	for _, n := range []string{kind + "-holes", kind + "-allhole"} {
		if err := os.Chmod(filepath.Join(sd, n), 0o644); err != nil {
			return nil, err
		}
	}
	args := append([]string{"--sparse"}, format...)
	if slices.Contains(format, "--format=posix") {
		// No atime/ctime records, no PID in the extended header names:
		// the same input gives the same bytes.
		args = append(args, "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime")
	}
	args = append(args, "--owner=0", "--group=0", "--numeric-owner",
		fmt.Sprintf("--mtime=@%d", t0.Unix()), "--sort=name", "-C", tmp, "-cf", "-", "sparse")
	out, err := exec.Command("tar", args...).Output()
	if err != nil {
		return nil, fmt.Errorf("tar %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

// buildSparse writes sparse-oci.tar: one layer per sparse format GNU tar
// writes (old GNU, PAX 0.0, 0.1 and 1.0). umoci cannot unpack the old GNU
// one (typeflag 'S'), so its oracle is GNU tar itself.
func buildSparse(dir string) error {
	var layers []layerIn
	for _, v := range []struct {
		kind, comp string
		format     []string
	}{
		{"gnu", "gzip", []string{"--format=gnu"}},
		{"pax00", "", []string{"--format=posix", "--sparse-version=0.0"}},
		{"pax01", "zstd", []string{"--format=posix", "--sparse-version=0.1"}},
		{"pax10", "gzip", []string{"--format=posix", "--sparse-version=1.0"}},
	} {
		b, err := sparseLayer(dir, v.kind, v.format...)
		if err != nil {
			return err
		}
		layers = append(layers, layerIn{tar: b, compression: v.comp, createdBy: "GNU tar --sparse " + strings.Join(v.format, " ")})
	}
	l, err := newLayout(filepath.Join(dir, "sparse", "oci"))
	if err != nil {
		return err
	}
	d, err := l.addImage(imageIn{layers: layers, config: smallConfig})
	if err != nil {
		return err
	}
	if err := l.writeIndex([]ocispec.Descriptor{refNamed(d, "sparse")}); err != nil {
		return err
	}
	return packLayout(l, filepath.Join(dir, sparseOCI.name))
}

var trickyConfig = ocispec.ImageConfig{
	Env:        []string{"PATH=/usr/bin:/bin", "TRICKY=1"},
	Cmd:        []string{"/bin/sh"},
	WorkingDir: "/",
	Labels:     map[string]string{"org.imgmount.test": "tricky"},
}

func buildTricky(dir string) error {
	layers, err := trickyLayers(dir)
	if err != nil {
		return err
	}
	l, err := newLayout(filepath.Join(dir, "tricky", "oci"))
	if err != nil {
		return err
	}
	d, err := l.addImage(imageIn{layers: layers, config: trickyConfig})
	if err != nil {
		return err
	}
	if err := l.writeIndex([]ocispec.Descriptor{refNamed(d, "tricky")}); err != nil {
		return err
	}
	b, err := ociArchive(l.dir)
	if err != nil {
		return err
	}
	p := filepath.Join(dir, trickyOCI.name)
	before, _ := os.Stat(p)
	if err := writeIfChanged(p, b); err != nil {
		return err
	}
	after, _ := os.Stat(p)
	docker := filepath.Join(dir, trickyDocker.name)
	if _, err := os.Stat(docker); err == nil && before != nil && os.SameFile(before, after) {
		return nil
	}
	// The legacy docker-archive of the same image, written by skopeo.
	// skopeo 1.9 refuses zstd layers for docker images: recompress them to
	// gzip in a layout of its own first (the tars stay the same).
	_ = os.Remove(docker)
	gz := filepath.Join(dir, "tricky", "oci-gzip")
	_ = os.RemoveAll(gz)
	defer os.RemoveAll(gz)
	for _, args := range [][]string{
		{"copy", "-q", "--dest-compress", "--dest-compress-format", "gzip", "oci:" + l.dir + ":tricky", "oci:" + gz + ":tricky"},
		{"copy", "-q", "oci:" + gz + ":tricky", "docker-archive:" + docker + ":imgmount-test/tricky:latest"},
	} {
		if out, err := exec.Command("skopeo", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("skopeo %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

func smallLayers() ([]layerIn, error) {
	l0, err := tarBytes([]tarEntry{
		dirE("etc", 0o755), fileE("etc/os-release", "ID=small\nNAME=\"imgmount small test image\"\n", 0o644),
		dirE("data", 0o755), fileE("data/one", "1\n", 0o644),
	})
	if err != nil {
		return nil, err
	}
	l1, err := tarBytes([]tarEntry{
		dirE("data", 0o755), fileE("data/two", "2\n", 0o644), whiteoutE("data", "one"),
	})
	if err != nil {
		return nil, err
	}
	return []layerIn{{tar: l0, compression: "gzip", createdBy: "small base"}, {tar: l1, compression: "gzip", createdBy: "small top"}}, nil
}

var smallConfig = ocispec.ImageConfig{Env: []string{"PATH=/bin"}, Cmd: []string{"/bin/true"}, Labels: map[string]string{"org.imgmount.test": "small"}}

// otherArch is an architecture that is not the host's.
func otherArch() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

// buildSmallAndMulti writes small-oci.tar (one small image),
// multi-image.tar (two images, as Docker 25 saves them: both tagged
// "latest", told apart by manifest.json RepoTags and the containerd name
// annotation) and multi-platform.tar (a nested index with the host's
// platform present, another platform's blobs absent, and a third whose
// manifest is absent).
func buildSmallAndMulti(dir string) error {
	small, err := smallLayers()
	if err != nil {
		return err
	}
	// small-oci.tar
	l, err := newLayout(filepath.Join(dir, "small", "oci"))
	if err != nil {
		return err
	}
	sd, err := l.addImage(imageIn{layers: small, config: smallConfig})
	if err != nil {
		return err
	}
	if err := l.writeIndex([]ocispec.Descriptor{refNamed(sd, "small")}); err != nil {
		return err
	}
	if err := packLayout(l, filepath.Join(dir, smallOCI.name)); err != nil {
		return err
	}

	// multi-image.tar
	tricky, err := trickyLayers(dir)
	if err != nil {
		return err
	}
	l, err = newLayout(filepath.Join(dir, "multi-image", "oci"))
	if err != nil {
		return err
	}
	var descs []ocispec.Descriptor
	var entries []map[string]any
	for _, im := range []struct {
		tag    string
		layers []layerIn
		cfg    ocispec.ImageConfig
	}{{"imgmount-test/tricky:latest", tricky, trickyConfig}, {"imgmount-test/small:latest", small, smallConfig}} {
		d, err := l.addImage(imageIn{layers: im.layers, config: im.cfg})
		if err != nil {
			return err
		}
		d.Annotations = map[string]string{"io.containerd.image.name": im.tag, ocispec.AnnotationRefName: "latest"}
		descs = append(descs, d)
		var man ocispec.Manifest
		if err := readLayoutJSON(l.dir, d.Digest, &man); err != nil {
			return err
		}
		var layerPaths []string
		for _, ld := range man.Layers {
			layerPaths = append(layerPaths, "blobs/sha256/"+ld.Digest.Encoded())
		}
		entries = append(entries, map[string]any{
			"Config": "blobs/sha256/" + man.Config.Digest.Encoded(), "RepoTags": []string{im.tag}, "Layers": layerPaths,
		})
	}
	if err := l.writeIndex(descs); err != nil {
		return err
	}
	dm, _ := json.Marshal(entries)
	if err := packLayout(l, filepath.Join(dir, "multi-image.tar"), tarFile{name: "manifest.json", data: dm}); err != nil {
		return err
	}

	// multi-platform.tar
	l, err = newLayout(filepath.Join(dir, "multi-platform", "oci"))
	if err != nil {
		return err
	}
	host, err := l.addImage(imageIn{layers: small, config: smallConfig})
	if err != nil {
		return err
	}
	otherLayers := []layerIn{{tar: small[0].tar, compression: "zstd", createdBy: "other platform"}}
	other, err := l.addImage(imageIn{layers: otherLayers, config: smallConfig, platform: &ocispec.Platform{OS: "linux", Architecture: otherArch()}, blobsAbsent: true})
	if err != nil {
		return err
	}
	armv7, err := l.addImage(imageIn{layers: otherLayers, config: smallConfig, platform: &ocispec.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, manifestAbsent: true})
	if err != nil {
		return err
	}
	nested, err := l.putIndex([]ocispec.Descriptor{host, other, armv7})
	if err != nil {
		return err
	}
	if err := l.writeIndex([]ocispec.Descriptor{refNamed(nested, "multi")}); err != nil {
		return err
	}
	return packLayout(l, filepath.Join(dir, "multi-platform.tar"))
}

func packLayout(l *layout, out string, extra ...tarFile) error {
	b, err := ociArchive(l.dir, extra...)
	if err != nil {
		return err
	}
	return writeIfChanged(out, b)
}

// badInput is a tarball imgmount must refuse, and what its error must say
// (any one of the phrases, case-insensitively).
type badInput struct {
	name    string
	phrases []string
}

var badInputs = []badInput{
	{"truncated.tar", []string{"truncat", "unexpected eof"}},
	{"corrupt-gzip.tar", []string{"gzip", "corrupt", "checksum", "flate"}},
	{"thin.tar", nil}, // phrases: the missing layer, filled in by buildBad
	{"diffid-gzip.tar", []string{"diff_id", "diffid", "does not match", "mismatch"}},
	{"diffid-uncompressed.tar", []string{"diff_id", "diffid", "does not match", "mismatch"}},
	{"unsafe.tar", []string{"../etc/passwd", "unsafe"}},
	{"notimage.txt", []string{"not a container image", "not an image", "not a tar"}},
	{"plain.tar", []string{"not a container image", "not an image", "manifest"}},
	{"empty.tar", []string{"not a container image", "not an image", "empty", "not a tar"}},
}

// thinMissing is the diff_id of the layer thin.tar leaves out.
var thinMissing digest.Digest

func buildBad(dir string) error {
	bad := filepath.Join(dir, "bad")
	if err := os.MkdirAll(bad, 0o755); err != nil {
		return err
	}
	small, err := smallLayers()
	if err != nil {
		return err
	}
	write := func(name string, b []byte) error { return writeIfChanged(filepath.Join(bad, name), b) }

	// truncated: two thirds of the union-semantics oci-archive.
	whole, err := os.ReadFile(filepath.Join(dir, trickyOCI.name))
	if err != nil {
		return err
	}
	if err := write("truncated.tar", whole[:len(whole)*2/3]); err != nil {
		return err
	}

	// corrupt gzip: a byte flipped inside the deflate stream; the blob
	// digest is recomputed so that only decompression can notice.
	body, err := tarBytes([]tarEntry{dirE("data", 0o755), bytesE("data/random", randomBytes(256<<10, 2), 0o644)})
	if err != nil {
		return err
	}
	if err := writeOCIVariant(filepath.Join(bad, "corrupt-gzip.tar"), body, "gzip", func(blob []byte) []byte {
		c := append([]byte(nil), blob...)
		c[len(c)/2] ^= 0xff
		return c
	}, ""); err != nil {
		return err
	}

	// thin: manifest.json lists two layers, the tarball holds one.
	b, err := dockerLegacyTar(legacyImage{layers: [][]byte{small[0].tar, small[1].tar}, repoTag: "imgmount-test/thin:latest", omit: map[int]bool{1: true}})
	if err != nil {
		return err
	}
	thinMissing = sha256Digest(small[1].tar)
	badInputs[2].phrases = []string{thinMissing.Encoded()[:12], "layer.tar"}
	if err := write("thin.tar", b); err != nil {
		return err
	}

	// diff_id mismatch, gzip layer (checked when decompressed).
	if err := writeOCIVariant(filepath.Join(bad, "diffid-gzip.tar"), small[0].tar, "gzip", nil, sha256Digest([]byte("not this layer"))); err != nil {
		return err
	}
	// diff_id mismatch, uncompressed layer in a legacy docker save.
	b, err = dockerLegacyTar(legacyImage{layers: [][]byte{small[0].tar, small[1].tar}, repoTag: "imgmount-test/diffid:latest",
		diffIDs: []digest.Digest{"", sha256Digest([]byte("not this layer either"))}})
	if err != nil {
		return err
	}
	if err := write("diffid-uncompressed.tar", b); err != nil {
		return err
	}

	// unsafe name in a layer.
	body, err = tarBytes([]tarEntry{dirE("etc", 0o755), fileE("etc/ok", "fine\n", 0o644), fileE("../etc/passwd", "root::0:0::/:/bin/sh\n", 0o644)})
	if err != nil {
		return err
	}
	if err := writeOCIVariant(filepath.Join(bad, "unsafe.tar"), body, "", nil, ""); err != nil {
		return err
	}

	// not images at all.
	if err := write("notimage.txt", []byte("this is a text file, not a container image\n")); err != nil {
		return err
	}
	plain, err := outerTar([]tarFile{{name: "README", data: []byte("hello\n")}, {name: "src/main.c", data: []byte("int main(){return 0;}\n")}})
	if err != nil {
		return err
	}
	if err := write("plain.tar", plain); err != nil {
		return err
	}
	return write("empty.tar", nil)
}

// writeOCIVariant writes a one-layer oci-archive of body compressed with
// comp; mangle, if set, alters the stored blob; diffID, if set, replaces
// the true diff_id in the config.
func writeOCIVariant(out string, body []byte, comp string, mangle func([]byte) []byte, diffID digest.Digest) error {
	tmp, err := os.MkdirTemp(filepath.Dir(out), "variant-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	l, err := newLayout(tmp)
	if err != nil {
		return err
	}
	blob, err := compressBytes(body, comp)
	if err != nil {
		return err
	}
	if mangle != nil {
		blob = mangle(blob)
	}
	ld, err := l.put(layerMediaType(comp), blob, false)
	if err != nil {
		return err
	}
	if diffID == "" {
		diffID = sha256Digest(body)
	}
	created := t0
	cfg := ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Config:   smallConfig,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
		History:  []ocispec.History{{Created: &created, CreatedBy: "bad layer"}},
	}
	cd, err := l.putJSON(ocispec.MediaTypeImageConfig, cfg, false)
	if err != nil {
		return err
	}
	man := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: []ocispec.Descriptor{ld}}
	man.SchemaVersion = 2
	md, err := l.putJSON(ocispec.MediaTypeImageManifest, man, false)
	if err != nil {
		return err
	}
	if err := l.writeIndex([]ocispec.Descriptor{refNamed(md, "bad")}); err != nil {
		return err
	}
	return packLayout(l, out)
}
