package tarindex

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fastCases are tar streams of every header kind the fast parser handles,
// and some it must leave to archive/tar.
func fastCases(t testing.TB) map[string][]byte {
	t.Helper()
	mk := func(fill func(tw *tar.Writer) error) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		if err := fill(tw); err != nil {
			t.Fatal(err)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	mt := time.Unix(1700000000, 123456789)
	hdrs := func(format tar.Format) []*tar.Header {
		long := strings.Repeat("long/", 30) + "name"
		return []*tar.Header{
			{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt.Truncate(time.Second)},
			{Name: "usr/", Typeflag: tar.TypeDir, Mode: 0o755, Uid: 1, Gid: 2, ModTime: mt.Truncate(time.Second)},
			{Name: "usr/bin/tool", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 5, ModTime: mt.Truncate(time.Second)},
			{Name: "usr/hard", Typeflag: tar.TypeLink, Linkname: "usr/bin/tool", ModTime: mt.Truncate(time.Second)},
			{Name: "usr/sym", Typeflag: tar.TypeSymlink, Linkname: "../etc/x", ModTime: mt.Truncate(time.Second)},
			{Name: "dev/null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666, ModTime: mt.Truncate(time.Second)},
			{Name: "dev/loop", Typeflag: tar.TypeBlock, Devmajor: 7, Devminor: 0, ModTime: mt.Truncate(time.Second)},
			{Name: "run/fifo", Typeflag: tar.TypeFifo, Mode: 0o600, ModTime: mt.Truncate(time.Second)},
			{Name: long, Typeflag: tar.TypeReg, Size: 3, ModTime: mt.Truncate(time.Second)},
			{Name: "a/" + strings.Repeat("p", 120) + "/file", Typeflag: tar.TypeReg, Size: 1, ModTime: mt.Truncate(time.Second)},
			{Name: "etc/.wh.gone", Typeflag: tar.TypeReg, ModTime: mt.Truncate(time.Second)},
			{Name: "big/uid", Typeflag: tar.TypeReg, Uid: 1 << 22, Gid: 70000, Size: 2, ModTime: mt.Truncate(time.Second)},
		}
	}
	write := func(tw *tar.Writer, hs []*tar.Header, format tar.Format) error {
		for _, h := range hs {
			h := *h
			h.Format = format
			if err := tw.WriteHeader(&h); err != nil {
				return err
			}
			if h.Typeflag == tar.TypeReg {
				if _, err := tw.Write(bytes.Repeat([]byte{'x'}, int(h.Size))); err != nil {
					return err
				}
			}
		}
		return nil
	}
	cases := map[string][]byte{
		"empty": {},
		"gnu":   mk(func(tw *tar.Writer) error { return write(tw, hdrs(tar.FormatGNU), tar.FormatGNU) }),
		"gnu-small": mk(func(tw *tar.Writer) error {
			hs := hdrs(tar.FormatGNU)
			return write(tw, hs[:len(hs)-1], tar.FormatGNU) // no base-256 uid
		}),
		"pax":     mk(func(tw *tar.Writer) error { return write(tw, hdrs(tar.FormatPAX), tar.FormatPAX) }),
		"default": mk(func(tw *tar.Writer) error { return write(tw, hdrs(tar.FormatUnknown), tar.FormatUnknown) }),
		"pax-records": mk(func(tw *tar.Writer) error {
			return errors.Join(
				tw.WriteHeader(&tar.Header{Name: "x", Typeflag: tar.TypeReg, Size: 2, ModTime: mt, Format: tar.FormatPAX,
					PAXRecords: map[string]string{"SCHILY.xattr.user.b": "2", "SCHILY.xattr.security.capability": "\x01\x00", "SCHILY.xattr.user.empty": "", "comment": "hi"}}),
				writeN(tw, 2),
				tw.WriteHeader(&tar.Header{Name: "neg", Typeflag: tar.TypeReg, ModTime: time.Unix(-5, 250), Format: tar.FormatPAX}),
			)
		}),
		"global": mk(func(tw *tar.Writer) error {
			return errors.Join(
				tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "git archive"}}),
				tw.WriteHeader(&tar.Header{Name: "f", Typeflag: tar.TypeReg, Size: 1, ModTime: mt.Truncate(time.Second)}),
				writeN(tw, 1),
			)
		}),
		"unsafe":  mk(func(tw *tar.Writer) error { return tw.WriteHeader(&tar.Header{Name: "../x", Typeflag: tar.TypeReg}) }),
		"nottar":  bytes.Repeat([]byte("not a tar "), 100),
		"sparse":  mk(func(tw *tar.Writer) error { return tw.WriteHeader(&tar.Header{Name: "s", Typeflag: tar.TypeGNUSparse}) }),
		"badtype": mk(func(tw *tar.Writer) error { return tw.WriteHeader(&tar.Header{Name: "v", Typeflag: 'V'}) }),
	}
	// Damaged versions of the PAX case: truncated at every block edge and
	// in the middle, a flipped byte, no end blocks.
	pax := cases["pax-records"]
	for _, n := range []int{512, 1024, 1536, 700, len(pax) - 1024, len(pax) - 512} {
		if n < len(pax) {
			cases["truncated-"+strconv.Itoa(n)] = pax[:n]
		}
	}
	flip := bytes.Clone(cases["gnu"])
	flip[600] ^= 0x40
	cases["flipped"] = flip
	return cases
}

