package union

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/tarindex"
	"github.com/stretchr/testify/require"
)

// diffLines is Diff's result as "K path what..." lines.
func diffLines(t *testing.T, a, b *archive.Image) []string {
	t.Helper()
	ta, err := BuildUnion(a)
	require.NoError(t, err)
	tb, err := BuildUnion(b)
	require.NoError(t, err)
	changes, err := Diff(ta, tb)
	require.NoError(t, err)
	out := []string{}
	for _, c := range changes {
		line := string(c.Kind) + " " + c.Path
		switch c.Kind {
		case Added:
			require.Nil(t, c.A, c.Path)
			require.NotNil(t, c.B, c.Path)
			require.Zero(t, c.What)
		case Removed:
			require.Nil(t, c.B, c.Path)
			require.NotNil(t, c.A, c.Path)
			require.Zero(t, c.What)
		case Modified:
			require.NotZero(t, c.What, c.Path)
			for _, w := range []struct {
				d    Diffs
				name string
			}{{DiffType, "type"}, {DiffContent, "content"}, {DiffMode, "mode"}, {DiffOwner, "owner"}, {DiffTarget, "target"}, {DiffDevice, "device"}, {DiffXattrs, "xattrs"}} {
				if c.What&w.d != 0 {
					line += " " + w.name
				}
			}
			if c.What&DiffXattrs != 0 {
				line += fmt.Sprintf(" +%v -%v ~%v", c.XattrsAdded, c.XattrsRemoved, c.XattrsChanged)
			}
		}
		out = append(out, line)
	}
	return out
}

func withXattr(e imagetest.Entry, kv ...string) imagetest.Entry {
	return e.With(func(h *tar.Header) {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			h.PAXRecords["SCHILY.xattr."+kv[i]] = kv[i+1]
		}
	})
}

func chardev(name string, major, minor int64) imagetest.Entry {
	return imagetest.Entry{Hdr: tar.Header{Name: name, Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: major, Devminor: minor, ModTime: imagetest.MTime}}
}

func owned(e imagetest.Entry, uid, gid int) imagetest.Entry {
	return e.With(func(h *tar.Header) { h.Uid, h.Gid = uid, gid })
}

func TestDiffEqual(t *testing.T) {
	base := []imagetest.Entry{imagetest.Dir("etc"), imagetest.File("etc/passwd", "root:x:0:0\n"), imagetest.Symlink("bin", "usr/bin")}
	img := imagetest.Layers(t, base, []imagetest.Entry{imagetest.File("app", "x")})
	require.Empty(t, diffLines(t, img, img))
	// The same layers built again (other mappings, same diff_ids).
	require.Empty(t, diffLines(t, img, imagetest.Layers(t, base, []imagetest.Entry{imagetest.File("app", "x")})))
	// The same tree from other layers: re-adding a file with the same
	// content and attributes (but another mtime) changes nothing;
	// a synthesized directory equals a stored 0755 root-owned one.
	flat := imagetest.Layers(t, []imagetest.Entry{
		imagetest.File("etc/passwd", "root:x:0:0\n").With(func(h *tar.Header) { h.ModTime = h.ModTime.Add(3600e9) }),
		imagetest.Symlink("bin", "usr/bin"), imagetest.File("app", "x"),
	})
	require.Empty(t, diffLines(t, img, flat))
	// Two empty trees.
	require.Empty(t, diffLines(t, imagetest.Layers(t), imagetest.Layers(t)))
}

