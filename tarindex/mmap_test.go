package tarindex

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// mappingRSS is how many bytes of the mapping starting at data[0] are in
// the process's page tables (the Rss line of its /proc/self/smaps entry).
func mappingRSS(t *testing.T, data []byte) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	require.NoError(t, err)
	defer f.Close()
	start := fmt.Sprintf("%x-", uintptr(unsafe.Pointer(&data[0])))
	found := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, start) {
			found = true
		}
		if found && strings.HasPrefix(line, "Rss:") {
			kb, err := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			require.NoError(t, err)
			return kb << 10
		}
	}
	require.NoError(t, sc.Err())
	t.Fatalf("no smaps entry starts at %s", start)
	return 0
}

// Indexing and hashing a tarball through its Mapping's Reader leave none
// of its pages resident behind them (a million-file tarball used to count
// whole into the mount's memory), while a plain reader of the same
// mapping leaves them all, which shows the measure works.
func TestMappedScansReleasePages(t *testing.T) {
	var ms []member
	for i := range 3000 {
		ms = append(ms, file(fmt.Sprintf("d/f%04d", i), strings.Repeat("x", 8<<10)))
	}
	p := filepath.Join(t.TempDir(), "layer.tar")
	require.NoError(t, os.WriteFile(p, makeTar(t, tar.FormatPAX, ms...), 0o644))
	m, err := MapFile(p)
	require.NoError(t, err)
	defer m.Close()
	size := int64(len(m.Data))
	require.Greater(t, size, int64(20<<20))

	ix, err := Build(m.Reader(), 0, size)
	require.NoError(t, err)
	require.Len(t, ix.Entries, 3000)
	require.Less(t, mappingRSS(t, m.Data), int64(dropEvery), "index build")

	c := &Cache{}
	eh := c.startHash("k", m.Reader(), 0, size)
	<-eh.done
	require.NotEmpty(t, eh.sum)
	require.Less(t, mappingRSS(t, m.Data), int64(dropEvery), "hash")

	_, err = Build(bytes.NewReader(m.Data), 0, size)
	require.NoError(t, err)
	require.Greater(t, mappingRSS(t, m.Data), int64(dropEvery), "a plain reader keeps the header pages")
}
