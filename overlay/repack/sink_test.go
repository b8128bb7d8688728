package repack

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

// commitTo commits img with opts into a fresh file opened with flag, or
// into memory (flag < 0), and returns the bytes.
func commitTo(t *testing.T, img *archive.Image, opts CommitOptions, flag int) ([]byte, *CommitResult) {
	t.Helper()
	opts.Created = commitTime
	opts.TempDir = t.TempDir()
	if flag < 0 {
		var buf bytes.Buffer
		res, err := Commit(img, &buf, opts)
		require.NoError(t, err)
		return buf.Bytes(), res
	}
	p := filepath.Join(t.TempDir(), "out.tar")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|flag, 0o644)
	require.NoError(t, err)
	// Something before the commit: the tarball starts at the file's
	// position, not at 0.
	_, err = f.WriteString("prefix")
	require.NoError(t, err)
	res, err := Commit(img, f, opts)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, "prefix", string(b[:6]))
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(p, &st))
	require.Less(t, st.Blocks*512, st.Size+64<<10, "the blocks reserved for the output and not used are given back")
	return b[6:], res
}

// Writing into a file (layers copied file to file, a squash written in
// place) gives the very bytes writing into a pipe gives.
func TestCommitIntoFileSameBytes(t *testing.T) {
	img, _, in := simpleImage(t, "docker25")
	require.NotNil(t, img.Layers[1].StoredFile, "an uncompressed tarball's layers can be copied file to file")
	u := smallUpper(t)
	base, err := archive.StoredDiffIDs(in, t.TempDir())
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		opts CommitOptions
	}{
		{"append", CommitOptions{Upper: u.Dir}},
		{"append gzip docker", CommitOptions{Upper: u.Dir, Compression: tarindex.CompressionGzip, Format: OutputDocker}},
		{"thin", CommitOptions{Upper: u.Dir, ThinFrom: base}},
		{"squash", CommitOptions{Upper: u.Dir, Squash: true}},
		{"squash zstd oci", CommitOptions{Upper: u.Dir, Squash: true, Compression: tarindex.CompressionZstd, Format: OutputOCI}},
		{"squash no upper", CommitOptions{Squash: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, wres := commitTo(t, img, tc.opts, -1)
			for _, flag := range []int{os.O_RDWR, os.O_WRONLY} {
				got, res := commitTo(t, img, tc.opts, flag)
				require.Equal(t, want, got, "open flags %#o", flag)
				require.Equal(t, wres.ConfigDigest, res.ConfigDigest)
				require.Equal(t, wres.NewLayer.DiffID, res.NewLayer.DiffID)
				require.Equal(t, wres.Omitted, res.Omitted)
			}
		})
	}
}

// A squash whose layer the receiving side already has is left out, in
// place as through a file.
func TestCommitSquashThinInPlace(t *testing.T) {
	img, _, _ := simpleImage(t, "docker25")
	_, first := commitTo(t, img, CommitOptions{Squash: true}, os.O_RDWR)
	thin := map[digest.Digest]bool{first.NewLayer.DiffID: true}
	want, wres := commitTo(t, img, CommitOptions{Squash: true, ThinFrom: thin}, -1)
	got, res := commitTo(t, img, CommitOptions{Squash: true, ThinFrom: thin}, os.O_RDWR)
	require.Equal(t, want, got)
	require.Equal(t, []digest.Digest{first.NewLayer.DiffID}, res.Omitted)
	require.Equal(t, wres.Omitted, res.Omitted)
	require.NotContains(t, tarMembersOf(t, got), archive.BlobPath(first.NewLayer.Digest))
}

func tarMembersOf(t *testing.T, b []byte) map[string][]byte {
	p := filepath.Join(t.TempDir(), "x.tar")
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return tarMembers(t, p)
}

// A header that outgrows the block reserved for it (a layer past 8 GiB
// needs PAX records) moves what follows it.
func TestSinkFillGrows(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	require.NoError(t, err)
	defer f.Close()
	s := newTarSink(f)
	defer s.close()
	require.True(t, s.inPlace())
	_, err = s.Write([]byte("head"))
	require.NoError(t, err)
	at, err := s.reserve(3)
	require.NoError(t, err)
	body := bytes.Repeat([]byte("0123456789"), copyChunk/10+7) // more than one chunk to move
	_, err = s.Write(body)
	require.NoError(t, err)
	require.NoError(t, s.fill(at, 3, []byte("HEADER")))
	_, err = s.Write([]byte("tail"))
	require.NoError(t, err)
	require.NoError(t, s.flush())
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	require.Equal(t, "headHEADER"+string(body)+"tail", string(got))
}

// hashPipe hashes and writes exactly what it is given, whatever the sizes
// of the writes against its chunks.
func TestHashPipe(t *testing.T) {
	data := make([]byte, 3*hashChunk+12345)
	for i := range data {
		data[i] = byte(i * 7 / 5)
	}
	for _, step := range []int{1000, hashChunk - 1, hashChunk, 2*hashChunk + 3, len(data)} {
		var out bytes.Buffer
		p := newHashPipe(&out)
		for off := 0; off < len(data); off += step {
			n, err := p.Write(data[off:min(off+step, len(data))])
			require.NoError(t, err)
			require.Equal(t, min(step, len(data)-off), n)
		}
		h, err := p.flush()
		require.NoError(t, err)
		require.Equal(t, digest.FromBytes(data), h.digest(), "step %d", step)
		require.Equal(t, int64(len(data)), h.n)
		require.Equal(t, data, out.Bytes(), "step %d", step)
		p.close()
	}
}

// Dropping the page-table entries of a shared file mapping leaves it
// readable, with the same bytes.
func TestUnmapPagesKeepsMapping(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	want := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16+100)
	require.NoError(t, os.WriteFile(p, want, 0o644))
	m, err := tarindex.MapFile(p)
	require.NoError(t, err)
	defer m.Close()
	require.Equal(t, want, m.Data)
	unmapPages(m.Data[100 : 2<<20+100])
	unmapPages(m.Data[1:])
	require.Equal(t, want, m.Data)
}
