package archive_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/imagetest"
	digest "github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

// Three images with a common base layer, as docker save base app1 app2
// writes them: each layer stored once.
func sharedImages(t *testing.T) (base, app1, app2 *imagetest.Built) {
	baseFiles := map[string]string{"etc/os-release": "ID=test\n", "bin/sh": "#!"}
	base = imagetest.Build(t, imagetest.Spec{Tags: []string{"base:1"}, Layers: []imagetest.LayerSpec{{Files: baseFiles}}})
	app1 = imagetest.Build(t, imagetest.Spec{Tags: []string{"app:1"}, Layers: []imagetest.LayerSpec{{Files: baseFiles}, {Files: map[string]string{"app": "1"}}}})
	app2 = imagetest.Build(t, imagetest.Spec{Tags: []string{"app:2", "app:latest"}, Layers: []imagetest.LayerSpec{{Files: baseFiles}, {Files: map[string]string{"app": "2"}}}})
	require.Equal(t, base.DiffIDs[0], app1.DiffIDs[0])
	return base, app1, app2
}

// namedLayout is one way of writing a tarball of several images.
type namedLayout struct {
	name string
	l    *imagetest.Layout
}

// sharedLayouts writes the images in every layout docker save and skopeo
// write.
func sharedLayouts(t *testing.T, images ...*imagetest.Built) []namedLayout {
	return []namedLayout{
		{"legacy", imagetest.Legacy(t, images...)},
		{"oci", imagetest.OCI(t, false, images...)},
		{"docker-oci", imagetest.OCI(t, true, images...)},
	}
}

func TestListImageLayers(t *testing.T) {
	base, app1, app2 := sharedImages(t)
	for _, layout := range sharedLayouts(t, base, app1, app2) {
		t.Run(layout.name, func(t *testing.T) {
			dir := t.TempDir()
			p := layout.l.Write(t, dir, "all.tar")
			all, err := archive.ListImageLayers(p, t.TempDir())
			require.NoError(t, err)
			byConfig := map[digest.Digest][]digest.Digest{}
			for _, il := range all {
				byConfig[il.Ref.ConfigDigest] = il.DiffIDs
			}
			require.Equal(t, map[digest.Digest][]digest.Digest{
				base.ConfigDigest: base.DiffIDs, app1.ConfigDigest: app1.DiffIDs, app2.ConfigDigest: app2.DiffIDs,
			}, byConfig)

			img, err := imagetest.Open(t, p, archive.OpenOptions{Image: "app:1"})
			require.NoError(t, err)
			require.Len(t, all, len(img.Images))
			r := archive.Inspect(img, nil)
			for _, l := range r.Layers {
				require.NotNil(t, l.SharedWith)
				require.Empty(t, l.SharedWith, "not filled without AddShared")
			}
			r.AddShared(all)
			var shared []string
			for _, ref := range r.Layers[0].SharedWith {
				shared = append(shared, ref.Tags...)
			}
			require.Subset(t, shared, []string{"base:1", "app:2", "app:latest"})
			require.Len(t, r.Layers[0].SharedWith, 2)
			require.Empty(t, r.Layers[1].SharedWith)

			var text bytes.Buffer
			require.NoError(t, r.WriteText(&text))
			out := text.String()
			t.Log("\n" + out)
			require.Contains(t, out, "Shared with the other images of the tarball:\n")
			section := out[strings.Index(out, "Shared with"):strings.Index(out, "Total:")]
			require.Regexp(t, `^Shared with the other images of the tarball:\n  0  `+app1.DiffIDs[0].Encoded()[:12]+`  (\S+, )?base:1; .*app:2, .*app:latest\n$`, section)

			js, err := json.Marshal(r)
			require.NoError(t, err)
			require.Contains(t, string(js), `"shared_with":[{"tags":[`)
			require.Contains(t, string(js), `"shared_with":[]`)
		})
	}
}

func TestInspectSharedText(t *testing.T) {
	_, app1, _ := sharedImages(t)
	other := imagetest.Build(t, imagetest.Spec{Tags: []string{"other:1"}, Layers: []imagetest.LayerSpec{{Files: map[string]string{"o": "o"}}}})
	dir := t.TempDir()
	p := imagetest.OCI(t, false, app1, other).Write(t, dir, "two.tar")
	img, err := imagetest.Open(t, p, archive.OpenOptions{Image: "app:1"})
	require.NoError(t, err)
	all, err := archive.ListImageLayers(p, "")
	require.NoError(t, err)
	r := archive.Inspect(img, nil)
	r.AddShared(all)
	var text bytes.Buffer
	require.NoError(t, r.WriteText(&text))
	require.Contains(t, text.String(), "Shared with the other images of the tarball:\n  no layer\n")

	// One image: no such section.
	p = imagetest.OCI(t, false, app1).Write(t, dir, "one.tar")
	img, err = imagetest.Open(t, p, archive.OpenOptions{})
	require.NoError(t, err)
	text.Reset()
	require.NoError(t, archive.Inspect(img, nil).WriteText(&text))
	require.NotContains(t, text.String(), "Shared with")
}
