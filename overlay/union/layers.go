package union

import (
	"fmt"

	"github.com/imgmount/imgmount/overlay/archive"
)

// BuildLayersView returns a tree whose synthesized root holds one directory
// per layer, named NN-<first 12 hex digits of the diff_id> (NNN- from 100
// layers on), each showing that layer's entries exactly as stored:
//
//   - whiteout files and opaque markers appear as the empty regular files
//     they are, AUFS `.wh..wh.*` entries included;
//   - duplicate paths: the last wins (directory over directory: attributes
//     of the last, children merged), as extracting the layer alone would;
//   - missing parents are synthesized (0755, Layer -1, Entry nil); as in the
//     union, a non-directory standing where a parent must be is replaced,
//     except that a whiteout file never displaces anything: one below a
//     non-directory of its layer is not shown;
//   - a hardlink resolves to its target as it stands at that point of the
//     layer's tar, and shares its inode; a link whose target is not (yet) in
//     the layer, or is a directory, shows as the empty regular file the link
//     entry is (its Linkname kept, Type TypeReg, Size 0);
//   - a layer's "." directory entry, if any, gives its folder's attributes
//     (the last one wins); otherwise the folder is a synthesized 0755 one.
//
// Inode numbers are unique across the whole tree (hardlinks within a layer
// share one) and come from a walk in name order, so they are stable.
func BuildLayersView(img *archive.Image) (*Tree, error) {
	width := 2
	if len(img.Layers) >= 100 {
		width = 3
	}
	root := &Node{Layer: -1}
	var warnings []string
	inodes := map[*Node]*inode{}
	for i, l := range img.Layers {
		b := newTreeBuilder(true, inodes)
		b.stepLimit = stepBudget(img)
		if err := b.applyLayer(i, l); err != nil {
			return nil, err
		}
		warnings = append(warnings, b.allWarnings()...)
		sub := b.root
		sub.Name = fmt.Sprintf("%0*d-%s", width, i, shortHex(l))
		sub.Parent = root
		root.children = append(root.children, sub)
	}
	finishTree(root, nil, inodes)
	return &Tree{Root: root, Layers: img.Layers, Warnings: warnings}, nil
}

func shortHex(l *archive.Layer) string {
	h := l.DiffID.Encoded()
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}
