package repack

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/imgmount/imgmount/internal/progress"
	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/union"
	"github.com/imgmount/imgmount/tarindex"
)

// exportChunk is how much file content WriteTreeTar hands the tar writer at
// a time.
const exportChunk = 1 << 20

// WriteTreeTar writes the tree t (a union) as one plain tar to w: what
// `docker export` gives of a container made from the image, and the single
// layer of a squashed image. It returns the number of entries written.
//
// Entries come depth first in name order, a directory before its contents;
// the root is an entry ("./") only when a layer gave it attributes.
// Directories no layer stores are 0755 root:root with mtime 0, as the mount
// shows them. Nodes sharing an inode are written once and then as
// hardlinks to that first name. Sparse files are written as sparse
// members (PAX 1.0), holes left out. Headers are PAX, with xattrs, nanosecond mtimes and no user or
// group names, so the same tree always gives the same bytes.
func WriteTreeTar(w io.Writer, t *union.Tree) (int, error) {
	tw := &treeWriter{out: w, tw: tar.NewWriter(w), tree: t, links: map[uint64]string{}}
	if t.Root.Entry != nil {
		if err := tw.write(t.Root, "./"); err != nil {
			return tw.count, err
		}
	}
	if err := tw.writeChildren(t.Root, ""); err != nil {
		return tw.count, err
	}
	if err := tw.tw.Close(); err != nil {
		return tw.count, fmt.Errorf("writing the tar: %w", err)
	}
	return tw.count, nil
}

type treeWriter struct {
	out   io.Writer // what tw writes to, for sparse members (see sparse.go)
	tw    *tar.Writer
	tree  *union.Tree
	links map[uint64]string // Ino -> first name written, for nodes with Nlink > 1
	buf   []byte            // for sparse files
	count int
}

// writeChildren writes n's subtree; dir is n's path with a trailing slash
// ("" for the root), built as the walk descends: asking each node for its
// path would cost the square of the depth.
func (w *treeWriter) writeChildren(n *union.Node, dir string) error {
	for _, c := range n.Children() {
		name := dir + c.Name
		if c.IsDir() {
			name += "/"
		}
		if err := w.write(c, name); err != nil {
			return err
		}
		if c.IsDir() {
			if err := w.writeChildren(c, name); err != nil {
				return err
			}
		}
	}
	return nil
}

// nodeWhere names a node written as name and the layer it comes from, for
// errors.
func (w *treeWriter) nodeWhere(n *union.Node, name string) string {
	if n.Layer < 0 {
		return name
	}
	return fmt.Sprintf("%s (layer %d, %s)", name, n.Layer, archive.ShortDigest(w.tree.Layers[n.Layer].DiffID))
}

func (w *treeWriter) write(n *union.Node, name string) error {
	hdr := nodeHeader(n, name)
	if hdr.Typeflag == tar.TypeReg && n.Nlink > 1 {
		if first, ok := w.links[n.Ino]; ok {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
		} else {
			w.links[n.Ino] = name
		}
	}
	if hdr.Typeflag == tar.TypeReg && n.Entry.Sparse != nil {
		return w.writeSparse(n, hdr)
	}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: writing its tar header: %w", w.nodeWhere(n, hdr.Name), err)
	}
	w.count++
	if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
		return nil
	}
	if err := w.copyContent(n); err != nil {
		return fmt.Errorf("%s: copying its content: %w", w.nodeWhere(n, hdr.Name), err)
	}
	return nil
}

