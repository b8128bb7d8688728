package archive

import (
	"bytes"
	_ "crypto/sha256" // go-digest needs the hash registered
	"errors"
	"fmt"
	"io"
	"io/fs"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/imgmount/imgmount/internal/progress"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Open reads the image tarball at path (docker save legacy or 25+, OCI
// archive, or any of them gzip-compressed), picks one image by opts, and
// returns it with every layer indexed and mapped. path (and each of
// opts.Bases) may also be a directory holding what such a tarball holds:
// an OCI image layout, or an extracted docker save.
//
// Selection: opts.Image names a tag (exactly; "name" means "name:latest";
// "alpine:3" also matches a stored "docker.io/library/alpine:3") or a
// digest prefix of a manifest, config or top-level index ("sha256:" and
// any length, or at least 4 bare hex digits). Without opts.Image the
// tarball must hold one image. Among the platforms of one image, an
// explicit opts.Platform must match; otherwise the ones whose blobs are all
// present are preferred, then the host's.
//
// Uncompressed layers are served from the outer mapping. Compressed ones,
// and tarballs compressed as a whole, are served in place: gzip, and zstd
// of several frames (or small), are indexed in one pass that checks the
// diff_ids and records checkpoints (saved in opts.CacheDir when set), then
// read by inflating from the nearest one. A big zstd stream of one frame,
// and every compressed input with opts.Materialize, is decompressed once
// into opts.CacheDir, which it therefore requires.
func Open(path string, opts OpenOptions) (_ *Image, err error) {
	o := &opener{opts: opts, spans: tarindex.NewSpans(opts.SpanCache)}
	if opts.CacheDir != "" {
		o.cache = &tarindex.Cache{Dir: opts.CacheDir, MaxBytes: opts.CacheMax}
		o.cache.MaxRatio, o.cache.MinLimit = opts.inflateLimit()
	}
	ar, err := openArchive(path, o.archiveOptions())
	if err != nil {
		return nil, err
	}
	img := &Image{Archive: path}
	img.closers.add(ar.close)
	defer func() {
		if err != nil {
			img.Close()
		}
	}()

	c, err := o.choose(ar, img)
	if err != nil {
		return nil, err
	}
	label := c.group.name()
	if p := platformString(c.platform); p != "" {
		label += " " + p
	}
	if c.missing != "" {
		return nil, Errorf(ErrLayerMissing, "%s: image %s: %s (the %s was saved without this platform; choose another with --platform)", path, label, c.missing, ar.what())
	}
	if err := readConfig(ar, c, img, label); err != nil {
		return nil, err
	}
	diffIDs := img.Config.RootFS.DiffIDs
	srcs, err := o.locateLayers(ar, c, diffIDs, img)
	if err != nil {
		return nil, err
	}
	createdBy := historyPerLayer(img.Config.History, len(diffIDs))
	img.Layers, err = o.loadLayers(path, srcs, img)
	if err != nil {
		return nil, err
	}
	for i, l := range img.Layers {
		l.CreatedBy = createdBy[i]
	}
	return img, nil
}

// choose lists the tarball's images in img and picks the one opts name.
func (o *opener) choose(ar *archive, img *Image) (*candidate, error) {
	groups, err := ar.parse()
	if err != nil {
		return nil, err
	}
	img.Format = ar.format
	img.Images = []ImageRef{}
	for _, g := range groups {
		for _, c := range g.cands {
			img.Images = append(img.Images, c.ref())
		}
	}
	c, err := o.selectCandidate(ar, groups)
	if err != nil {
		return nil, err
	}
	img.Ref = c.ref()
	return c, nil
}

// readConfig reads the chosen image's config into img and checks that it
// lists one valid diff_id per layer of the manifest.
func readConfig(ar *archive, c *candidate, img *Image, label string) error {
	cfgName := c.configMember()
	if _, err := ar.lookup(cfgName); errors.Is(err, errMemberAbsent) {
		return Errorf(ErrLayerMissing, "%s: image %s: its config %s is not in the %s", ar.path, label, cfgName, ar.what())
	}
	if err := ar.readJSON("image config", cfgName, &img.Config); err != nil {
		return err
	}
	if b, err := ar.lookup(cfgName); err == nil {
		// Kept verbatim so repack can edit the config without dropping the
		// fields ocispec.Image does not know (Docker's container_config...).
		raw, err := b.read()
		if err != nil {
			return fmt.Errorf("%s: image config %s: %w", ar.path, cfgName, err)
		}
		img.ConfigRaw = bytes.Clone(raw)
	}
	if img.Ref.Platform == "" {
		img.Ref.Platform = platformString(normPlatform(img.Config.Platform))
		for i, r := range img.Images {
			if r.Platform == "" && r.ManifestDigest == img.Ref.ManifestDigest && r.ConfigDigest == img.Ref.ConfigDigest {
				img.Images[i].Platform = img.Ref.Platform
			}
		}
	}
	diffIDs := img.Config.RootFS.DiffIDs
	if len(diffIDs) != c.numLayers() {
		return fmt.Errorf("%s: image %s: its config (%s) lists %d diff_ids but its manifest lists %d layers", ar.path, label, cfgName, len(diffIDs), c.numLayers())
	}
	for i, d := range diffIDs {
		if err := d.Validate(); err != nil {
			return fmt.Errorf("%s: image %s: config %s: diff_ids[%d] %q: %w", ar.path, label, cfgName, i, d, err)
		}
	}
	return nil
}

// opener carries what one Open call shares between its steps.
type opener struct {
	opts    OpenOptions
	cache   *tarindex.Cache // nil when opts.CacheDir is ""
	spans   *tarindex.Spans // inflated spans of the layers served in place
	progMu  sync.Mutex
	entries atomic.Int64 // indexed so far, against opts.MaxEntries
	// bases: the diff_ids the opts.Bases hold, once baseHas has read
	// them.
	bases map[digest.Digest]bool
}

// archiveOptions are how Open reads tarballs: compressed ones in place
// unless asked to materialize them.
func (o *opener) archiveOptions() archiveOptions {
	return archiveOptions{cache: o.cache, maxEntries: o.opts.MaxEntries, inPlace: !o.opts.Materialize, spans: o.spans, tasks: o.opts.Tasks}
}

// progress reports to opts.Progress, one call at a time.
func (o *opener) progress(format string, a ...any) {
	if o.opts.Progress == nil {
		return
	}
	o.progMu.Lock()
	defer o.progMu.Unlock()
	o.opts.Progress(fmt.Sprintf(format, a...))
}

// index indexes the tar stream at [base, base+size) of data, through the
// cache when there is one. When the index was built but takes the entries
// past opts.MaxEntries, it is returned with the ErrTooLarge error.
func (o *opener) index(key string, src io.ReaderAt, base, size int64) (*tarindex.Index, error) {
	limit, err := o.entriesLeft()
	if err != nil {
		return nil, err
	}
	var ix *tarindex.Index
	if o.cache == nil {
		ix, err = tarindex.BuildMax(src, base, size, limit)
	} else {
		ix, err = o.cache.Index(key, src, base, size, limit)
	}
	if errors.Is(err, tarindex.ErrTooManyEntries) {
		return nil, o.tooLarge()
	}
	if err != nil {
		return nil, err
	}
	return ix, o.countEntries(ix)
}

// entriesLeft is how many entries the next layer may have before the
// memory budget is spent (0: no limit). Layers are indexed in parallel:
// each may take what is left.
func (o *opener) entriesLeft() (int, error) {
	max := o.opts.MaxEntries
	if max <= 0 {
		return 0, nil
	}
	left := max - int(o.entries.Load())
	if left <= 0 {
		return 0, o.tooLarge()
	}
	return left, nil
}

// countEntries adds an indexed layer's entries (long names counting as
// more, tarindex.Index.Cost) to the budget's count.
func (o *opener) countEntries(ix *tarindex.Index) error {
	if max := o.opts.MaxEntries; max > 0 && int(o.entries.Add(int64(ix.Cost()))) > max {
		return o.tooLarge()
	}
	return nil
}

func (o *opener) tooLarge() error {
	return Errorf(ErrTooLarge, "more than %d entries in all (a name longer than %d bytes counting as more), past the memory budget (--max-memory; about %d bytes each while mounted)", o.opts.MaxEntries, tarindex.NameBytesPerEntry, BytesPerEntry)
}

// historyPerLayer aligns the config's history with the layers: entries
// marked empty_layer made no layer. When the counts disagree the alignment
// is unknowable and nothing is returned rather than a wrong answer.
func historyPerLayer(h []ocispec.History, n int) []string {
	out := make([]string, n)
	var lines []string
	for _, e := range h {
		if !e.EmptyLayer {
			lines = append(lines, e.CreatedBy)
		}
	}
	if len(lines) == n {
		copy(out, lines)
	}
	return out
}

// layerSrc says where one layer's blob is.
type layerSrc struct {
	index      int
	diffID     digest.Digest
	blob       blobRef
	member     string             // the name the manifest gives it
	desc       ocispec.Descriptor // from an OCI manifest; zero for docker paths
	nameDigest digest.Digest      // digest the member name implies, if any
	base       string             // path of the base tarball that supplied it, if any
	absent     bool               // nowhere to be found (OpenOptions.AllowAbsent)
}

// locateLayers finds every layer's blob in ar, or else in a base tarball.
func (o *opener) locateLayers(ar *archive, c *candidate, diffIDs []digest.Digest, img *Image) ([]layerSrc, error) {
	srcs := make([]layerSrc, len(diffIDs))
	var missing []int
	for i, d := range diffIDs {
		member, nd, desc := c.layerMember(i)
		s := layerSrc{index: i, diffID: d, member: member, nameDigest: nd, desc: desc}
		b, err := ar.lookup(member)
		switch {
		case err == nil:
			s.blob = b
		case errors.Is(err, errMemberAbsent):
			missing = append(missing, i)
		default:
			return nil, fmt.Errorf("%s: layer %d (%s): %w", ar.path, i, d, err)
		}
		srcs[i] = s
	}
	if len(missing) == 0 {
		return srcs, nil
	}
	if len(o.opts.Bases) > 0 {
		found, err := o.searchBases(diffIDs, missing, img)
		if err != nil {
			return nil, err
		}
		var still []int
		for _, i := range missing {
			if s, ok := found[diffIDs[i]]; ok {
				s.index, s.diffID = i, diffIDs[i]
				srcs[i] = s
			} else {
				still = append(still, i)
			}
		}
		missing = still
		if len(missing) == 0 {
			return srcs, nil
		}
	}
	if o.opts.AllowAbsent {
		for _, i := range missing {
			srcs[i].absent = true
		}
		return srcs, nil
	}
	var names []string
	for _, i := range missing {
		names = append(names, fmt.Sprintf("%d (%s)", i, diffIDs[i]))
	}
	thin := "a thin tarball?"
	if ar.dir != nil {
		thin = "a thin image?"
	}
	msg := fmt.Sprintf("%s: layer %s is not in the %s (%s); supply a base tarball that has it with --base BASE.tar", ar.path, names[0], ar.what(), thin)
	if len(names) > 1 {
		msg = fmt.Sprintf("%s: layers %s are not in the %s (%s); supply a base tarball that has them with --base BASE.tar", ar.path, strings.Join(names, ", "), ar.what(), thin)
	}
	if len(c.group.cands) > 1 && len(missing) == len(diffIDs) {
		msg += fmt.Sprintf("; or the %s was saved without platform %s: choose another with --platform", ar.what(), platformString(c.platform))
	}
	if len(o.opts.Bases) > 0 {
		msg += fmt.Sprintf(" (the base tarballs given, %s, do not have %s either)", strings.Join(o.opts.Bases, ", "), map[bool]string{true: "it", false: "them"}[len(names) == 1])
	}
	return nil, Errorf(ErrLayerMissing, "%s", msg)
}

// searchBases opens the base tarballs and returns, for each wanted diff_id
// that one of them holds, where. Bases that supply something stay open
// until img is closed; the others are closed at once.
func (o *opener) searchBases(diffIDs []digest.Digest, missing []int, img *Image) (map[digest.Digest]layerSrc, error) {
	want := map[digest.Digest]bool{}
	for _, i := range missing {
		want[diffIDs[i]] = true
	}
	found := map[digest.Digest]layerSrc{}
	for _, bp := range o.opts.Bases {
		if len(found) == len(want) {
			break
		}
		bar, err := openArchive(bp, o.archiveOptions())
		if err != nil {
			return nil, fmt.Errorf("base tarball: %w", err)
		}
		groups, err := bar.parse()
		if err != nil {
			bar.close()
			return nil, fmt.Errorf("base tarball: %w", err)
		}
		used := false
		for _, g := range groups {
			for _, c := range g.cands {
				if c.missing != "" {
					continue
				}
				var cfg ocispec.Image
				if bar.readJSON("", c.configMember(), &cfg) != nil || len(cfg.RootFS.DiffIDs) != c.numLayers() {
					continue
				}
				for j, d := range cfg.RootFS.DiffIDs {
					if !want[d] || d.Validate() != nil {
						continue
					}
					if _, ok := found[d]; ok {
						continue
					}
					member, nd, desc := c.layerMember(j)
					b, err := bar.lookup(member)
					if err != nil {
						continue
					}
					s := layerSrc{blob: b, member: member, nameDigest: nd, desc: desc, base: bp}
					found[d] = s
					used = true
				}
			}
		}
		if used {
			img.closers.add(bar.close)
		} else {
			bar.close()
		}
	}
	return found, nil
}

// loadLayers decompresses (if needed), maps and indexes every layer, in
// parallel, bounded by GOMAXPROCS.
func (o *opener) loadLayers(path string, srcs []layerSrc, img *Image) ([]*Layer, error) {
	type result struct {
		layer  *Layer
		closer func() error
		err    error
	}
	results := make([]result, len(srcs))
	var njobs int
	for _, s := range srcs {
		if s.absent {
			continue
		}
		if c := tarindex.DetectCompression(s.blob.head()); c != tarindex.CompressionNone {
			njobs++
		}
	}
	var (
		wg    sync.WaitGroup
		sem   = make(chan struct{}, runtime.GOMAXPROCS(0))
		jobMu sync.Mutex
		job   int
	)
	nextJob := func() int {
		jobMu.Lock()
		defer jobMu.Unlock()
		job++
		return job
	}
	for i := range srcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			l, closer, err := o.loadLayer(path, srcs[i], func() string {
				return fmt.Sprintf("%d/%d", nextJob(), njobs)
			})
			results[i] = result{l, closer, err}
		}()
	}
	wg.Wait()
	layers := make([]*Layer, len(srcs))
	var firstErr error
	for i, r := range results {
		if r.closer != nil {
			img.closers.add(r.closer)
		}
		if r.err != nil && firstErr == nil {
			firstErr = r.err
		}
		layers[i] = r.layer
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return layers, nil
}