func TestDiffChanges(t *testing.T) {
	a := imagetest.Layers(t, []imagetest.Entry{
		imagetest.Dir("etc"),
		imagetest.File("etc/same", "same"),
		imagetest.File("etc/grows", "short"),
		imagetest.File("etc/edited", "aaaa"),
		imagetest.FileMode("etc/mode", "m", 0o644),
		owned(imagetest.File("etc/owner", "o"), 0, 0),
		imagetest.Symlink("etc/link", "same"),
		imagetest.Dir("gone"), imagetest.Dir("gone/sub"), imagetest.File("gone/sub/f", "f"),
		imagetest.File("old", "old"),
		imagetest.File("becomes-dir", "file"),
		imagetest.Dir("becomes-file"), imagetest.File("becomes-file/child", "c"),
		chardev("dev/null", 1, 3),
		chardev("dev/zero", 1, 5),
		imagetest.Fifo("dev/fifo"),
		withXattr(imagetest.File("x/caps", "c"), "security.capability", "\x01\x00", "user.keep", "k", "user.drop", "d"),
		imagetest.Dir("a"), imagetest.File("a/b", "1"), imagetest.File("a-b", "1"),
	})
	b := imagetest.Layers(t, []imagetest.Entry{
		imagetest.Dir("etc"),
		imagetest.File("etc/same", "same"),
		imagetest.File("etc/grows", "longer"),
		imagetest.File("etc/edited", "bbbb"),
		imagetest.FileMode("etc/mode", "m", 0o4755),
		owned(imagetest.File("etc/owner", "o"), 1000, 0),
		imagetest.Symlink("etc/link", "other"),
		imagetest.File("new", "new"),
		imagetest.Dir("newdir"), imagetest.File("newdir/f", "f"),
		imagetest.Dir("becomes-dir"), imagetest.File("becomes-dir/child", "c"),
		imagetest.File("becomes-file", "file"),
		chardev("dev/null", 1, 3),
		chardev("dev/zero", 1, 7),
		imagetest.FileMode("dev/fifo", "", 0o600),
		withXattr(imagetest.File("x/caps", "c"), "security.capability", "\x01\x01", "user.keep", "k", "user.new", "n"),
		imagetest.Dir("a"), imagetest.File("a/b", "2"), imagetest.File("a-b", "2"),
	})
	require.Equal(t, []string{
		"M a-b content",
		"M a/b content",
		"M becomes-dir type mode",
		"A becomes-dir/child",
		"M becomes-file type mode",
		"D becomes-file/child",
		"M dev/fifo type",
		"M dev/zero device",
		"M etc/edited content",
		"M etc/grows content",
		"M etc/link target",
		"M etc/mode mode",
		"M etc/owner owner",
		"D gone",
		"D gone/sub",
		"D gone/sub/f",
		"A new",
		"A newdir",
		"A newdir/f",
		"D old",
		"M x/caps xattrs +[user.new] -[user.drop] ~[security.capability]",
	}, sortedLike(diffLines(t, a, b)))
	// The reverse swaps A and D.
	rev := diffLines(t, b, a)
	require.Contains(t, rev, "D new")
	require.Contains(t, rev, "A old")
	require.Contains(t, rev, "D becomes-dir/child")
	require.Contains(t, rev, "M x/caps xattrs +[user.drop] -[user.new] ~[security.capability]")
}

// sortedLike checks that lines come sorted by path and returns them.
func sortedLike(lines []string) []string {
	for i := 1; i < len(lines); i++ {
		if comparePaths(strings.Fields(lines[i-1])[1], strings.Fields(lines[i])[1]) >= 0 {
			panic("not sorted: " + lines[i-1] + " / " + lines[i])
		}
	}
	return lines
}

func TestDiffOrderAndRoot(t *testing.T) {
	a := imagetest.Layers(t, []imagetest.Entry{imagetest.File("-first", "1")})
	b := imagetest.Layers(t, []imagetest.Entry{imagetest.DirMode(".", 0o700), imagetest.File("-first", "2")})
	require.Equal(t, []string{"M . mode", "M -first content"}, diffLines(t, a, b))
}

// Whiteouts and opaque directories remove what is below them; a layer
// that re-creates a path with the same content leaves it unchanged.
func TestDiffWhiteouts(t *testing.T) {
	base := []imagetest.Entry{imagetest.Dir("d"), imagetest.File("d/x", "x"), imagetest.File("d/y", "y"), imagetest.File("keep", "k")}
	a := imagetest.Layers(t, base)
	b := imagetest.Layers(t, base, []imagetest.Entry{imagetest.Opaque("d"), imagetest.File("d/x", "x"), imagetest.Whiteout("keep")})
	require.Equal(t, []string{"D d/y", "D keep"}, diffLines(t, a, b))
}

// Two unions over prefixes of one image's layers share entries: equal
// nodes are never hashed.
func TestDiffLayerPrefixes(t *testing.T) {
	img := imagetest.Layers(t,
		[]imagetest.Entry{imagetest.File("big", strings.Repeat("b", 1000)), imagetest.File("x", "1")},
		[]imagetest.Entry{imagetest.File("x", "22"), imagetest.File("y", "y")},
		[]imagetest.Entry{imagetest.Whiteout("y"), imagetest.File("x", "22")},
	)
	upTo := func(n int) *Tree {
		tr, err := BuildUnion(&archive.Image{Layers: img.Layers[:n]})
		require.NoError(t, err)
		return tr
	}
	d := &differ{a: upTo(1), b: upTo(2)}
	d.node(d.a.Root, d.b.Root)
	require.Empty(t, d.jobs, "no hashing: big is the same entry, x changed size")
	changes, err := Diff(upTo(1), upTo(2))
	require.NoError(t, err)
	require.Len(t, changes, 2)
	require.Equal(t, "x", changes[0].Path)
	require.Equal(t, DiffContent, changes[0].What)
	require.Equal(t, 0, changes[0].A.Layer)
	require.Equal(t, 1, changes[0].B.Layer)
	require.Equal(t, Added, changes[1].Kind)
	// Layer 2 deletes y and writes x again with layer 1's content: hashed,
	// and found equal.
	d = &differ{a: upTo(2), b: upTo(3)}
	d.node(d.a.Root, d.b.Root)
	require.Len(t, d.jobs, 2)
	changes, err = Diff(upTo(2), upTo(3))
	require.NoError(t, err)
	require.Len(t, changes, 1)
	require.Equal(t, Removed, changes[0].Kind)
	require.Equal(t, "y", changes[0].Path)
	// Nothing against the first layer.
	changes, err = Diff(upTo(0), upTo(1))
	require.NoError(t, err)
	require.Len(t, changes, 2)
}

