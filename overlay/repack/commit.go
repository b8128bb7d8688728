// Package repack writes what a mount becomes: a new image with the upper
// directory's edits as one more layer (Commit), the whole root filesystem as
// one layer keeping the config (Commit with Squash), a tarball without the
// layers a base already holds (CommitOptions.ThinFrom), or the root
// filesystem as a plain tar (Export). Layers that stay are copied byte for
// byte; outputs are docker-archive, OCI layout, or both in one tarball.
//
// It also rewrites tarballs without mounting them: Thin leaves out the layer
// blobs a receiving side already has, which Have describes (its chain IDs
// and diff_ids: HaveOf reads them from a tarball, ParseHave from a list that
// `imgmount have` printed), and Complete puts them back from base tarballs.
package repack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/imgmount/imgmount/internal/progress"
	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/cow"
	"github.com/imgmount/imgmount/overlay/union"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
)

// OutputFormat is the layout of the tarball a commit writes.
type OutputFormat string

const (
	// OutputCombined is what Docker 25+ saves: an OCI image layout
	// (oci-layout, index.json, blobs/sha256/...) plus a manifest.json
	// pointing at the same blobs, so that docker load, podman load and OCI
	// tools (skopeo oci-archive:, umoci) all read it.
	OutputCombined OutputFormat = ""
	// OutputDocker is manifest.json and the blobs only (docker-archive).
	OutputDocker OutputFormat = "docker"
	// OutputOCI is the OCI image layout only (oci-archive).
	OutputOCI OutputFormat = "oci"
)

// CommitOptions says what a commit makes of an image.
type CommitOptions struct {
	// Upper is the upper directory whose edits become the new layer. ""
	// (or an upper directory with no entries) adds no layer: the history
	// entry is then marked empty_layer, as Docker does for config-only
	// steps.
	Upper string
	// Squash makes a one-layer image of the whole union (Upper included);
	// see editConfig for what of the config is kept.
	Squash bool
	Format OutputFormat
	// Compression of the new layer. The image's own layers are copied as
	// they are stored, never re-encoded.
	Compression tarindex.Compression
	// Tags name the new image ("name:tag"); nil keeps the image's.
	Tags []string
	// Message is the history entry's comment; CreatedBy its created_by.
	Message   string
	CreatedBy string
	Config    ConfigEdits
	// Created is the new config's time (and its history entry's).
	Created time.Time
	// ThinFrom lists diff_ids whose layer blobs are left out of the output
	// (the manifest and config still list them): a thin tarball, to be
	// used where a base tarball supplies them.
	ThinFrom map[digest.Digest]bool
	// TempDir receives the new layer while the commit runs; the caller
	// removes it.
	TempDir string
	// Progress and Warn, if set, hear about long steps and about upper
	// entries that cannot be committed (sockets).
	Progress func(string)
	Warn     func(string)
	// Tasks, if set, hears the bytes written: of the new (or squashed)
	// layer, then of the image tarball.
	Tasks progress.Tasks
	// Free, if set, tells the bytes free where the output and TempDir are:
	// a commit that would not fit stops before writing (ErrNoSpace).
	Free func() (int64, error)
	// Context, if set, cancels the work: it stops at its next write,
	// returning the context's error.
	Context context.Context
}

// CommitResult describes what Commit wrote.
type CommitResult struct {
	ConfigDigest   digest.Digest // the new image ID
	ManifestDigest digest.Digest // of the OCI manifest ("" for OutputDocker)
	NewLayer       *LayerBlob    // nil when no layer was added
	Layers         int           // layers of the new image
	Tags           []string      // as written
	Omitted        []digest.Digest
}

func (o *CommitOptions) progress(format string, a ...any) { progressf(o.Progress, format, a...) }