// head returns the first bytes of the blob, enough to detect compression.
func (b blobRef) head() []byte {
	p := make([]byte, min(b.size, 8))
	n, _ := b.src.ReadAt(p, b.off)
	return p[:n]
}

// loadLayer makes one layer ready: its bytes mapped and its tar indexed.
// job numbers the decompression for progress messages.
func (o *opener) loadLayer(path string, s layerSrc, job func() string) (*Layer, func() error, error) {
	if s.absent {
		l := &Layer{Index: s.index, DiffID: s.diffID, Digest: s.desc.Digest, MediaType: s.desc.MediaType, Absent: true}
		if l.Digest == "" {
			l.Digest = s.nameDigest
		}
		return l, nil, nil
	}
	where := fmt.Sprintf("%s: layer %d (%s)", path, s.index, s.diffID)
	if s.base != "" {
		where = fmt.Sprintf("%s: layer %d (%s, from base %s %s)", path, s.index, s.diffID, s.base, s.member)
	}
	comp := tarindex.DetectCompression(s.blob.head())
	l := &Layer{
		Index:       s.index,
		DiffID:      s.diffID,
		Digest:      s.desc.Digest,
		MediaType:   s.desc.MediaType,
		Compression: comp,
		StoredSize:  s.blob.size,
		Stored:      s.blob.mapped(),
		StoredAt:    s.blob.reader(),
	}
	if s.blob.file != nil {
		l.StoredFile, l.StoredOffset = s.blob.file, s.blob.off
	}
	if l.Digest == "" {
		l.Digest = s.nameDigest
	}
	if s.desc.Size > 0 && s.desc.Size != s.blob.size {
		return nil, nil, Errorf(ErrCorruptLayer, "%s: %s is %d bytes but the manifest says %d (truncated?)", where, s.member, s.blob.size, s.desc.Size)
	}

	var closer func() error
	var err error
	switch comp {
	case tarindex.CompressionNone:
		err = o.indexStored(l, s, where)
	case tarindex.CompressionGzip, tarindex.CompressionZstd:
		checked := o.checkBlobDigest(l, s, where)
		inPlace := !o.opts.Materialize && tarindex.CanSeek(s.blob.reader(), s.blob.size, comp)
		if inPlace {
			err = o.indexInPlace(l, s, where, job)
			inPlace = !errors.Is(err, tarindex.ErrNotSeekable)
		}
		if !inPlace {
			closer, err = o.indexDecompressed(l, s, where, job)
		}
		if digestErr := <-checked; err == nil && digestErr != nil {
			err = digestErr
			if closer != nil {
				closer()
				closer = nil
			}
		}
	default:
		err = fmt.Errorf("%s: %s-compressed layers are not supported", where, comp)
	}
	if err != nil {
		return nil, nil, err
	}
	return l, closer, nil
}

