package tarindex

import (
	"archive/tar"
	"bytes"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

func TestIndexOuter(t *testing.T) {
	layerA := bigTar(t)
	layerB := richTar(t, 20) // sparse members: not indexed on the pass
	raw := makeTar(t, tar.FormatPAX,
		file("manifest.json", `[{"Config":"c.json"}]`),
		file("a/layer.tar", string(layerA)),
		file("b/layer.tar", string(layerB)),
		file("empty", ""),
		member{hdr: tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "a/layer.tar"}},
	)
	blob := multiMember(t, raw, 3)
	c := &Cache{Dir: t.TempDir()}
	for _, pass := range []string{"built", "loaded"} {
		out, err := c.IndexOuter("outer", bytes.NewReader(blob), int64(len(blob)), CompressionGzip, CompressedOptions{})
		require.NoError(t, err, pass)
		want := build(t, raw)
		require.Equal(t, want.Entries, out.Index.Entries, pass)
		require.Equal(t, want.End, out.Index.End, pass)
		require.Equal(t, int64(len(raw)), out.Seek.Size())
		rd := NewCompressed("outer", out.Seek, bytes.NewReader(blob), NewSpans(0))
		for _, e := range want.Entries {
			if e.Type != TypeReg {
				continue
			}
			m, ok := out.Members[e.Offset]
			require.True(t, ok, e.Name)
			require.Equal(t, digest.FromBytes(raw[e.Offset:e.Offset+e.Size]), m.Digest, e.Name)
			switch e.Name {
			case "a/layer.tar":
				require.NotNil(t, m.Tar, pass)
				inner, err := Build(bytes.NewReader(raw), e.Offset, e.Size)
				require.NoError(t, err)
				require.Equal(t, inner.Entries, m.Tar.Entries, pass)
				require.Equal(t, inner.End, m.Tar.End)
				requireSameContent(t, layerA, rebased(m.Tar, -e.Offset), offsetReader{rd, e.Offset})
			default:
				require.Nil(t, m.Tar, e.Name)
			}
		}
	}
}

func TestIndexOuterBadInput(t *testing.T) {
	raw := makeTar(t, tar.FormatPAX, file("a/layer.tar", string(bigTar(t))))
	blob := gzipped(t, raw)
	c := &Cache{}
	_, err := c.IndexOuter("k", bytes.NewReader(blob[:len(blob)/2]), int64(len(blob)/2), CompressionGzip, CompressedOptions{})
	require.Error(t, err)
	notTar := gzipped(t, bytes.Repeat([]byte("not a tar "), 1000))
	_, err = c.IndexOuter("k", bytes.NewReader(notTar), int64(len(notTar)), CompressionGzip, CompressedOptions{})
	require.ErrorIs(t, err, ErrNotTar)
	bomb := gzipped(t, makeTar(t, tar.FormatPAX, file("zeros", string(make([]byte, 8<<20)))))
	_, err = (&Cache{MaxRatio: 10, MinLimit: 1}).IndexOuter("k", bytes.NewReader(bomb), int64(len(bomb)), CompressionGzip, CompressedOptions{})
	require.ErrorIs(t, err, ErrTooLarge)
	_, err = c.IndexOuter("k", bytes.NewReader(blob), int64(len(blob)), CompressionGzip, CompressedOptions{MaxEntries: 100})
	require.ErrorIs(t, err, ErrTooManyEntries)
}

// rebased is a copy of ix with its offsets moved by delta.
func rebased(ix *Index, delta int64) *Index {
	cp := &Index{Entries: append([]Entry(nil), ix.Entries...), End: ix.End}
	for i := range cp.Entries {
		cp.Entries[i].Sparse = append([]Fragment(nil), cp.Entries[i].Sparse...)
	}
	cp.rebase(delta)
	return cp
}

// offsetReader reads r from base on.
type offsetReader struct {
	r    *Compressed
	base int64
}

func (o offsetReader) ReadAt(p []byte, off int64) (int, error) { return o.r.ReadAt(p, o.base+off) }