// Commit writes to w a new image tarball: img's layers, copied byte for
// byte, plus one new layer made from the upper directory (or, with
// Squash, a single layer holding the union), a config edited as opts says
// and a manifest, in the layout opts.Format names.
func Commit(img *archive.Image, w io.Writer, opts CommitOptions) (*CommitResult, error) {
	if err := checkFormat(opts.Format); err != nil {
		return nil, err
	}
	tags := opts.Tags
	if tags == nil {
		tags = dedupeTags(img.Ref.Tags)
	}
	var (
		layers []outLayer
		blob   *LayerBlob
		err    error
	)
	sink := newTarSink(w)
	sink.ctx = opts.Context
	defer sink.close()
	if opts.Squash {
		t, release, err := squashTree(img, &opts)
		if err != nil {
			return nil, err
		}
		defer release()
		var end func(error)
		if layers, blob, end, err = squashLayer(img, t, sink, &opts); err != nil {
			return nil, err
		}
		defer func() { end(errors.New("the commit failed")) }() // no-op once the layer is written
	} else {
		for _, l := range img.Layers {
			layers = append(layers, storedLayer(img, l))
		}
		if opts.Upper != "" {
			if blob, err = upperLayer(&opts); err != nil {
				return nil, err
			}
		}
		if blob != nil {
			layers = append(layers, blobLayer(blob))
		}
	}
	// The config names the new layer's diff_id, which a squash written in
	// place knows only once written: config is called after the layers.
	// It is tried on a stand-in first, so that a config it cannot edit
	// stops the commit before it writes anything.
	config := func(b *LayerBlob) ([]byte, error) {
		ch := configChange{edits: opts.Config, created: opts.Created, squash: opts.Squash,
			history: historyEntry{Created: opts.Created.UTC().Format(time.RFC3339Nano), CreatedBy: opts.CreatedBy, Comment: opts.Message}}
		if b != nil {
			ch.diffIDs = []digest.Digest{b.DiffID}
		} else {
			ch.history.EmptyLayer = true
		}
		cfg, err := editConfig(img.ConfigRaw, ch)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", img.Archive, err)
		}
		return cfg, nil
	}
	if blob == nil && opts.Squash {
		_, err = config(&LayerBlob{DiffID: digest.FromString("")})
	} else {
		_, err = config(blob)
	}
	if err != nil {
		return nil, err
	}
	for i := range layers {
		if layers[i].write == nil && opts.ThinFrom[layers[i].diffID] {
			layers[i].omit = true
		}
	}
	if err := checkSpace(opts.Free, outputBytes(layers), "the output"); err != nil {
		return nil, fmt.Errorf("%s: %w", img.Archive, err)
	}
	sink.preallocate(outputBytes(layers))
	ow := &outputWriter{format: opts.Format, mtime: opts.Created.Truncate(time.Second), progress: opts.progress, thin: opts.ThinFrom}
	task := progress.Start(opts.Tasks, "writing the image", outputBytes(layers))
	sink.task = task
	err = ow.write(sink, layers, func() ([]byte, error) {
		if blob == nil && ow.newLayer != nil {
			blob = ow.newLayer
		}
		return config(blob)
	}, img.Config.Platform, tags)
	task.Done(err)
	if err != nil {
		return nil, err
	}
	res := &CommitResult{NewLayer: blob, Layers: len(layers)}
	for _, l := range layers {
		if l.omit {
			res.Omitted = append(res.Omitted, l.diffID)
		}
	}
	res.ConfigDigest, res.ManifestDigest, res.Tags = ow.configDigest, ow.manifestDigest, ow.tags
	return res, nil
}

func checkFormat(f OutputFormat) error {
	switch f {
	case OutputCombined, OutputDocker, OutputOCI:
		return nil
	}
	return fmt.Errorf("unknown output format %q (want docker or oci, or none for both)", string(f))
}

// upperLayer writes the upper directory as the new layer; nil when it has
// no entries.
func upperLayer(opts *CommitOptions) (*LayerBlob, error) {
	opts.progress("writing the new layer from %s (%s)", opts.Upper, opts.Compression)
	task := progress.Start(opts.Tasks, "writing the new layer from "+opts.Upper, 0)
	blob, err := writeLayerBlob(filepath.Join(opts.TempDir, "new-layer"), opts.Compression, func(w io.Writer) (int, error) {
		return cow.WriteUpperLayer(taskWriter{w: cancellable(opts.Context, w), t: task}, opts.Upper, opts.Warn)
	})
	task.Done(err)
	if err != nil {
		return nil, err
	}
	if blob.Entries == 0 {
		opts.progress("the upper directory %s holds no changes: no layer added", opts.Upper)
		return nil, removeBlob(blob)
	}
	return blob, nil
}