func writeN(tw *tar.Writer, n int) error {
	_, err := tw.Write(bytes.Repeat([]byte{'y'}, n))
	return err
}

// checkSame asserts that Build (fast path first) and archive/tar's path
// agree on data placed at base 1536 of a larger source.
func checkSame(t *testing.T, name string, data []byte) {
	t.Helper()
	src := append(bytes.Repeat([]byte{0xee}, 1536), data...)
	src = append(src, bytes.Repeat([]byte{0xdd}, 700)...)
	r := bytes.NewReader(src)
	slow, slowErr := buildSlow(r, 1536, int64(len(data)), 0)
	got, err := Build(r, 1536, int64(len(data)))
	if (err == nil) != (slowErr == nil) || (err != nil && err.Error() != slowErr.Error()) {
		t.Fatalf("%s: Build error %v, archive/tar's %v", name, err, slowErr)
	}
	if err != nil {
		return
	}
	if !reflect.DeepEqual(got, slow) {
		t.Fatalf("%s: Build and archive/tar disagree:\n fast %+v\n slow %+v", name, got, slow)
	}
	fast, ferr := buildFast(r, 1536, int64(len(data)), 0)
	if ferr == nil && !reflect.DeepEqual(fast, slow) {
		t.Fatalf("%s: buildFast disagrees", name)
	}
}

func TestBuildFastMatchesArchiveTar(t *testing.T) {
	for name, data := range fastCases(t) {
		checkSame(t, name, data)
	}
	// The fast path must actually take the common streams.
	for _, name := range []string{"gnu-small", "pax", "default", "pax-records", "global", "empty"} {
		data := fastCases(t)[name]
		if _, err := buildFast(bytes.NewReader(data), 0, int64(len(data)), 0); err != nil {
			t.Errorf("%s: buildFast fell back: %v", name, err)
		}
	}
}

// TestBuildFastRealLayers compares the two parsers on the layers of the
// integration tests' images, when they have been built.
func TestBuildFastRealLayers(t *testing.T) {
	dir := filepath.Join("..", "integration", "testdata", "out")
	files, _ := filepath.Glob(filepath.Join(dir, "*.tar"))
	if len(files) == 0 {
		t.Skip("no integration test images in " + dir)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		checkSame(t, f, data)
		outer, err := Build(bytes.NewReader(data), 0, int64(len(data)))
		if err != nil {
			continue
		}
		for _, e := range outer.Entries {
			if e.Type == TypeReg && e.Size > 0 && DetectCompression(data[e.Offset:min(e.Offset+8, int64(len(data)))]) == CompressionNone {
				// Any member may be a layer tar; others fail alike in both.
				sub := data[e.Offset : e.Offset+e.Size]
				checkSame(t, f+":"+e.Name, sub)
			}
		}
	}
}

func FuzzBuildFast(f *testing.F) {
	for _, data := range fastCases(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSame(t, "fuzz", data)
	})
}

func TestCleanAlready(t *testing.T) {
	for _, name := range []string{"a", "a/b", "a/b/", "./a", "./a/b//", "a//b", "a/./b", "a/../b", "..", ".", "./", "/a", "a/..", "...", "a/.../b", ".a/b", "./.", "a/b/.", "././a", "a///"} {
		got, err := CleanName(name)
		c := path.Clean("/" + name)
		want := "."
		if c != "/" {
			want = c[1:]
		}
		if err == nil && got != want {
			t.Errorf("CleanName(%q) = %q, want %q", name, got, want)
		}
	}
}