// nodeHeader is the tar header of a tree node written under name.
func nodeHeader(n *union.Node, name string) *tar.Header {
	hdr := &tar.Header{Name: name, Format: tar.FormatPAX}
	e := n.Entry
	if e == nil {
		hdr.Typeflag, hdr.Mode, hdr.ModTime = tar.TypeDir, 0o755, time.Unix(0, 0)
		return hdr
	}
	hdr.Mode = int64(e.Mode & 0o7777)
	hdr.Uid, hdr.Gid = int(e.UID), int(e.GID)
	hdr.ModTime = time.Unix(e.MtimeSec, int64(e.Mtime))
	switch e.Type {
	case tarindex.TypeDir:
		hdr.Typeflag = tar.TypeDir
	case tarindex.TypeSymlink:
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.Linkname
	case tarindex.TypeChar, tarindex.TypeBlock:
		hdr.Typeflag = tar.TypeChar
		if e.Type == tarindex.TypeBlock {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(e.Devmajor), int64(e.Devminor)
	case tarindex.TypeFifo:
		hdr.Typeflag = tar.TypeFifo
	default: // regular files; hardlinks are resolved in the tree
		hdr.Typeflag, hdr.Size = tar.TypeReg, e.Size
	}
	if len(e.Xattrs) > 0 {
		hdr.PAXRecords = make(map[string]string, len(e.Xattrs))
		for _, x := range e.Xattrs {
			hdr.PAXRecords["SCHILY.xattr."+x.Name] = x.Value
		}
	}
	return hdr
}

// writeSparse writes a sparse regular file as a sparse member.
func (w *treeWriter) writeSparse(n *union.Node, hdr *tar.Header) error {
	if err := w.tw.Flush(); err != nil {
		return err
	}
	m := sparseMember{hdr: hdr, size: n.Entry.Size, frags: n.Entry.Sparse,
		read: func(p []byte, off int64) (int, error) { return w.tree.ReadAt(n, p, off) }}
	if err := writeSparse(w.out, m, w.buffer()); err != nil {
		return fmt.Errorf("%s: writing it as a sparse member: %w", w.nodeWhere(n, hdr.Name), err)
	}
	w.count++
	return nil
}

func (w *treeWriter) buffer() []byte {
	if w.buf == nil {
		w.buf = make([]byte, exportChunk)
	}
	return w.buf
}

// copyContent writes a regular file's content a chunk at a time
// (union.Tree.Bytes: slices of an uncompressed layer's mapping, else read
// into the buffer; never sparse). A layer that ends before the file does
// is corrupt.
func (w *treeWriter) copyContent(n *union.Node) error {
	for off := int64(0); off < n.Entry.Size; {
		chunk, err := w.tree.Bytes(n, off, exportChunk, w.buffer())
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return archive.Errorf(archive.ErrCorruptLayer, "%w", err)
		}
		if err != nil {
			return err
		}
		if _, err := w.tw.Write(chunk); err != nil {
			return err
		}
		off += int64(len(chunk))
	}
	return nil
}

func orEOF(err error) error {
	if err == nil {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ExportOptions says what Export writes.
type ExportOptions struct {
	// Upper is an upper directory whose edits go over the image ("" for
	// none).
	Upper string
	// TempDir receives the upper directory's layer while Export runs.
	TempDir string
	// Warn, if set, hears about upper entries that cannot be exported
	// (sockets).
	Warn func(string)
	// Tasks, if set, hears the bytes written.
	Tasks progress.Tasks
	// Free, if set, tells the bytes free where the output goes: an export
	// that would not fit stops before writing (ErrNoSpace).
	Free func() (int64, error)
	// Context, if set, cancels the work: it stops at its next write,
	// returning the context's error.
	Context context.Context
}

// Export writes the union root filesystem of img, with the upper
// directory's edits if one is given, to w as one plain tar (see
// WriteTreeTar). It returns the number of entries written.
func Export(img *archive.Image, w io.Writer, opts ExportOptions) (int, error) {
	t, release, err := unionWithUpper(opts.Context, img, opts.Upper, opts.TempDir, opts.Warn)
	if err != nil {
		return 0, err
	}
	defer release()
	need := treeBytes(t)
	if err := checkSpace(opts.Free, need, "the export"); err != nil {
		return 0, fmt.Errorf("%s: %w", img.Archive, err)
	}
	var n int
	err = withTask(opts.Context, opts.Tasks, "exporting the root filesystem", need, w, func(w io.Writer) (err error) {
		n, err = WriteTreeTar(w, t)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("%s: exporting: %w", img.Archive, err)
	}
	return n, nil
}
