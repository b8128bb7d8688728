package union

import (
	"fmt"
	"testing"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/imagetest"
	"github.com/imgmount/imgmount/tarindex"
	"github.com/stretchr/testify/require"
)

func viewName(img *archive.Image, i int) string {
	return fmt.Sprintf("%02d-%s", i, img.Layers[i].DiffID.Encoded()[:12])
}

// checkView checks what must hold of every layers view.
func checkView(t *testing.T, img *archive.Image, tr *Tree) {
	t.Helper()
	require.Equal(t, uint64(1), tr.Root.Ino)
	require.Nil(t, tr.Root.Entry)
	require.Nil(t, tr.Hidden)
	require.Len(t, tr.Root.Children(), len(img.Layers))
	inoOf := map[uint64][]*Node{}
	Walk(tr.Root, func(n *Node) {
		inoOf[n.Ino] = append(inoOf[n.Ino], n)
		if n.Entry != nil {
			require.NotEqual(t, tarindex.TypeHardlink, n.Entry.Type)
		}
		if n.IsDir() {
			subdirs := 0
			for i, c := range n.Children() {
				require.Same(t, n, c.Parent)
				if i > 0 {
					require.Less(t, n.Children()[i-1].Name, c.Name)
				}
				if c.IsDir() {
					subdirs++
				}
			}
			require.EqualValues(t, 2+subdirs, n.Nlink, n.Path())
		}
	})
	for ino, ns := range inoOf {
		if len(ns) == 1 {
			continue
		}
		for _, n := range ns {
			require.False(t, n.IsDir(), "directory shares inode %d", ino)
			require.EqualValues(t, len(ns), n.Nlink)
			require.Same(t, ns[0].Entry, n.Entry)
		}
	}
	// Every node of a layer's folder shows that layer's entries.
	for i, top := range tr.Root.Children() {
		Walk(top, func(n *Node) {
			if n.Entry != nil && n.Layer != i {
				t.Errorf("%s: layer %d in folder %d", n.Path(), n.Layer, i)
			}
		})
	}
}

func TestLayersView(t *testing.T) {
	img := imagetest.Layers(t,
		[]imagetest.Entry{imagetest.DirMode("./", 0o700), imagetest.File("a", "1"), imagetest.File("b", "2"), imagetest.Dir("d"), imagetest.File("d/old", "o")},
		[]imagetest.Entry{imagetest.Whiteout("a"), imagetest.File("d/c", "3"), imagetest.Opaque("d"), imagetest.Hardlink("h", "b"),
			imagetest.File("dup", "first"), imagetest.File("dup", "second"), imagetest.File(".wh..wh.plnk/1.2", "p")},
		[]imagetest.Entry{imagetest.File("x", "x"), imagetest.Hardlink("y", "x"), imagetest.Hardlink("z", "y")})
	tr, err := BuildLayersView(img)
	require.NoError(t, err)
	checkView(t, img, tr)
	l0, l1, l2 := viewName(img, 0), viewName(img, 1), viewName(img, 2)
	var names []string
	for _, c := range tr.Root.Children() {
		names = append(names, c.Name)
	}
	require.Equal(t, []string{l0, l1, l2}, names)

	// Layer 0: as stored, its "." entry giving the folder's attributes.
	top0 := tr.Find(l0)
	require.EqualValues(t, 0o700, top0.Entry.Mode)
	require.Equal(t, 0, top0.Layer)
	require.Equal(t, "1", fileContent(t, tr, l0+"/a"))
	require.Equal(t, "o", fileContent(t, tr, l0+"/d/old"))

	// Layer 1: whiteouts and the opaque marker are the empty files they
	// are; nothing of layer 0 shows; duplicates: last wins; implied
	// parents synthesized; a link to a file of another layer is the empty
	// file the link entry is.
	top1 := tr.Find(l1)
	require.Nil(t, top1.Entry)
	require.Equal(t, -1, top1.Layer)
	require.Equal(t, "", fileContent(t, tr, l1+"/.wh.a"))
	require.Equal(t, "", fileContent(t, tr, l1+"/d/.wh..wh..opq"))
	require.Equal(t, "p", fileContent(t, tr, l1+"/.wh..wh.plnk/1.2"))
	require.Nil(t, tr.Find(l1+"/a"))
	require.Nil(t, tr.Find(l1+"/d/old"))
	require.Equal(t, "3", fileContent(t, tr, l1+"/d/c"))
	require.Nil(t, tr.Find(l1+"/d").Entry, "implied parent")
	require.Equal(t, "second", fileContent(t, tr, l1+"/dup"))
	h := tr.Find(l1 + "/h")
	require.Equal(t, tarindex.TypeReg, h.Entry.Type)
	require.Zero(t, h.Entry.Size)
	require.Equal(t, "b", h.Entry.Linkname, "the stored link keeps its target name")
	require.Equal(t, "h", h.Entry.Name)
	require.EqualValues(t, 1, h.Nlink)
	require.Equal(t, tarindex.TypeHardlink, img.Layers[1].TarIndex.Entries[3].Type, "the index is not modified")

	// Layer 2: links within the layer share one inode.
	x, y, z := tr.Find(l2+"/x"), tr.Find(l2+"/y"), tr.Find(l2+"/z")
	require.Equal(t, x.Ino, y.Ino)
	require.Equal(t, x.Ino, z.Ino)
	require.EqualValues(t, 3, z.Nlink)
	require.Equal(t, "x", fileContent(t, tr, l2+"/z"))

	// Stable: a second build numbers every path alike.
	again, err := BuildLayersView(img)
	require.NoError(t, err)
	require.Equal(t, inodes(tr), inodes(again))
}

