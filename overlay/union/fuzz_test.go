package union

import (
	"archive/tar"
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

// fuzzNames are the path components fuzzed layers are made of: few, so
// that entries collide, with every name the union treats specially.
var fuzzNames = []string{"a", "b", "d", "l", "..", ".", "", ".wh.a", ".wh.d", ".wh.l", ".wh..wh..opq", ".wh..wh.plnk", "/"}

// fuzzPath decodes a path of up to 7 components from data.
func fuzzPath(data []byte) (string, []byte) {
	if len(data) == 0 {
		return "a", nil
	}
	n := int(data[0] % 8)
	data = data[1:]
	var parts []string
	for ; n > 0 && len(data) > 0; n-- {
		parts = append(parts, fuzzNames[int(data[0])%len(fuzzNames)])
		data = data[1:]
	}
	return strings.Join(parts, "/"), data
}

// fuzzLayers decodes layers of entries: each entry is a kind byte (its
// high bit starts a new layer), a path and, for links, a target.
func fuzzLayers(data []byte) [][]imagetest.Entry {
	layers := [][]imagetest.Entry{nil}
	for len(data) > 0 && len(layers) < 8 {
		kind := data[0]
		data = data[1:]
		if kind&0x80 != 0 {
			layers = append(layers, nil)
		}
		var name, target string
		name, data = fuzzPath(data)
		var e imagetest.Entry
		switch kind % 6 {
		case 0:
			e = imagetest.File(name, name)
		case 1:
			e = imagetest.Dir(name)
		case 2:
			target, data = fuzzPath(data)
			e = imagetest.Symlink(name, target)
		case 3:
			target, data = fuzzPath(data)
			e = imagetest.Hardlink(name, target)
		case 4:
			e = imagetest.Fifo(name)
		case 5:
			e = imagetest.File(name, "").With(func(h *tar.Header) { h.Typeflag = tar.TypeChar; h.Devmajor = 1 })
		}
		layers[len(layers)-1] = append(layers[len(layers)-1], e)
	}
	return layers
}

// fuzzTar writes entries as a layer tar, if archive/tar can.
func fuzzTar(entries []imagetest.Entry) ([]byte, bool) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Hdr
		h.Format = tar.FormatPAX
		if tw.WriteHeader(&h) != nil {
			return nil, false
		}
		if _, err := tw.Write(e.Body); err != nil {
			return nil, false
		}
	}
	return buf.Bytes(), tw.Close() == nil
}

// FuzzBuildUnion builds the union and the per-layer view of arbitrary
// layers: they must be built or refused as corrupt, never panic or hang,
// and a built union keeps its invariants: no whiteout names, every path
// inside the root, hardlinked paths sharing one entry, link counts right.
func FuzzBuildUnion(f *testing.F) {
	f.Add([]byte{1, 1, 0, 0, 2, 0, 1, 0x80, 0, 2, 0, 7, 2, 1, 3, 1, 1, 1, 2})
	f.Add([]byte{2, 1, 3, 2, 0, 2, 0, 2, 3, 0, 0x80, 0, 2, 3, 1})
	f.Add([]byte{1, 1, 2, 0, 2, 0, 1, 0x83, 2, 2, 0, 1, 0, 0x80, 0, 2, 2, 10})
	f.Fuzz(func(t *testing.T, data []byte) {
		defer imagetest.Watchdog(10 * time.Second)()
		img := &archive.Image{}
		for i, entries := range fuzzLayers(data) {
			b, ok := fuzzTar(entries)
			if !ok {
				return // archive/tar cannot write it
			}
			ix, err := tarindex.Build(bytes.NewReader(b), 0, int64(len(b)))
			if err != nil {
				return // a layer Open refuses (unsafe names): never reaches the union
			}
			img.Layers = append(img.Layers, &archive.Layer{Index: i, DiffID: digest.FromBytes(b), Data: b, TarIndex: ix})
		}
		tr, err := BuildUnion(img)
		if err != nil {
			require.ErrorIs(t, err, archive.ErrCorruptLayer)
		} else {
			checkInvariants(t, tr)
			Walk(tr.Root, func(n *Node) {
				if n.Parent != nil {
					require.NotContains(t, []string{"", ".", ".."}, n.Name, "a path component that leaves its directory")
					require.NotContains(t, n.Name, "/")
				}
			})
		}
		if _, err := BuildLayersView(img); err != nil {
			require.ErrorIs(t, err, archive.ErrCorruptLayer)
		}
	})
}
