package tarindex

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

// Pieces of any size, down to one byte, index as the whole stream does:
// headers straddle pieces, and member data is skipped across many.
func TestIndexStreamPieces(t *testing.T) {
	raw := append(bigTar(t), make([]byte, 10240)...)
	want := build(t, raw).Entries
	for _, r := range []io.Reader{
		iotest.OneByteReader(bytes.NewReader(raw)),
		iotest.HalfReader(bytes.NewReader(raw)),
		iotest.DataErrReader(bytes.NewReader(raw)),
	} {
		ix, size, err := IndexStream(r, 0)
		require.NoError(t, err)
		require.NotNil(t, ix)
		require.Equal(t, int64(len(raw)), size)
		require.Equal(t, want, ix.Entries)
	}
}

func TestIndexStreamReadError(t *testing.T) {
	raw := bigTar(t)
	boom := errors.New("boom")
	r := io.MultiReader(bytes.NewReader(raw[:len(raw)/2]), iotest.ErrReader(boom))
	_, _, err := IndexStream(r, 0)
	require.ErrorIs(t, err, boom)
}

func TestAsyncHash(t *testing.T) {
	raw := bigTar(t)
	a := newAsyncHash(sha256.New())
	for off := 0; off < len(raw); {
		n := min(len(raw)-off, 1+off%(3*hashBlock/2)) // pieces smaller and bigger than a block
		a.write(raw[off : off+n])
		off += n
	}
	want := sha256.Sum256(raw)
	require.Equal(t, want[:], a.sum())
	a.stop() // after sum: nothing left to do

	b := newAsyncHash(sha256.New())
	b.write(raw)
	b.stop() // abandoned mid-way: the goroutine ends
}