func TestLayersViewDuplicatesAndTypeChanges(t *testing.T) {
	img := imagetest.Layers(t,
		[]imagetest.Entry{
			imagetest.DirMode("dd", 0o700), imagetest.File("dd/a", "a"), imagetest.DirMode("dd", 0o750), imagetest.File("dd/b", "b"),
			imagetest.Dir("d2f"), imagetest.File("d2f/c", "c"), imagetest.File("d2f", "file"),
			imagetest.File("f", "f"), imagetest.File("f/g", "g"),
			imagetest.File("later", "v1"), imagetest.Hardlink("early", "later"), imagetest.File("later", "v2"),
			imagetest.Hardlink("fwd", "notyet"), imagetest.File("notyet", "n"),
			imagetest.Dir("dir"), imagetest.Hardlink("todir", "dir"),
		})
	tr, err := BuildLayersView(img)
	require.NoError(t, err)
	checkView(t, img, tr)
	l0 := viewName(img, 0)
	dd := tr.Find(l0 + "/dd")
	require.EqualValues(t, 0o750, dd.Entry.Mode)
	require.Len(t, dd.Children(), 2)
	require.Equal(t, "file", fileContent(t, tr, l0+"/d2f"))
	require.Equal(t, "g", fileContent(t, tr, l0+"/f/g"), "a later entry below a file replaces it, as in the union")
	require.Equal(t, "v1", fileContent(t, tr, l0+"/early"), "the link keeps what it linked to")
	require.Equal(t, "v2", fileContent(t, tr, l0+"/later"))
	require.Equal(t, "", fileContent(t, tr, l0+"/fwd"), "target only later in the layer: the stored entry")
	require.Equal(t, "", fileContent(t, tr, l0+"/todir"), "directory target: the stored entry")
}

func TestLayersViewWhiteoutBelowFile(t *testing.T) {
	img := imagetest.Layers(t,
		[]imagetest.Entry{imagetest.Dir("srv/shared"), imagetest.File("srv/shared/owned", "o")},
		[]imagetest.Entry{imagetest.File("srv/shared", "now a file"), imagetest.Whiteout("srv/shared/owned")})
	lv, err := BuildLayersView(img)
	require.NoError(t, err)
	checkView(t, img, lv)
	l1 := viewName(img, 1)
	require.Equal(t, "now a file", fileContent(t, lv, l1+"/srv/shared"), "a whiteout never displaces a file")
	u, err := BuildUnion(img)
	require.NoError(t, err)
	require.Equal(t, "now a file", fileContent(t, u, "srv/shared"))
}

func TestLayersViewNames(t *testing.T) {
	layers := make([][]imagetest.Entry, 100)
	for i := range layers {
		layers[i] = []imagetest.Entry{imagetest.File(fmt.Sprintf("f%d", i), "x")}
	}
	img := imagetest.Layers(t, layers...)
	tr, err := BuildLayersView(img)
	require.NoError(t, err)
	checkView(t, img, tr)
	kids := tr.Root.Children()
	require.Equal(t, "000-"+img.Layers[0].DiffID.Encoded()[:12], kids[0].Name, "three digits from 100 layers on")
	require.Equal(t, "099-"+img.Layers[99].DiffID.Encoded()[:12], kids[99].Name)
	require.NotNil(t, tr.Find(kids[42].Name+"/f42"))

	img = imagetest.Layers(t, layers[:99]...)
	tr, err = BuildLayersView(img)
	require.NoError(t, err)
	require.Equal(t, "98-"+img.Layers[98].DiffID.Encoded()[:12], tr.Root.Children()[98].Name)

	tr, err = BuildLayersView(&archive.Image{})
	require.NoError(t, err)
	require.Empty(t, tr.Root.Children())
	require.True(t, tr.Root.IsDir())
}
