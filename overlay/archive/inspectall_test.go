package archive_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/imagetest"
	digest "github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

// InspectTarball describes every image of docker save base app1 app2 and
// which layers they share, in every layout.
func TestInspectTarball(t *testing.T) {
	base, app1, app2 := sharedImages(t)
	for _, layout := range sharedLayouts(t, base, app1, app2) {
		t.Run(layout.name, func(t *testing.T) {
			dir := t.TempDir()
			p := layout.l.Write(t, dir, "all.tar")
			r, err := archive.InspectTarball(p, archive.OpenOptions{})
			require.NoError(t, err)
			require.Len(t, r.Images, 3)
			byConfig := map[digest.Digest]archive.TarballImage{}
			for _, im := range r.Images {
				byConfig[im.ConfigDigest] = im
			}
			for _, b := range []*imagetest.Built{base, app1, app2} {
				im := byConfig[b.ConfigDigest]
				require.Equal(t, b.DiffIDs, im.DiffIDs)
				require.Equal(t, len(b.DiffIDs), im.Layers)
				require.Zero(t, im.AbsentLayers)
				require.Positive(t, im.StoredSize)
			}
			// base's layer is app1's and app2's first; the apps' second
			// layers are theirs alone.
			require.Len(t, r.Layers, 3)
			shared := r.Shared()
			require.Len(t, shared, 1)
			require.Equal(t, base.DiffIDs[0], shared[0].DiffID)
			require.Len(t, shared[0].UsedBy, 3)
			var sum int64
			for _, l := range r.Layers {
				require.False(t, l.Absent)
				sum += l.StoredSize
			}
			require.Equal(t, sum, r.StoredSize)

			var text bytes.Buffer
			require.NoError(t, r.WriteText(&text))
			out := text.String()
			t.Log("\n" + out)
			require.Contains(t, out, "Layers shared by several images:\n  DIFF_ID ")
			require.Regexp(t, `(?m)^  `+base.DiffIDs[0].Encoded()[:12]+`  .*#0 .*base:1; #1 .*app:1; #2 .*app:2`, out)
			require.Contains(t, out, "Total:  3 images, 3 distinct layers (1 shared)")
			require.Contains(t, out, "--image REF")

			js, err := json.Marshal(r)
			require.NoError(t, err)
			require.Contains(t, string(js), `"used_by":[0,1,2]`)
		})
	}
}

// A thin tarball of two images: without a base its left-out layers are
// absent; with one they are the base's; and choosing an image (Open's
// error listing them) counts the base's layers as present.
func TestInspectTarballThin(t *testing.T) {
	base, app1, app2 := sharedImages(t)
	dir := t.TempDir()
	basePath := imagetest.Legacy(t, base).Write(t, dir, "base.tar")
	lay := imagetest.OCI(t, false, app1, app2)
	lay.DelBlob(app1.BlobDigests[0])
	p := lay.Write(t, dir, "thin.tar")

	r, err := archive.InspectTarball(p, archive.OpenOptions{})
	require.NoError(t, err)
	require.Equal(t, 1, r.Images[0].AbsentLayers)
	require.Equal(t, 1, r.Images[1].AbsentLayers)
	require.True(t, r.Layers[0].Absent)
	require.Zero(t, r.Layers[0].StoredSize)
	var text bytes.Buffer
	require.NoError(t, r.WriteText(&text))
	t.Log("\n" + text.String())
	require.Contains(t, text.String(), "2 (1 absent)")
	require.Contains(t, text.String(), "1 layer is absent")

	r, err = archive.InspectTarball(p, archive.OpenOptions{Bases: []string{basePath}})
	require.NoError(t, err)
	require.Zero(t, r.Images[0].AbsentLayers)
	require.False(t, r.Layers[0].Absent)
	require.Equal(t, basePath, r.Layers[0].Base)

	// No --image: the error lists both images, absent without the base
	// only.
	_, err = imagetest.Open(t, p, archive.OpenOptions{})
	require.ErrorIs(t, err, archive.ErrAmbiguous)
	require.Equal(t, 2, strings.Count(err.Error(), "[absent]"), "%v", err)
	_, err = imagetest.Open(t, p, archive.OpenOptions{Bases: []string{basePath}})
	require.ErrorIs(t, err, archive.ErrAmbiguous)
	require.NotContains(t, err.Error(), "[absent]")
	t.Log(err)
}

// With AllowAbsent, a thin image opens with its left-out layers marked,
// and Inspect's report says so and how to supply them.
func TestOpenAllowAbsent(t *testing.T) {
	_, app1, _ := sharedImages(t)
	dir := t.TempDir()
	lay := imagetest.OCI(t, false, app1)
	lay.DelBlob(app1.BlobDigests[0])
	p := lay.Write(t, dir, "thin.tar")

	_, err := imagetest.Open(t, p, archive.OpenOptions{})
	require.True(t, errors.Is(err, archive.ErrLayerMissing), "%v", err)

	img, err := imagetest.Open(t, p, archive.OpenOptions{AllowAbsent: true})
	require.NoError(t, err)
	require.Equal(t, []int{0}, img.AbsentLayers())
	require.True(t, img.Layers[0].Absent)
	require.Nil(t, img.Layers[0].TarIndex)
	require.Equal(t, app1.DiffIDs[0], img.Layers[0].DiffID)
	require.False(t, img.Layers[1].Absent)
	require.NotNil(t, img.Layers[1].TarIndex)

	r := archive.Inspect(img, nil)
	require.True(t, r.Layers[0].Absent)
	require.False(t, r.Layers[1].Absent)
	require.Equal(t, r.Layers[1].StoredSize, r.StoredSize)
	var text bytes.Buffer
	require.NoError(t, r.WriteText(&text))
	out := text.String()
	t.Log("\n" + out)
	require.Regexp(t, `(?m)^  0  `+app1.DiffIDs[0].Encoded()[:12]+`  absent `, out)
	require.Contains(t, out, "1 of them absent")
	require.Contains(t, out, "--base BASE.tar")
	require.Contains(t, out, "imgmount complete "+p)
	js, err := json.Marshal(r)
	require.NoError(t, err)
	require.Contains(t, string(js), `"absent":true`)
}