// checkBlobDigest checks a compressed layer's own bytes against the digest
// that names them (its descriptor's or its member name's), on the other
// core while the layer is indexed, and once per cache like the diff_id: a
// blob stored under another's digest would otherwise be reported as the
// one it is not, which skopeo refuses. The diff_id already binds what the
// mount shows. A blob in a compressed tarball has its digest from the
// pass over that tarball.
func (o *opener) checkBlobDigest(l *Layer, s layerSrc, where string) <-chan error {
	done := make(chan error, 1)
	want := l.Digest
	if want == "" || want.Validate() != nil || !want.Algorithm().Available() {
		done <- nil
		return done
	}
	mismatch := func(got string) error {
		return Errorf(ErrDigestMismatch, "%s: %s, compressed, is not the blob %s the manifest names: %s", where, s.member, want, got)
	}
	if m := s.blob.member; m != nil {
		if m.Digest != "" && m.Digest.Algorithm() == want.Algorithm() && m.Digest != want {
			done <- mismatch("its digest is " + m.Digest.String())
		} else {
			done <- nil
		}
		return done
	}
	cache := o.cache
	if cache == nil {
		cache = &tarindex.Cache{}
	}
	go func() {
		err := cache.VerifyAt(s.blob.key()+"#blob", want, s.blob.src, s.blob.off, s.blob.size)
		if errors.Is(err, tarindex.ErrDigestMismatch) {
			err = mismatch(err.Error())
		} else if err != nil {
			err = fmt.Errorf("%s: %s: %w", where, s.member, err)
		}
		done <- err
	}()
	return done
}

