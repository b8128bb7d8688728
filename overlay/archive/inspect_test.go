package archive_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/tarindex"
	"github.com/stretchr/testify/require"
)

func TestInspectReport(t *testing.T) {
	dir := t.TempDir()
	b := imagetest.Build(t, imagetest.Simple([]string{"app:1"}, tarindex.CompressionGzip, tarindex.CompressionNone))
	other := imagetest.Build(t, imagetest.Spec{Tags: []string{"other:2"}, Layers: []imagetest.LayerSpec{{Files: map[string]string{"o": "o"}}}})
	p := imagetest.OCI(t, false, b, other).Write(t, dir, "app.tar")
	img, err := imagetest.Open(t, p, archive.OpenOptions{Image: "app:1"})
	require.NoError(t, err)

	r := archive.Inspect(img, []int64{1234, 0})
	require.Equal(t, p, r.Archive)
	require.Equal(t, archive.FormatOCI, r.Format)
	require.Len(t, r.Images, 2)
	require.Equal(t, []string{"app:1"}, r.Image.Tags)
	require.Equal(t, b.ConfigDigest, r.Image.ConfigDigest)
	require.Equal(t, "linux/amd64", r.Image.Platform)

	c := r.Config
	require.Equal(t, "linux", c.OS)
	require.Equal(t, "amd64", c.Architecture)
	require.Equal(t, []string{"PATH=/bin", "A=b"}, c.Env)
	require.Equal(t, []string{"/app/main"}, c.Entrypoint)
	require.Equal(t, []string{"--serve"}, c.Cmd)
	require.Equal(t, "/app", c.WorkingDir)
	require.Equal(t, "1000:1000", c.User)
	require.Equal(t, []string{"53/udp", "8080/tcp"}, c.ExposedPorts)
	require.Equal(t, map[string]string{"org.example": "yes"}, c.Labels)
	require.Equal(t, "2024-01-02T03:04:05Z", c.Created)

	require.Len(t, r.Layers, 2)
	l0, l1 := r.Layers[0], r.Layers[1]
	require.Equal(t, 0, l0.Index)
	require.Equal(t, b.DiffIDs[0].String(), l0.DiffID)
	require.Equal(t, b.BlobDigests[0].String(), l0.Digest)
	require.Equal(t, "application/vnd.oci.image.layer.v1.tar+gzip", l0.MediaType)
	require.Equal(t, "gzip", l0.Compression)
	require.Equal(t, int64(len(b.Blobs[0])), l0.StoredSize)
	require.Equal(t, int64(len(b.Tars[0])), l0.Size)
	require.Equal(t, 2, l0.Entries)
	require.Equal(t, "ADD rootfs.tar /", l0.CreatedBy)
	require.Equal(t, int64(1234), l0.HiddenBytes)
	require.Equal(t, "none", l1.Compression)
	require.Equal(t, "COPY main /app/main", l1.CreatedBy)
	require.Equal(t, int64(0), l1.HiddenBytes)
	require.Equal(t, l0.StoredSize+l1.StoredSize, r.StoredSize)
	require.Equal(t, l0.Size+l1.Size, r.Size)
	require.Equal(t, int64(1234), r.HiddenBytes)

	// A union whose Hidden does not match the layers is ignored, not indexed.
	r = archive.Inspect(img, []int64{5})
	require.Zero(t, r.Layers[0].HiddenBytes)

	var text bytes.Buffer
	require.NoError(t, archive.Inspect(img, nil).WriteText(&text))
	out := text.String()
	t.Log("\n" + out)
	require.Contains(t, out, "* app:1")
	require.Contains(t, out, "  other:2")
	require.Contains(t, out, `["/app/main"]`)
	require.Contains(t, out, "PATH=/bin")
	require.Contains(t, out, "53/udp, 8080/tcp")
	require.Contains(t, out, "org.example=yes")
	require.Contains(t, out, b.DiffIDs[0].Encoded()[:12])
	require.NotContains(t, out, b.DiffIDs[0].Encoded()[:13])
	require.Contains(t, out, "COPY main /app/main")
	require.Contains(t, out, "gzip")
	require.Regexp(t, `(?m)^\s+#\s+DIFF_ID\s+COMPRESSION\s+STORED\s+SIZE\s+ENTRIES\s+HIDDEN\s+CREATED_BY$`, out)
}

// Scripts parse the JSON: absent values are empty arrays and objects, never
// null.
func TestInspectJSONNoNulls(t *testing.T) {
	dir := t.TempDir()
	b := imagetest.Build(t, imagetest.Spec{Layers: []imagetest.LayerSpec{{Files: map[string]string{"a": "b"}}}})
	img, err := imagetest.Open(t, imagetest.OCI(t, false, b).Write(t, dir, "bare.tar"), archive.OpenOptions{})
	require.NoError(t, err)
	js, err := json.Marshal(archive.Inspect(img, nil))
	require.NoError(t, err)
	s := string(js)
	t.Log(s)
	require.NotContains(t, s, "null")
	for _, k := range []string{`"env":[]`, `"entrypoint":[]`, `"cmd":[]`, `"exposed_ports":[]`, `"labels":{}`, `"tags":[]`, `"volumes":[]`} {
		require.Contains(t, s, k)
	}

	empty, err := json.Marshal(archive.Inspect(&archive.Image{}, nil))
	require.NoError(t, err)
	require.NotContains(t, string(empty), "null")
	require.Contains(t, string(empty), `"layers":[]`)
	require.Contains(t, string(empty), `"images":[]`)
}

func TestInspectWriteTextError(t *testing.T) {
	r := archive.Inspect(&archive.Image{}, nil)
	require.Error(t, r.WriteText(failingWriter{}))
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestInspectHumanSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 999: "999 B", 1000: "1.00 kB", 45_200_000: "45.2 MB", 123_456_789_012: "123 GB"} {
		require.Equal(t, want, archive.HumanSize(n), n)
	}
	require.Equal(t, "abc def", archive.OneLine("abc\n\t def", 10))
	require.Equal(t, "abcdefghi…", archive.OneLine(strings.Repeat("abcdefghij", 3), 10))
}
