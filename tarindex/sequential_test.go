package tarindex

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/imgmount/imgmount/tarindex/gz"
	"github.com/stretchr/testify/require"
)

func TestSequentialAt(t *testing.T) {
	raw := bigTar(t)
	blob := gzipped(t, raw)
	ix, err := gz.Build(bytes.NewReader(blob), int64(len(blob)), 1<<20, func([]byte) error { return nil })
	require.NoError(t, err)
	s := newSequentialAt(ix, bytes.NewReader(blob))
	defer s.Close()
	// Forward scans, small jumps, jumps back and far ahead, the end.
	rng := rand.New(rand.NewPCG(1, 2))
	off := int64(0)
	for range 2000 {
		switch rng.IntN(10) {
		case 0:
			off = rng.Int64N(int64(len(raw)))
		case 1:
			off = max(off-rng.Int64N(1<<20), 0)
		default:
			off += rng.Int64N(8 << 10)
		}
		if off >= int64(len(raw)) {
			off = int64(len(raw)) - 1
		}
		p := make([]byte, 1+rng.IntN(4096))
		n, err := s.ReadAt(p, off)
		want := raw[off:min(off+int64(len(p)), int64(len(raw)))]
		require.Equal(t, len(want), n)
		if n < len(p) {
			require.ErrorIs(t, err, io.EOF)
		} else {
			require.NoError(t, err)
		}
		require.True(t, bytes.Equal(want, p[:n]), "at %d", off)
	}
	_, err = s.ReadAt(make([]byte, 1), int64(len(raw)))
	require.ErrorIs(t, err, io.EOF)
}