// indexStored indexes an uncompressed layer in place: its reads are slices
// of the tarball's mapping.
func (o *opener) indexStored(l *Layer, s layerSrc, where string) error {
	// An uncompressed blob's digest is its diff_id: a blob named by
	// another digest is the wrong content, and checking costs nothing.
	if l.Digest != "" && l.Digest.Algorithm() == s.diffID.Algorithm() && l.Digest != s.diffID {
		return Errorf(ErrDiffIDMismatch, "%s: stored uncompressed as %s, which does not match the config's diff_id", where, l.Digest)
	}
	if l.Digest == "" {
		l.Digest = s.diffID
	}
	if l.MediaType == "" {
		l.MediaType = MediaTypeDockerLayer
	}
	if s.blob.member != nil {
		return o.indexMember(l, s, where)
	}
	key := s.blob.key()
	ix, err := o.index(key, s.blob.src, s.blob.off, s.blob.size)
	if errors.Is(err, ErrTooLarge) {
		if ix != nil && o.cache != nil {
			// Building the index started hashing the layer in the
			// background, which reads the mapping that failing Open is
			// about to unmap: wait for it here (it is the check the
			// layer would have had anyway).
			_ = o.cache.VerifyOnce(key, s.diffID, s.blob.mapped())
		}
		return fmt.Errorf("%s: %w", where, err)
	}
	if err != nil {
		return Errorf(ErrCorruptLayer, "%s: reading the layer's tar (%s): %w", where, s.member, err)
	}
	if o.cache != nil {
		// Hashed on the first mount only: the cache remembers the check
		// for these exact bytes (the key changes if the file does).
		if err := o.cache.VerifyOnce(key, s.diffID, s.blob.mapped()); err != nil {
			if errors.Is(err, tarindex.ErrDigestMismatch) {
				return Errorf(ErrDiffIDMismatch, "%s: %s does not match the config's diff_id: %w", where, s.member, err)
			}
			return fmt.Errorf("%s: %w", where, err)
		}
		// The blob is the tar: its digest is the diff_id just checked.
		l.StoredVerified = l.Digest == s.diffID
	}
	l.Data, l.Size, l.Content, l.TarIndex = s.blob.data, s.blob.size, s.blob.src, ix
	return nil
}

