// Package repack writes what a mount becomes: a new image with the upper
// directory's edits as one more layer (Commit), the whole root filesystem as
// one layer keeping the config (Commit with Squash), a tarball without the
// layers a base already holds (CommitOptions.ThinFrom), or the root
// filesystem as a plain tar (Export). Layers that stay are copied byte for
// byte; outputs are docker-archive, OCI layout, or both in one tarball.
package repack

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/imgmount/imgmount/internal/progress"
	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/cow"
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
	if opts.Squash {
		blob, err = squashLayer(img, &opts)
		if err != nil {
			return nil, err
		}
	} else {
		for _, l := range img.Layers {
			layers = append(layers, storedLayer(img, l))
		}
		if opts.Upper != "" {
			if blob, err = upperLayer(&opts); err != nil {
				return nil, err
			}
		}
	}
	ch := configChange{edits: opts.Config, created: opts.Created, squash: opts.Squash,
		history: historyEntry{Created: opts.Created.UTC().Format(time.RFC3339Nano), CreatedBy: opts.CreatedBy, Comment: opts.Message}}
	if blob != nil {
		layers = append(layers, blobLayer(blob))
		ch.diffIDs = []digest.Digest{blob.DiffID}
	} else {
		ch.history.EmptyLayer = true
	}
	cfg, err := editConfig(img.ConfigRaw, ch)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", img.Archive, err)
	}
	res := &CommitResult{NewLayer: blob, Layers: len(layers)}
	for i := range layers {
		if opts.ThinFrom[layers[i].diffID] {
			layers[i].omit = true
			res.Omitted = append(res.Omitted, layers[i].diffID)
		}
	}
	if err := checkSpace(opts.Free, outputBytes(layers), "the output"); err != nil {
		return nil, fmt.Errorf("%s: %w", img.Archive, err)
	}
	ow := &outputWriter{format: opts.Format, mtime: opts.Created.Truncate(time.Second), progress: opts.progress}
	if err := withTask(opts.Tasks, "writing the image", outputBytes(layers), w, func(w io.Writer) error {
		return ow.write(w, layers, cfg, img.Config.Platform, tags)
	}); err != nil {
		return nil, err
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
		return cow.WriteUpperLayer(taskWriter{w: w, t: task}, opts.Upper, opts.Warn)
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

// squashLayer writes the whole union, edits included, as one layer.
func squashLayer(img *archive.Image, opts *CommitOptions) (*LayerBlob, error) {
	t, release, err := unionWithUpper(img, opts.Upper, opts.TempDir, opts.Warn)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := checkSpace(opts.Free, treeBytes(t), "the squashed layer"); err != nil {
		return nil, fmt.Errorf("%s: %w", img.Archive, err)
	}
	opts.progress("writing the squashed layer (%d layers%s, %s)", len(img.Layers), map[bool]string{true: " and the upper directory", false: ""}[opts.Upper != ""], opts.Compression)
	task := progress.Start(opts.Tasks, "writing the squashed layer", treeBytes(t))
	blob, err := writeLayerBlob(filepath.Join(opts.TempDir, "squashed-layer"), opts.Compression, func(w io.Writer) (int, error) {
		return WriteTreeTar(taskWriter{w: w, t: task}, t)
	})
	task.Done(err)
	if err != nil {
		return nil, fmt.Errorf("%s: squashing: %w", img.Archive, err)
	}
	return blob, nil
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
