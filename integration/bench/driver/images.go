package main

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"syscall"
	"time"

	"github.com/imgmount/imgmount/integration/bench"
)

// sizes of the synthetic images, by set.
type sizes struct {
	bigFile     int64 // bytes of the one big file
	manyFiles   int   // entries of the small-files layer
	layers      int   // layers of the overlapping image
	layerDirs   int
	layerFiles  int
	untarSource string // directory tarred up for the writable-mount row
}

func (c *config) sizes() sizes {
	if c.quick {
		return sizes{bigFile: 256 << 20, manyFiles: 100_000, layers: 50, layerDirs: 20, layerFiles: 1000, untarSource: goRuntimeSrc}
	}
	return sizes{bigFile: 1 << 30, manyFiles: 1_000_000, layers: 50, layerDirs: 100, layerFiles: 4000, untarSource: "/usr/local/go/src"}
}

// paths of the images and of what is derived from them.
func (c *config) debianDocker() string { return filepath.Join(c.data, "debian-docker.tar") }
func (c *config) debianOCIGzip() string {
	return filepath.Join(c.data, "debian-oci-gzip.tar")
}
func (c *config) debianLayout() string { return filepath.Join(c.data, "debian", "oci") }
func (c *config) bigImage() string {
	return filepath.Join(c.out, fmt.Sprintf("bigfile-%dm.tar", c.sizes().bigFile>>20))
}
func (c *config) manyImage() string { return c.manyImageN(c.sizes().manyFiles) }

// manyImageN is the image of one layer of n small files (bench.ManyFilesLayer).
func (c *config) manyImageN(n int) string {
	return filepath.Join(c.out, fmt.Sprintf("manyfiles-%dk.tar", n/1000))
}
func (c *config) layersImage() string {
	s := c.sizes()
	return filepath.Join(c.out, fmt.Sprintf("layers%d-%dx%d.tar", s.layers, s.layerDirs, s.layerFiles))
}

// goRuntimeSrc is the source tree of the full set's second writable row
// (the quick set's only one).
const goRuntimeSrc = "/usr/local/go/src/runtime"

// untarTar is the tar of the directory dir that a writable-mount row
// untars into the mount.
func (c *config) untarTar(dir string) string {
	return filepath.Join(c.out, "untar-"+filepath.Base(dir)+".tar")
}

// debian layer tars, base first, extracted from the docker-archive.
func (c *config) debianLayerTar(i int) string {
	return filepath.Join(c.out, "debian-layers", fmt.Sprintf("layer%d.tar", i))
}

// nativeDebian is the union rootfs on local disk (umoci unpack).
func (c *config) nativeDebian() string { return filepath.Join(c.out, "native", "debian", "rootfs") }

func prepareImages(c *config) error {
	t0 := time.Now()
	if err := buildDebian(c); err != nil {
		return err
	}
	s := c.sizes()
	type synth struct {
		path, recipe, tag string
		layers            []bench.LayerFunc
		rows              []string // the rows that use it
	}
	all := []synth{
		{c.bigImage(), fmt.Sprintf("bigfile v1 %d", s.bigFile), "bench/bigfile:latest", []bench.LayerFunc{bench.BigFileLayer(s.bigFile)}, []string{"seq", "fio", "commit"}},
		{c.manyImage(), fmt.Sprintf("manyfiles v1 %d", s.manyFiles), "bench/manyfiles:latest", []bench.LayerFunc{bench.ManyFilesLayer(s.manyFiles)}, []string{"many"}},
		{c.manyImageN(many300k), fmt.Sprintf("manyfiles v1 %d", many300k), "bench/manyfiles:latest", []bench.LayerFunc{bench.ManyFilesLayer(many300k)}, []string{"many300k"}},
		{c.layersImage(), fmt.Sprintf("layers v1 %d %d %d", s.layers, s.layerDirs, s.layerFiles), "bench/layers:latest", bench.OverlapLayers(s.layers, s.layerDirs, s.layerFiles), []string{"layers"}},
	}
	for _, im := range all {
		if !c.wants(im.rows...) {
			continue // -only left out every row that uses it
		}
		t := time.Now()
		built, err := bench.EnsureArchive(im.path, im.recipe, im.tag, im.layers)
		if err != nil {
			return fmt.Errorf("synthetic image %s: %w", im.path, err)
		}
		if built {
			fmt.Printf("built %s (%.1fs)\n", im.path, time.Since(t).Seconds())
		}
	}
	for _, w := range []struct{ key, dir string }{{"write", s.untarSource}, {"write-runtime", goRuntimeSrc}} {
		if t := c.untarTar(w.dir); c.wants(w.key) && !exists(t) {
			if _, err := sh("tar -cf %s.tmp -C %s %s && mv %s.tmp %s", q(t), q(filepath.Dir(w.dir)), q(filepath.Base(w.dir)), q(t), q(t)); err != nil {
				return fmt.Errorf("source tree for the writable row %s: %w", w.key, err)
			}
		}
	}
	// The Debian image's layers as plain tar files, and its union on disk.
	layers, err := dockerLayers(c.debianDocker())
	if err != nil {
		return err
	}
	for i, l := range layers {
		p := c.debianLayerTar(i)
		if exists(p) && newer(p, c.debianDocker()) {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if _, err := sh("tar -xOf %s --occurrence=1 %s > %s.tmp && mv %s.tmp %s", q(c.debianDocker()), q(l), q(p), q(p), q(p)); err != nil {
			return fmt.Errorf("extracting layer %d of %s: %w", i, c.debianDocker(), err)
		}
	}
	nat := filepath.Dir(c.nativeDebian())
	if !exists(c.nativeDebian()) || !newer(nat, c.debianDocker()) {
		if err := os.RemoveAll(nat); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(nat), 0o755); err != nil {
			return err
		}
		if _, err := sh("umoci unpack --image %s:bookworm %s", q(c.debianLayout()), q(nat)); err != nil {
			return fmt.Errorf("native union of the Debian image: %w", err)
		}
	}
	fmt.Printf("images ready (%.1fs)\n", time.Since(t0).Seconds())
	return nil
}