// indexMember takes an uncompressed layer of a compressed tarball read in
// place: the pass over the tarball hashed it and, usually, indexed it; its
// reads go through the tarball's checkpoints.
func (o *opener) indexMember(l *Layer, s layerSrc, where string) error {
	m := s.blob.member
	if m.Digest != s.diffID && s.diffID.Algorithm() == m.Digest.Algorithm() {
		return Errorf(ErrDiffIDMismatch, "%s: %s (%s) does not match the config's diff_id", where, s.member, m.Digest)
	}
	if s.diffID.Algorithm() != m.Digest.Algorithm() {
		d, err := s.blob.digest(s.diffID.Algorithm())
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if d != s.diffID {
			return Errorf(ErrDiffIDMismatch, "%s: %s (%s) does not match the config's diff_id", where, s.member, d)
		}
	}
	ix := m.Tar
	if ix == nil {
		// Not indexable in the pass (sparse members...): scanned again.
		scan, done := tarindex.ForScan(s.blob.src)
		var err error
		ix, err = o.index(s.blob.key(), scan, s.blob.off, s.blob.size)
		done()
		if err != nil {
			if errors.Is(err, ErrTooLarge) {
				return fmt.Errorf("%s: %w", where, err)
			}
			return Errorf(ErrCorruptLayer, "%s: reading the layer's tar (%s): %w", where, s.member, err)
		}
	} else if err := o.countEntries(ix); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	// The blob is the tar: its digest is the diff_id just checked.
	l.StoredVerified = l.Digest == s.diffID
	l.Size, l.Content, l.TarIndex = s.blob.size, s.blob.src, ix
	return nil
}