// Layers with one diff_id stored at different offsets (as in two
// tarballs) hold the same entries: equal without hashing.
func TestDiffSameBlobElsewhere(t *testing.T) {
	data := imagetest.LayerTar(t, []imagetest.Entry{imagetest.File("a", "same size 1"), imagetest.File("b", "same size 2")})
	img := imagetest.Image(t, data)
	shifted := append(bytes.Repeat([]byte{0xEE}, 1536), data...)
	ix, err := tarindex.Build(bytes.NewReader(shifted), 1536, int64(len(data)))
	require.NoError(t, err)
	l := *img.Layers[0]
	l.Data, l.TarIndex = shifted, ix
	other := &archive.Image{Layers: []*archive.Layer{&l}}
	ta, err := BuildUnion(img)
	require.NoError(t, err)
	tb, err := BuildUnion(other)
	require.NoError(t, err)
	require.NotEqual(t, ta.Find("a").Entry.Offset, tb.Find("a").Entry.Offset)
	require.True(t, sameStored(ta, ta.Find("a"), tb, tb.Find("a")))
	require.False(t, sameStored(ta, ta.Find("a"), tb, tb.Find("b")), "same size, another entry")
	d := &differ{a: ta, b: tb}
	d.node(ta.Root, tb.Root)
	require.Empty(t, d.jobs)
	require.Empty(t, d.out)

	// Another diff_id: hashed, and found equal.
	img2 := imagetest.Layers(t, []imagetest.Entry{imagetest.File("b", "same size 2"), imagetest.File("a", "same size 1")})
	t2, err := BuildUnion(img2)
	require.NoError(t, err)
	d = &differ{a: ta, b: t2}
	d.node(ta.Root, t2.Root)
	require.Len(t, d.jobs, 4)
	changes, err := Diff(ta, t2)
	require.NoError(t, err)
	require.Empty(t, changes)
}

func TestDiffSparseAndHardlinks(t *testing.T) {
	content := "start" + strings.Repeat("\x00", 5000) + "end"
	sparse := imagetest.Image(t, imagetest.LayerTar(t, []imagetest.Entry{imagetest.Dir("s")},
		imagetest.RawSparse("s/f", int64(len(content)), map[int64]string{0: "start", 5005: "end"})))
	plain := imagetest.Layers(t, []imagetest.Entry{imagetest.Dir("s"), imagetest.File("s/f", content)})
	require.Empty(t, diffLines(t, sparse, plain))
	plain2 := imagetest.Layers(t, []imagetest.Entry{imagetest.Dir("s"), imagetest.File("s/f", strings.Replace(content, "end", "END", 1))})
	require.Equal(t, []string{"M s/f content"}, diffLines(t, sparse, plain2))

	tr, err := BuildUnion(sparse)
	require.NoError(t, err)
	sum, err := ContentSHA256(tr, tr.Find("s/f"))
	require.NoError(t, err)
	require.Equal(t, sha256.Sum256([]byte(content)), sum)

	// A hardlink shows its target's content: no change where the bytes
	// are the same.
	linked := imagetest.Layers(t, []imagetest.Entry{imagetest.File("t", "body"), imagetest.Hardlink("l", "t")})
	copied := imagetest.Layers(t, []imagetest.Entry{imagetest.File("t", "body"), imagetest.File("l", "body")})
	require.Empty(t, diffLines(t, linked, copied))
}

func TestDiffCorruptLayer(t *testing.T) {
	data := imagetest.LayerTar(t, []imagetest.Entry{imagetest.File("f", "0123456789")})
	img := imagetest.Image(t, data)
	other := imagetest.Layers(t, []imagetest.Entry{imagetest.File("f", "abcdefghij")})
	ta, err := BuildUnion(img)
	require.NoError(t, err)
	tb, err := BuildUnion(other)
	require.NoError(t, err)
	// The mapping ends inside the file's content.
	off := ta.Find("f").Entry.Offset
	img.Layers[0].Data = data[:off+4]
	_, err = Diff(ta, tb)
	require.ErrorIs(t, err, archive.ErrCorruptLayer)
}
