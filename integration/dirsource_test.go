package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

// Directories wherever a tarball is accepted: an OCI image layout (what
// skopeo copy ... oci:DIR:TAG writes) and an extracted docker save (what
// tar -xf image.tar -C DIR gives) mount, inspect and serve as --base like
// the tarball they came from.

// dirSourceExtract extracts the tarball at p into a new directory, as a
// user would with tar -xf.
func dirSourceExtract(t *testing.T, p string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "extracted")
	require.NoError(t, os.Mkdir(dir, 0o755))
	out, err := exec.Command("tar", "-xf", p, "-C", dir).CombinedOutput()
	require.NoError(t, err, "tar -xf %s:\n%s", p, out)
	return dir
}

// dirSourceLayout copies img with skopeo into a new OCI image layout
// directory, tagged tag.
func dirSourceLayout(t *testing.T, img testImage, tag string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	out, err := exec.Command("skopeo", "copy", "-q", skopeoRef(img), "oci:"+dir+":"+tag).CombinedOutput()
	require.NoError(t, err, "skopeo copy %s oci:%s:%s:\n%s", skopeoRef(img), dir, tag, out)
	return dir
}

// dirSourceInspect runs imgmount inspect --json on src and returns the
// report without its "archive" field (the path given).
func dirSourceInspect(t *testing.T, src string, extra ...string) map[string]any {
	t.Helper()
	args := append([]string{"inspect", "--json", "--cache-dir", sharedCache}, extra...)
	r := run(t, 2*time.Minute, append(args, src)...)
	require.Equal(t, 0, r.code, "%s", r)
	var rep map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), "%s", r)
	require.Equal(t, src, rep["archive"])
	delete(rep, "archive")
	return rep
}

// dirSourceDiffIDs lists the diff_ids of an inspect report's layers.
func dirSourceDiffIDs(t *testing.T, rep map[string]any) []string {
	t.Helper()
	layers, ok := rep["layers"].([]any)
	require.True(t, ok, "layers in %v", rep)
	var ids []string
	for _, l := range layers {
		ids = append(ids, l.(map[string]any)["diff_id"].(string))
	}
	return ids
}

func TestDirSource(t *testing.T) {
	requireFUSE(t)
	for _, img := range []testImage{smallOCI, trickyOCI, trickyDocker, exampleImage, debianImages[4]} {
		t.Run(strings.TrimSuffix(img.name, ".tar"), func(t *testing.T) {
			tarMnt := mountImage(t, img.path())
			want := dirSourceInspect(t, img.path())

			t.Run("extracted", func(t *testing.T) {
				dir := dirSourceExtract(t, img.path())
				require.Equal(t, want, dirSourceInspect(t, dir), "inspect of the extracted directory")
				mnt := mountImage(t, dir)
				requireSameTree(t, mnt, tarMnt, "the mount of the extracted "+img.name)
			})

			t.Run("oci-layout", func(t *testing.T) {
				dir := dirSourceLayout(t, img, "dirsource")
				require.FileExists(t, filepath.Join(dir, "oci-layout"))
				require.FileExists(t, filepath.Join(dir, "index.json"))
				require.DirExists(t, filepath.Join(dir, "blobs", "sha256"))
				rep := dirSourceInspect(t, dir)
				require.Equal(t, "oci-archive", rep["format"])
				require.Equal(t, dirSourceDiffIDs(t, want), dirSourceDiffIDs(t, rep), "the layout holds the same layers")
				mnt := mountImage(t, dir)
				requireSameTree(t, mnt, tarMnt, "the mount of the OCI layout of "+img.name)
			})
		})
	}
}

// A thin image, its first layer left out: the OCI layout directory of the
// full image supplies it as --base, to a thin tarball and to a thin
// directory alike.
func TestDirSourceBase(t *testing.T) {
	requireFUSE(t)
	img := smallOCI
	full := dirSourceLayout(t, img, "small")
	fullMnt := mountImage(t, img.path())

	thinDir := dirSourceLayout(t, img, "small")
	var idx ocispec.Index
	dirSourceReadJSON(t, filepath.Join(thinDir, "index.json"), &idx)
	require.Len(t, idx.Manifests, 1)
	var m ocispec.Manifest
	dirSourceReadJSON(t, filepath.Join(thinDir, "blobs", "sha256", idx.Manifests[0].Digest.Encoded()), &m)
	require.Len(t, m.Layers, 2)
	require.NoError(t, os.Remove(filepath.Join(thinDir, "blobs", "sha256", m.Layers[0].Digest.Encoded())))
	thinTar := filepath.Join(t.TempDir(), "thin.tar")
	out, err := exec.Command("tar", "-cf", thinTar, "-C", thinDir, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)

	for _, thin := range []string{thinTar, thinDir} {
		// inspect describes it, layer 0 absent (issue 12); --files needs
		// every layer.
		r := run(t, time.Minute, "inspect", "--cache-dir", sharedCache, thin)
		require.Equal(t, 0, r.code, "%s", r)
		require.Regexp(t, `(?m)^  0  [0-9a-f]{12}  absent `, r.stdout)
		r = run(t, time.Minute, "inspect", "--files", "--cache-dir", sharedCache, thin)
		requireClearError(t, r, "layer 0", "--base")
	}
	for _, c := range [][2]string{{thinTar, full}, {thinDir, full}, {thinDir, img.path()}} {
		mnt := mountImage(t, c[0], "--base", c[1])
		requireSameTree(t, mnt, fullMnt, "the mount of "+filepath.Base(c[0])+" with --base "+filepath.Base(c[1]))
	}
}

func dirSourceReadJSON(t *testing.T, p string, v any) {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, v), p)
}

// TestDirSourceRepack: commit and export take an image directory where
// they take a tarball, and give the same output.
func TestDirSourceRepack(t *testing.T) {
	requireFUSE(t)
	img := imageNamed(t, "example.tar")
	dir := dirSourceExtract(t, img.path())
	out := t.TempDir()
	for _, src := range []string{img.path(), dir} {
		name := filepath.Base(src)
		r := run(t, time.Minute, "export", src, "-o", filepath.Join(out, name+".export.tar"), "--cache-dir", sharedCache)
		require.Equal(t, 0, r.code, "%s", r)
	}
	a, err := os.ReadFile(filepath.Join(out, filepath.Base(img.path())+".export.tar"))
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(out, filepath.Base(dir)+".export.tar"))
	require.NoError(t, err)
	require.True(t, bytes.Equal(a, b), "the directory exports as the tarball does")

	upper := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(upper, "hello"), []byte("hi\n"), 0o644))
	r := run(t, time.Minute, "commit", dir, "--upper", upper, "-o", filepath.Join(out, "new.tar"), "--cache-dir", sharedCache)
	require.Equal(t, 0, r.code, "%s", r)
	mnt := mountImage(t, filepath.Join(out, "new.tar"))
	got, err := os.ReadFile(filepath.Join(mnt, "hello"))
	require.NoError(t, err)
	require.Equal(t, "hi\n", string(got))
}