// indexInPlace indexes a compressed layer where it lies: one pass inflates
// it, checks its diff_id, indexes its tar and records checkpoints (saved in
// the cache, so later mounts skip the pass); reads then inflate from the
// nearest checkpoint through the span cache. Nothing decompressed is
// written to disk.
func (o *opener) indexInPlace(l *Layer, s layerSrc, where string, job func() string) error {
	setCompressedMediaType(l)
	cache := o.cache
	if cache == nil {
		cache = &tarindex.Cache{} // builds without saving
		cache.MaxRatio, cache.MinLimit = o.opts.inflateLimit()
	}
	limit, err := o.entriesLeft()
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	name := fmt.Sprintf("indexing %s: layer %d (%s, %s %s)", job(), s.index, ShortDigest(s.diffID), HumanSize(s.blob.size), l.Compression)
	task := progress.Start(o.opts.Tasks, name, s.blob.size)
	opts := tarindex.CompressedOptions{MaxEntries: limit, Progress: inputProgress(task)}
	blob := s.blob.reader()
	ix, seek, err := cache.IndexCompressed(s.blob.key(), blob, s.blob.size, l.Compression, s.diffID, opts)
	task.Done(err)
	switch {
	case err == nil:
	case errors.Is(err, tarindex.ErrNotSeekable):
		return err // decompressed instead
	case errors.Is(err, tarindex.ErrTooManyEntries):
		return fmt.Errorf("%s: %w", where, o.tooLarge())
	default:
		return decompressError(err, where, s.member, l.Compression, "data or tar")
	}
	if err := o.countEntries(ix); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	l.TarIndex, l.Size = ix, seek.Size()
	l.Content = tarindex.NewCompressed(where, seek, blob, o.spans)
	l.Checkpoints = checkpointsOf(seek)
	return nil
}

