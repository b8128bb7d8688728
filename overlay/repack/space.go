package repack

import (
	"errors"
	"fmt"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/union"
)

// ErrNoSpace: what a commit or export would write does not fit in the free
// space of its filesystem. It is found before writing, so that an image
// (say with a huge file of holes, or a layer that inflates a thousandfold)
// cannot fill the disk others share.
var ErrNoSpace = errors.New("not enough free space")

// checkSpace fails with ErrNoSpace if need bytes are more than free says
// (nil free: nothing is checked).
func checkSpace(free func() (int64, error), need int64, what string) error {
	if free == nil {
		return nil
	}
	avail, err := free()
	if err != nil || need <= avail {
		return nil // unknown: the writes will tell
	}
	return fmt.Errorf("%w: %s needs about %s, and %s is free", ErrNoSpace, what, archive.HumanSize(need), archive.HumanSize(avail))
}

// treeBytes is about what WriteTreeTar writes for t: each regular file's
// stored content once (a sparse file's data only), and two header blocks
// an entry.
func treeBytes(t *union.Tree) int64 {
	var n int64
	seen := map[uint64]bool{}
	union.Walk(t.Root, func(node *union.Node) {
		n += 2 * blockSize
		if node.IsDir() || seen[node.Ino] {
			return
		}
		if node.Nlink > 1 {
			seen[node.Ino] = true
		}
		n += union.NodeStat(node).Blocks * 512
	})
	return n
}

// outputBytes is about what the output of layers takes: the blobs it
// holds and a little for its headers, config and manifests.
func outputBytes(layers []outLayer) int64 {
	n := int64(64 << 10)
	for _, l := range layers {
		if !l.omit {
			n += l.size + 2*blockSize
		}
	}
	return n
}