// squashTree is the whole union, edits included, to squash; release
// frees it.
func squashTree(img *archive.Image, opts *CommitOptions) (*union.Tree, func() error, error) {
	t, release, err := unionWithUpper(opts.Context, img, opts.Upper, opts.TempDir, opts.Warn)
	if err != nil {
		return nil, nil, err
	}
	if err := checkSpace(opts.Free, treeBytes(t), "the squashed layer"); err != nil {
		release()
		return nil, nil, fmt.Errorf("%s: %w", img.Archive, err)
	}
	return t, release, nil
}

// squashLayer is the layer of a squash, t written as one tar. Where the
// output allows it (sink.inPlace) the layer goes straight into it, written
// once: the outLayer's write does that while the image is written, and the
// blob is nil until then. Elsewhere (a pipe) it is written into TempDir
// first, as its size and digest must precede it in the tarball.
// end ends the squash's progress task, once: the caller ends it with an
// error if the commit fails before the layer is written.
func squashLayer(img *archive.Image, t *union.Tree, sink *tarSink, opts *CommitOptions) (_ []outLayer, _ *LayerBlob, end func(error), _ error) {
	opts.progress("writing the squashed layer (%d layers%s, %s)", len(img.Layers), map[bool]string{true: " and the upper directory", false: ""}[opts.Upper != ""], opts.Compression)
	task := progress.Start(opts.Tasks, "writing the squashed layer", treeBytes(t))
	ended := false
	end = func(err error) {
		if !ended {
			ended = true
			task.Done(err)
		}
	}
	fill := func(w io.Writer) (int, error) {
		return WriteTreeTar(taskWriter{w: cancellable(opts.Context, w), t: task}, t)
	}
	if sink.inPlace() {
		l := outLayer{where: img.Archive + ": the squashed layer", size: treeBytes(t), mediaType: layerMediaType(opts.Compression),
			write: func(w io.Writer) (*LayerBlob, error) {
				b, err := writeLayer(w, opts.Compression, fill)
				end(err)
				if err != nil {
					return nil, fmt.Errorf("%s: squashing: %w", img.Archive, err)
				}
				return b, nil
			}}
		return []outLayer{l}, nil, end, nil
	}
	blob, err := writeLayerBlob(filepath.Join(opts.TempDir, "squashed-layer"), opts.Compression, fill)
	end(err)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: squashing: %w", img.Archive, err)
	}
	return []outLayer{blobLayer(blob)}, blob, end, nil
}

// describeLayer names a layer of img for messages.
func describeLayer(img *archive.Image, l *archive.Layer) string {
	return fmt.Sprintf("%s: layer %d (%s)", img.Archive, l.Index, archive.ShortDigest(l.DiffID))
}

// isNondistributable tells whether a media type is one whose blobs are
// fetched from elsewhere (Windows base layers): such a type is kept.
func isNondistributable(mt string) bool {
	return strings.Contains(mt, "nondistributable") || strings.Contains(mt, "foreign")
}

// familiarName is how Docker shows a reference: without the default
// registry and its "library/" namespace.
func familiarName(t string) string {
	if rest, ok := strings.CutPrefix(t, "docker.io/"); ok {
		t = strings.TrimPrefix(rest, "library/")
	}
	return t
}

// dedupeTags drops the spellings of one reference after the first
// (Docker 25 tarballs name an image both "docker.io/library/x:1" and
// "x:1"), keeping the familiar spelling.
func dedupeTags(tags []string) []string {
	var out []string
	seen := map[string]int{}
	for _, t := range tags {
		f := familiarName(t)
		if i, ok := seen[f]; ok {
			if t == f {
				out[i] = t
			}
			continue
		}
		seen[f] = len(out)
		out = append(out, t)
	}
	return out
}