// wants tells whether any of the rows keys is to run (-only, and -quick
// leaving out the full set's rows).
func (c *config) wants(keys ...string) bool {
	for _, k := range keys {
		if c.runsRow(k) {
			return true
		}
	}
	return false
}

// runsRow tells whether the row key is to run.
func (c *config) runsRow(key string) bool {
	for _, r := range rows {
		if r.key == key {
			return (c.only == nil || c.only[key]) && !(c.quick && r.full)
		}
	}
	return false
}

func newer(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && !fa.ModTime().Before(fb.ModTime())
}

// buildDebian runs the integration tests' image script (debootstrap, umoci,
// skopeo), under the same lock the tests take on the data directory. It
// does nothing when the images are up to date.
func buildDebian(c *config) error {
	if err := os.MkdirAll(c.data, 0o755); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(c.data, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", c.data, err)
	}
	cmd := exec.Command("bash", filepath.Join(c.repo, "integration", "testdata", "debian.sh"), c.data)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building the Debian image (integration/testdata/debian.sh): %w", err)
	}
	return nil
}

// dockerLayers lists the layer members of a docker-archive, base first.
func dockerLayers(archive string) ([]string, error) {
	out, err := sh("tar -xOf %s manifest.json", q(archive))
	if err != nil {
		return nil, err
	}
	var m []struct{ Layers []string }
	if err := json.Unmarshal([]byte(out), &m); err != nil || len(m) != 1 {
		return nil, fmt.Errorf("%s: manifest.json: want one image (%v)", archive, err)
	}
	return resolveMembers(archive, m[0].Layers)
}

// resolveMembers follows member symlinks (skopeo writes <diffid>.tar as a
// symlink to <id>/layer.tar), so that tar -x can extract each name.
func resolveMembers(archive string, names []string) ([]string, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	links := map[string]string{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", archive, err)
		}
		if h.Typeflag == tar.TypeSymlink {
			links[path.Clean(h.Name)] = path.Join(path.Dir(h.Name), h.Linkname)
		}
	}
	out := make([]string, len(names))
	for i, n := range names {
		n = path.Clean(n)
		for hops := 0; links[n] != "" && hops < 10; hops++ {
			n = links[n]
		}
		out[i] = n
	}
	return out, nil
}

// ociLayerBlobs lists the layer blobs of the single image of an OCI
// layout directory, base first, as paths.
func ociLayerBlobs(layout string) ([]string, error) {
	var idx struct {
		Manifests []struct{ Digest string }
	}
	if err := readJSON(filepath.Join(layout, "index.json"), &idx); err != nil {
		return nil, err
	}
	if len(idx.Manifests) != 1 {
		return nil, fmt.Errorf("%s: want one manifest, have %d", layout, len(idx.Manifests))
	}
	var man struct {
		Layers []struct{ Digest string }
	}
	if err := readJSON(blobPath(layout, idx.Manifests[0].Digest), &man); err != nil {
		return nil, err
	}
	var out []string
	for _, l := range man.Layers {
		out = append(out, blobPath(layout, l.Digest))
	}
	return out, nil
}

func blobPath(layout, dg string) string {
	alg, hex, _ := cut(dg, ":")
	return filepath.Join(layout, "blobs", alg, hex)
}

func cut(s, sep string) (string, string, bool) {
	for i := 0; i+len(sep) <= len(s); i++ {
		if s[i:i+len(sep)] == sep {
			return s[:i], s[i+len(sep):], true
		}
	}
	return s, "", false
}

func readJSON(p string, v any) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}
