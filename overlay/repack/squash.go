package repack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/cow"
	"github.com/imgmount/imgmount/overlay/union"
	"github.com/imgmount/imgmount/tarindex"
)

// unionWithUpper builds the union of img's layers with the upper
// directory's edits on top (just the image's when upper is ""): the upper
// directory is written as a layer into tempDir, indexed and stacked as one
// more layer, so that the union rules are exactly those of the mount of a
// committed image. release frees the layer's mapping and file; the tree
// must not be used afterwards.
func unionWithUpper(ctx context.Context, img *archive.Image, upper, tempDir string, warn func(string)) (t *union.Tree, release func() error, err error) {
	nothing := func() error { return nil }
	if upper == "" {
		t, err := union.BuildUnion(img)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", img.Archive, err)
		}
		warnAll(warn, img.Archive, t.Warnings)
		return t, nothing, nil
	}
	path := filepath.Join(tempDir, "upper-layer.tar")
	blob, err := writeLayerBlob(path, tarindex.CompressionNone, func(w io.Writer) (int, error) {
		return cow.WriteUpperLayer(cancellable(ctx, w), upper, warn)
	})
	if err != nil {
		return nil, nil, err
	}
	if blob.Entries == 0 {
		os.Remove(path)
		return unionWithUpper(ctx, img, "", tempDir, warn)
	}
	layer, unmap, err := mapLayerFile(blob, len(img.Layers))
	if err != nil {
		os.Remove(path)
		return nil, nil, err
	}
	release = func() error {
		return errors.Join(unmap(), os.Remove(path))
	}
	stacked := &archive.Image{Archive: img.Archive, Format: img.Format, Ref: img.Ref, Config: img.Config,
		Layers: append(append([]*archive.Layer{}, img.Layers...), layer)}
	t, err = union.BuildUnion(stacked)
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("%s with the upper directory %s: %w", img.Archive, upper, err)
	}
	warnAll(warn, img.Archive, t.Warnings)
	return t, release, nil
}

// warnAll passes the entries a tree left out (union.Tree.Warnings) to warn.
func warnAll(warn func(string), archive string, warnings []string) {
	if warn == nil {
		return
	}
	for _, w := range warnings {
		warn(archive + ": " + w)
	}
}

// mapLayerFile maps and indexes an uncompressed layer blob as layer index.
func mapLayerFile(blob *LayerBlob, index int) (*archive.Layer, func() error, error) {
	m, err := tarindex.MapFile(blob.Path)
	if err != nil {
		return nil, nil, err
	}
	ix, err := tarindex.Build(bytes.NewReader(m.Data), 0, int64(len(m.Data)))
	if err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("%s: reading back the layer written from the upper directory: %w", blob.Path, err)
	}
	l := &archive.Layer{
		Index:       index,
		DiffID:      blob.DiffID,
		Digest:      blob.Digest,
		MediaType:   blob.MediaType(),
		Compression: tarindex.CompressionNone,
		StoredSize:  blob.Size,
		Size:        blob.TarSize,
		CreatedBy:   "upper directory",
		Stored:      m.Data,
		Data:        m.Data,
		Content:     bytes.NewReader(m.Data),
		TarIndex:    ix,
	}
	return l, m.Close, nil
}
