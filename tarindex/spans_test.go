package tarindex

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A reader going forward finds the next span decoded ahead of it, and
// what it reads is the stream's bytes.
func TestSpansReadAhead(t *testing.T) {
	raw := bigTar(t)
	blob := gzipped(t, raw)
	_, seek, err := (&Cache{}).IndexCompressed("k", bytes.NewReader(blob), int64(len(blob)), CompressionGzip, "", CompressedOptions{})
	require.NoError(t, err)
	spans := NewSpans(64 << 20)
	rd := NewCompressed("layer", seek, bytes.NewReader(blob), spans)
	_, end0, _ := seek.Span(0)
	_, end1, ok := seek.Span(end0)
	require.True(t, ok, "the test needs several spans")

	p := make([]byte, 4096)
	_, err = rd.ReadAt(p, 0) // from the start: going forward
	require.NoError(t, err)
	require.Eventually(t, func() bool { return spans.Used() == end1 }, 5*time.Second, time.Millisecond,
		"the second span is read ahead")

	got := make([]byte, 0, len(raw))
	for off := int64(0); off < int64(len(raw)); {
		n, err := rd.ReadAt(p, off)
		got = append(got, p[:n]...)
		off += int64(n)
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
	}
	require.True(t, bytes.Equal(raw, got))
}

// Reads at random offsets decode only the spans they ask for.
func TestSpansNoReadAheadAtRandom(t *testing.T) {
	raw := bigTar(t)
	blob := gzipped(t, raw)
	_, seek, err := (&Cache{}).IndexCompressed("k", bytes.NewReader(blob), int64(len(blob)), CompressionGzip, "", CompressedOptions{})
	require.NoError(t, err)
	spans := NewSpans(64 << 20)
	rd := NewCompressed("layer", seek, bytes.NewReader(blob), spans)
	last, _, _ := seek.Span(int64(len(raw)) - 1)
	p := make([]byte, 100)
	_, err = rd.ReadAt(p, last+10) // the last span: nothing after it
	require.NoError(t, err)
	_, end0, _ := seek.Span(0)
	_, err = rd.ReadAt(p, end0+10) // the second span, after the last: a jump
	require.NoError(t, err)
	time.Sleep(10 * time.Millisecond)
	_, e1, _ := seek.Span(end0)
	require.Equal(t, (int64(len(raw))-last)+(e1-end0), spans.Used())
}

func TestCompressedNewReader(t *testing.T) {
	raw := bigTar(t)
	blob := multiMember(t, raw, 3)
	_, seek, err := (&Cache{}).IndexCompressed("k", bytes.NewReader(blob), int64(len(blob)), CompressionGzip, "", CompressedOptions{})
	require.NoError(t, err)
	spans := NewSpans(0)
	rd := NewCompressed("layer", seek, bytes.NewReader(blob), spans)
	for _, off := range []int64{0, 1, 5 << 20, int64(len(raw)) - 1, int64(len(raw))} {
		r, err := rd.NewReader(off)
		require.NoError(t, err)
		got, err := io.ReadAll(r)
		require.NoError(t, err)
		require.NoError(t, r.Close())
		require.True(t, bytes.Equal(raw[off:], got), "from %d", off)
	}
	require.Zero(t, spans.Used(), "past the span cache")

	zraw := bigTar(t)
	zblob := zstdFrames(t, zraw, 1<<20)
	_, zseek, err := (&Cache{}).IndexCompressed("z", bytes.NewReader(zblob), int64(len(zblob)), CompressionZstd, "", CompressedOptions{})
	require.NoError(t, err)
	r, err := NewCompressed("layer", zseek, bytes.NewReader(zblob), spans).NewReader(3 << 20)
	require.NoError(t, err)
	got, err := io.ReadAll(r)
	require.NoError(t, err)
	require.True(t, bytes.Equal(zraw[3<<20:], got))

	_, err = rd.NewReader(-1)
	require.Error(t, err)
}
