package fusefs

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/overlay/union"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// resident reports whether every page of the file at p is in the kernel's
// page cache, without reading it: mincore over a mapping of the file.
func resident(t *testing.T, p string) bool {
	t.Helper()
	f, err := os.Open(p)
	require.NoError(t, err)
	defer f.Close()
	fi, err := f.Stat()
	require.NoError(t, err)
	if fi.Size() == 0 {
		return true
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	require.NoError(t, err)
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0])))
	require.Zero(t, errno, "mincore %s", p)
	for _, v := range vec {
		if v&1 == 0 {
			return false
		}
	}
	return true
}

func noise(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// A tool that reads one file of a directory gets the directory's other
// small files from the page cache; listing a directory pushes nothing, and
// what is pushed reads back exactly as stored, sizes unchanged.
func TestPrefetchSiblings(t *testing.T) {
	sizes := []int{1, 511, 4095, 4096, 4097, 100_000, smallFile}
	var ms []imagetest.Entry
	want := map[string][]byte{}
	ms = append(ms, imagetest.DirMode("read", 0o755), imagetest.DirMode("listed", 0o755))
	for _, dir := range []string{"read", "listed"} {
		for i, size := range sizes {
			name := fmt.Sprintf("%s/f%02d", dir, i)
			want[name] = noise(uint64(i+1), size)
			ms = append(ms, imagetest.FileMode(name, string(want[name]), 0o644))
		}
		name := dir + "/too-big"
		want[name] = noise(99, smallFile+1)
		ms = append(ms, imagetest.FileMode(name, string(want[name]), 0o644))
	}
	tree, err := union.BuildUnion(imagetest.Image(t, imagetest.LayerTar(t, ms)))
	require.NoError(t, err)
	mnt, _ := mountTree(t, tree, Options{})
	p := func(s string) string { return filepath.Join(mnt, s) }

	for _, dir := range []string{"read", "listed"} {
		ents, err := os.ReadDir(p(dir))
		require.NoError(t, err)
		require.Len(t, ents, len(sizes)+1)
	}
	b, err := os.ReadFile(p("read/f00"))
	require.NoError(t, err)
	require.Equal(t, want["read/f00"], b)

	deadline := time.Now().Add(10 * time.Second)
	for i := range sizes {
		name := fmt.Sprintf("read/f%02d", i)
		for !resident(t, p(name)) {
			require.True(t, time.Now().Before(deadline), "%s was not pushed into the page cache", name)
			time.Sleep(10 * time.Millisecond)
		}
	}
	require.False(t, resident(t, p("read/too-big")), "a file over %d bytes is left to READ", smallFile)
	for i := range sizes {
		require.False(t, resident(t, p(fmt.Sprintf("listed/f%02d", i))), "listing a directory pushes nothing")
	}
	for name, body := range want {
		require.Equal(t, int64(len(body)), lstat(t, p(name)).Size, name)
		b, err := os.ReadFile(p(name))
		require.NoError(t, err, name)
		require.True(t, bytes.Equal(body, b), "%s reads back as stored", name)
	}
}

// Reads that jump around a big file get the whole file pushed; what is
// then read from the page cache is the stored content.
func TestPrefetchRandomReads(t *testing.T) {
	const size = 12<<20 + 123
	body := noise(3, size)
	tree, err := union.BuildUnion(imagetest.Image(t, imagetest.LayerTar(t, []imagetest.Entry{imagetest.FileMode("db", string(body), 0o644)})))
	require.NoError(t, err)
	mnt, _ := mountTree(t, tree, Options{})
	p := filepath.Join(mnt, "db")

	f, err := os.Open(p)
	require.NoError(t, err)
	defer f.Close()
	buf := make([]byte, 4096)
	for _, off := range []int64{0, 10 << 20, 2 << 20, 9 << 20, 4 << 20, 11 << 20} {
		n, err := f.ReadAt(buf, off)
		require.NoError(t, err)
		require.Equal(t, body[off:off+int64(n)], buf[:n])
	}
	deadline := time.Now().Add(10 * time.Second)
	for !resident(t, p) {
		require.True(t, time.Now().Before(deadline), "a file read at random was not pushed into the page cache")
		time.Sleep(10 * time.Millisecond)
	}
	require.Equal(t, int64(size), lstat(t, p).Size)
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	require.True(t, bytes.Equal(body, b), "the pushed file reads back as stored")
}

// Directories are listed without OPENDIR (no-opendir mode): a directory
// too big for one READDIRPLUS comes back whole and in order, and so does
// a second listing.
func TestListBigDirectory(t *testing.T) {
	ms := []imagetest.Entry{imagetest.DirMode("d", 0o755)}
	var names []string
	for i := range 3000 {
		name := fmt.Sprintf("entry-with-a-long-name-to-fill-the-buffer-%05d", i)
		names = append(names, name)
		ms = append(ms, imagetest.FileMode("d/"+name, name, 0o644))
	}
	tree, err := union.BuildUnion(imagetest.Image(t, imagetest.LayerTar(t, ms)))
	require.NoError(t, err)
	mnt, _ := mountTree(t, tree, Options{})
	for range 2 {
		ents, err := os.ReadDir(filepath.Join(mnt, "d"))
		require.NoError(t, err)
		got := make([]string, len(ents))
		for i, e := range ents {
			got[i] = e.Name()
		}
		require.Equal(t, names, got)
	}
	b, err := os.ReadFile(filepath.Join(mnt, "d", names[2999]))
	require.NoError(t, err)
	require.Equal(t, names[2999], string(b))
}

// -o noprefetch: reading a file brings nothing else into the page cache.
func TestNoPrefetch(t *testing.T) {
	body := noise(5, 10_000)
	tree, err := union.BuildUnion(imagetest.Image(t, imagetest.LayerTar(t, []imagetest.Entry{
		imagetest.DirMode("d", 0o755), imagetest.FileMode("d/a", string(body), 0o644), imagetest.FileMode("d/b", string(body), 0o644),
	})))
	require.NoError(t, err)
	mnt, _ := mountTree(t, tree, Options{MountOptions: []string{"noprefetch"}})
	_, err = os.ReadDir(filepath.Join(mnt, "d"))
	require.NoError(t, err)
	b, err := os.ReadFile(filepath.Join(mnt, "d", "a"))
	require.NoError(t, err)
	require.Equal(t, body, b)
	time.Sleep(300 * time.Millisecond) // what a push would need, many times over
	require.False(t, resident(t, filepath.Join(mnt, "d", "b")))
}