// inflateLimit is the cache's bomb limit for opts.MaxRatio: the default
// ratio comes with a floor (64 GiB) so that no real layer trips it; a ratio
// the user gave is the limit as given.
func (opts OpenOptions) inflateLimit() (ratio, floor int64) {
	if opts.MaxRatio > 0 {
		return opts.MaxRatio, 1
	}
	return 0, 0 // the cache's defaults
}

// inputProgress turns the running totals a decoder reports into a task's
// increments of compressed input (the size the task was started with).
func inputProgress(task progress.Task) func(in, out int64) {
	var done int64
	return func(in, _ int64) {
		task.Add(in - done)
		done = in
	}
}

// checkpointsOf counts a compressed layer's entry points, for inspect.
func checkpointsOf(seek tarindex.Seekable) int {
	if c, ok := seek.(interface{ Checkpoints() int }); ok {
		return c.Checkpoints()
	}
	if f, ok := seek.(interface{ Frames() int }); ok {
		return f.Frames()
	}
	return 0
}

// setCompressedMediaType names the media type of a compressed layer whose
// descriptor gave none (docker save's legacy layout).
func setCompressedMediaType(l *Layer) {
	if l.MediaType == "" {
		l.MediaType = MediaTypeDockerLayerGzip
		if l.Compression == tarindex.CompressionZstd {
			l.MediaType = ocispec.MediaTypeImageLayerZstd
		}
	}
}

// indexDecompressed decompresses a gzip or zstd layer into the cache
// (checking its diff_id on the way) and indexes the copy; the returned
// function unmaps it.
func (o *opener) indexDecompressed(l *Layer, s layerSrc, where string, job func() string) (func() error, error) {
	comp := l.Compression
	setCompressedMediaType(l)
	if o.cache == nil {
		return nil, fmt.Errorf("%s: a %s-compressed layer needs a cache directory to decompress into", where, comp)
	}
	o.progress("decompressing %s: layer %d (%s, %s %s)", job(), s.index, ShortDigest(s.diffID), HumanSize(s.blob.size), comp)
	p, release, err := o.decompressHeld(s, comp)
	if err != nil {
		return nil, decompressError(err, where, s.member, comp, "data")
	}
	m, err := tarindex.MapFile(p)
	if err != nil {
		release()
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	closer := func() error {
		defer release()
		return m.Close()
	}
	ix, err := o.index("decompressed:"+s.diffID.String(), m.Reader(), 0, int64(len(m.Data)))
	if err != nil {
		closer()
		if errors.Is(err, ErrTooLarge) {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		return nil, Errorf(ErrCorruptLayer, "%s: reading the layer's tar (%s, decompressed): %w", where, s.member, err)
	}
	l.setMapped(m.Data)
	l.TarIndex = ix
	return closer, nil
}

// decompressError tags the failure of decompressing a layer (in place, or
// into the cache): its diff_id, a bomb, the cache's disk, or the data
// itself (what: which part was corrupt, "data" or "data or tar").
func decompressError(err error, where, member string, comp tarindex.Compression, what string) error {
	switch {
	case errors.Is(err, tarindex.ErrDigestMismatch):
		return Errorf(ErrDiffIDMismatch, "%s: %s, decompressed, does not match the diff_id: %w", where, member, err)
	case errors.Is(err, tarindex.ErrTooLarge):
		return Errorf(ErrTooLarge, "%s: %s %w (--max-ratio)", where, member, err)
	case isCacheIOError(err):
		return fmt.Errorf("%s: decompressing into the cache: %w", where, err)
	default:
		return Errorf(ErrCorruptLayer, "%s: corrupt %s %s in %s: %w", where, comp, what, member, err)
	}
}

// decompressHeld decompresses a layer into the cache (or finds it there)
// and holds the copy, so that pruning the cache leaves it alone while it
// is mapped. A copy pruned between the two steps is decompressed again.
func (o *opener) decompressHeld(s layerSrc, comp tarindex.Compression) (string, func(), error) {
	var err error
	for range 3 {
		var p string
		if p, err = o.cache.Decompress(s.blob.key(), s.diffID, comp, s.blob.reader()); err != nil {
			return "", nil, err
		}
		var release func()
		if release, err = o.cache.Hold(p); err == nil {
			return p, release, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	return "", nil, err
}
