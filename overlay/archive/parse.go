package archive

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types and annotations that the image-spec package does not define;
// the layouts Docker and containerd write use them.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar"
	MediaTypeDockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"

	AnnotationContainerdName = "io.containerd.image.name"
	AnnotationDockerRefType  = "vnd.docker.reference.type" // "attestation-manifest" for buildx provenance
)

// maxIndexDepth bounds nested indexes.
const maxIndexDepth = 8

// imageGroup is one image as a user names it: a docker manifest.json entry,
// or a top-level index.json entry (possibly a multi-platform index). Its
// candidates are the platform-specific images it offers.
type imageGroup struct {
	key    string        // dedupe key: top-level digest, or config digest for docker entries
	digest digest.Digest // top-level descriptor digest (index or manifest); "" for docker legacy
	tags   []string
	hasTag map[string]bool // the tags, for addTags: a manifest.json may list a hundred thousand
	cands  []*candidate
	seen   map[digest.Digest]bool // indexes already walked
}

func (g *imageGroup) addTags(tags ...string) {
	for _, t := range tags {
		if t == "" || g.hasTag[t] {
			continue
		}
		if g.hasTag == nil {
			g.hasTag = map[string]bool{}
		}
		g.hasTag[t] = true
		g.tags = append(g.tags, t)
	}
}

// candidate is one platform-specific image: a config and ordered layers.
type candidate struct {
	group          *imageGroup
	manifestDigest digest.Digest
	configDigest   digest.Digest
	platform       ocispec.Platform // zero when unknown
	// Where the config and layers are: by member path (docker manifest.json)
	// or by descriptor (OCI manifest). Paths win when set: in a Docker 25+
	// tarball manifest.json is what docker load reads, and its OCI manifest
	// has been wrong (no layers in 25.0.0; foreign layers' descriptors name
	// blobs that are stored under their diff_id).
	configPath string
	configDesc ocispec.Descriptor
	layerPaths []string
	layerDescs []ocispec.Descriptor
	// missing, when set, says why the image cannot be read at all (its
	// manifest is not in the tarball).
	missing string
}

func (c *candidate) numLayers() int {
	if c.layerPaths != nil {
		return len(c.layerPaths)
	}
	return len(c.layerDescs)
}

func (c *candidate) ref() ImageRef {
	return ImageRef{
		Tags:           append([]string{}, c.group.tags...),
		ManifestDigest: c.manifestDigest,
		ConfigDigest:   c.configDigest,
		Platform:       platformString(c.platform),
	}
}

// DockerManifestEntry is one element of docker save's manifest.json.
type DockerManifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// parse reads the archive's image metadata into groups, setting ar.format.
func (ar *archive) parse() ([]*imageGroup, error) {
	hasManifest := ar.has("manifest.json")
	hasIndex := ar.has("index.json")
	var groups []*imageGroup
	var err error
	switch {
	case hasIndex:
		ar.format = FormatOCI
		if hasManifest {
			ar.format = FormatDockerOCI
		}
		if groups, err = ar.parseOCI(); err != nil {
			return nil, err
		}
		if hasManifest {
			if groups, err = ar.parseDocker(groups); err != nil {
				return nil, err
			}
		}
	case hasManifest:
		ar.format = FormatDockerLegacy
		if groups, err = ar.parseDocker(nil); err != nil {
			return nil, err
		}
	default:
		for _, name := range []string{"index.json", "manifest.json"} {
			if _, err := ar.lookup(name); !errors.Is(err, errMemberAbsent) {
				return nil, Errorf(ErrNotImage, "%s: %w", ar.path, err)
			}
		}
		return nil, Errorf(ErrNotImage, "%s: no manifest.json (docker save) or index.json (OCI layout) at the top of the %s%s", ar.path, ar.what(), ar.hint())
	}
	n := 0
	for _, g := range groups {
		n += len(g.cands)
	}
	if n == 0 {
		return nil, Errorf(ErrNotImage, "%s: the %s's %s lists no container images", ar.path, ar.what(), map[bool]string{true: "index.json", false: "manifest.json"}[hasIndex])
	}
	return groups, nil
}

var blobPathRE = regexp.MustCompile(`^blobs/([a-z0-9]+)/([a-f0-9]+)$`)

// digestFromPath returns the digest a "blobs/<alg>/<hex>" path names, or "".
func digestFromPath(name string) digest.Digest {
	clean, err := tarindex.CleanName(name)
	if err != nil {
		return ""
	}
	m := blobPathRE.FindStringSubmatch(clean)
	if m == nil {
		return ""
	}
	d := digest.NewDigestFromEncoded(digest.Algorithm(m[1]), m[2])
	if d.Validate() != nil {
		return ""
	}
	return d
}

var legacyConfigRE = regexp.MustCompile(`^([a-f0-9]{64})\.json$`)

// namedDigest is the digest a member's name promises for its content: that
// of an OCI layout's blob path, or of the "<hex>.json" config name docker
// save (before 25) and skopeo write; "" for any other name.
func namedDigest(name string) digest.Digest {
	if d := digestFromPath(name); d != "" {
		return d
	}
	clean, err := tarindex.CleanName(name)
	if err != nil {
		return ""
	}
	if m := legacyConfigRE.FindStringSubmatch(clean); m != nil {
		return digest.NewDigestFromEncoded(digest.SHA256, m[1])
	}
	return ""
}

// BlobPath is where an OCI layout keeps the blob d.
func BlobPath(d digest.Digest) string {
	return "blobs/" + d.Algorithm().String() + "/" + d.Encoded()
}

// parseDocker reads manifest.json. Entries whose config matches an image
// already found through index.json only add their RepoTags to it.
func (ar *archive) parseDocker(groups []*imageGroup) ([]*imageGroup, error) {
	var entries []DockerManifestEntry
	if err := ar.readJSON("", "manifest.json", &entries); err != nil {
		return nil, err
	}
	byConfig := map[digest.Digest]*candidate{}
	for _, g := range groups {
		for _, c := range g.cands {
			if c.configDigest != "" {
				byConfig[c.configDigest] = c
			}
		}
	}
	for i, e := range entries {
		if e.Config == "" {
			return nil, fmt.Errorf("%s: manifest.json: entry %d has no Config", ar.path, i)
		}
		if _, err := tarindex.CleanName(e.Config); err != nil {
			return nil, fmt.Errorf("%s: manifest.json: entry %d: Config: %w", ar.path, i, err)
		}
		for j, l := range e.Layers {
			if _, err := tarindex.CleanName(l); err != nil {
				return nil, fmt.Errorf("%s: manifest.json: entry %d: layer %d: %w", ar.path, i, j, err)
			}
		}
		cd := digestFromPath(e.Config)
		var raw []byte
		if b, err := ar.lookup(e.Config); err == nil {
			if err := ar.checkNamedDigest(e.Config, b); err != nil {
				return nil, err
			}
			if raw, err = b.read(); err != nil {
				return nil, fmt.Errorf("%s: config %s: %w", ar.path, e.Config, err)
			}
			if cd == "" {
				cd = digest.FromBytes(raw)
			}
		}
		if c := byConfig[cd]; cd != "" && c != nil {
			c.group.addTags(e.RepoTags...)
			if c.layerPaths == nil && c.configPath == "" && len(e.Layers) > 0 {
				c.layerPaths = append([]string{}, e.Layers...)
			}
			continue
		}
		c := &candidate{configDigest: cd, configPath: e.Config, layerPaths: e.Layers}
		if raw != nil {
			var p struct{ ocispec.Platform }
			if json.Unmarshal(raw, &p) == nil {
				c.platform = normPlatform(p.Platform)
			}
		}
		key := "config:" + string(cd)
		if cd == "" {
			key = fmt.Sprintf("entry:%d", i)
		}
		g := &imageGroup{key: key}
		g.addTags(e.RepoTags...)
		c.group = g
		g.cands = append(g.cands, c)
		groups = append(groups, g)
		if cd != "" {
			byConfig[cd] = c
		}
	}
	return groups, nil
}

// tagsFromAnnotations names an index.json entry. containerd (and Docker
// 25+) put the full reference in io.containerd.image.name and only the tag
// in org.opencontainers.image.ref.name; skopeo and others put whatever they
// were given in ref.name.
func tagsFromAnnotations(a map[string]string) []string {
	var tags []string
	full := a[AnnotationContainerdName]
	if full != "" {
		tags = append(tags, full)
	}
	if r := a[ocispec.AnnotationRefName]; r != "" && r != full {
		if full == "" || strings.ContainsAny(r, ":/@") {
			tags = append(tags, r)
		}
	}
	return tags
}

func isIndexType(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == MediaTypeDockerManifestList
}

func isManifestType(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == MediaTypeDockerManifest
}

// isAttestation tells whether d is not an image but buildx provenance or a
// similar artifact attached to an index.
func isAttestation(d ocispec.Descriptor) bool {
	if d.Annotations[AnnotationDockerRefType] != "" {
		return true
	}
	return d.Platform != nil && d.Platform.OS == "unknown"
}

// parseOCI reads index.json and follows it through nested indexes to the
// image manifests. Blobs that are absent are only an error if the image
// that needs them is chosen.
func (ar *archive) parseOCI() ([]*imageGroup, error) {
	var idx ocispec.Index
	if err := ar.readJSON("", "index.json", &idx); err != nil {
		return nil, err
	}
	var groups []*imageGroup
	byDigest := map[digest.Digest]*imageGroup{}
	for i, d := range idx.Manifests {
		if err := d.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("%s: index.json: manifests[%d]: digest %q: %w", ar.path, i, d.Digest, err)
		}
		if isAttestation(d) {
			continue
		}
		if g := byDigest[d.Digest]; g != nil {
			g.addTags(tagsFromAnnotations(d.Annotations)...)
			continue
		}
		g := &imageGroup{key: "digest:" + string(d.Digest), digest: d.Digest}
		g.addTags(tagsFromAnnotations(d.Annotations)...)
		if err := ar.walk(g, d, "index.json", 0); err != nil {
			return nil, err
		}
		if len(g.cands) > 0 {
			byDigest[d.Digest] = g
			groups = append(groups, g)
		}
	}
	return groups, nil
}

// walk adds to g the image manifests that d leads to.
func (ar *archive) walk(g *imageGroup, d ocispec.Descriptor, from string, depth int) error {
	if depth > maxIndexDepth {
		return fmt.Errorf("%s: %s: indexes nested too deeply", ar.path, from)
	}
	if isAttestation(d) {
		return nil
	}
	var plat ocispec.Platform
	if d.Platform != nil {
		plat = normPlatform(*d.Platform)
	}
	switch kind := ar.kindOf(d); {
	case isIndexType(kind):
		return ar.walkIndex(g, d, plat, depth)
	case isManifestType(kind):
		return ar.addManifest(g, d, plat)
	}
	return nil
}

// kindOf is d's media type, or for a descriptor without a known one, what
// its blob looks like (an index or a manifest); "" when neither.
func (ar *archive) kindOf(d ocispec.Descriptor) string {
	if isIndexType(d.MediaType) || isManifestType(d.MediaType) {
		return d.MediaType
	}
	b, err := ar.lookup(BlobPath(d.Digest))
	if err != nil || b.size > maxJSONSize {
		return ""
	}
	var probe struct {
		Manifests json.RawMessage `json:"manifests"`
		Config    json.RawMessage `json:"config"`
		Layers    json.RawMessage `json:"layers"`
	}
	raw, err := b.read()
	if err != nil || json.Unmarshal(raw, &probe) != nil {
		return ""
	}
	switch {
	case probe.Manifests != nil:
		return ocispec.MediaTypeImageIndex
	case probe.Config != nil && probe.Layers != nil:
		return ocispec.MediaTypeImageManifest
	}
	return ""
}

// walkIndex walks every manifest the index d lists.
func (ar *archive) walkIndex(g *imageGroup, d ocispec.Descriptor, plat ocispec.Platform, depth int) error {
	// A hostile index could list itself (or a sibling) many times: read
	// each index once per image.
	if g.seen == nil {
		g.seen = map[digest.Digest]bool{}
	}
	if g.seen[d.Digest] {
		return nil
	}
	g.seen[d.Digest] = true
	name := BlobPath(d.Digest)
	if !ar.has(name) {
		g.cands = append(g.cands, &candidate{group: g, manifestDigest: d.Digest, platform: plat,
			missing: fmt.Sprintf("its index %s is not in the %s", d.Digest, ar.what())})
		return nil
	}
	var idx ocispec.Index
	if err := ar.readJSON("image index", name, &idx); err != nil {
		return err
	}
	for i, c := range idx.Manifests {
		if err := c.Digest.Validate(); err != nil {
			return fmt.Errorf("%s: %s: manifests[%d]: digest %q: %w", ar.path, name, i, c.Digest, err)
		}
		if err := ar.walk(g, c, name, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// addManifest adds the image manifest d to g's candidates, unless it is an
// artifact or already there.
func (ar *archive) addManifest(g *imageGroup, d ocispec.Descriptor, plat ocispec.Platform) error {
	c := &candidate{group: g, manifestDigest: d.Digest, platform: plat}
	name := BlobPath(d.Digest)
	if !ar.has(name) {
		c.missing = fmt.Sprintf("its manifest %s is not in the %s", d.Digest, ar.what())
		g.cands = append(g.cands, c)
		return nil
	}
	var m ocispec.Manifest
	if err := ar.readJSON("image manifest", name, &m); err != nil {
		return err
	}
	if err := m.Config.Digest.Validate(); err != nil {
		return fmt.Errorf("%s: %s: config digest %q: %w", ar.path, name, m.Config.Digest, err)
	}
	if mt := m.Config.MediaType; mt != "" && mt != ocispec.MediaTypeImageConfig && mt != MediaTypeDockerConfig {
		return nil // an artifact (signature, SBOM, chart...), not a container image
	}
	for i, l := range m.Layers {
		if err := l.Digest.Validate(); err != nil {
			return fmt.Errorf("%s: %s: layers[%d]: digest %q: %w", ar.path, name, i, l.Digest, err)
		}
	}
	c.configDigest = m.Config.Digest
	c.configDesc = m.Config
	c.layerDescs = m.Layers
	if c.platform.OS == "" {
		if cb, err := ar.lookup(BlobPath(m.Config.Digest)); err == nil && cb.size <= maxJSONSize {
			var p struct{ ocispec.Platform }
			if raw, err := cb.read(); err == nil && json.Unmarshal(raw, &p) == nil {
				c.platform = normPlatform(p.Platform)
			}
		}
	}
	for _, o := range g.cands {
		if o.manifestDigest == c.manifestDigest {
			return nil // listed twice
		}
	}
	g.cands = append(g.cands, c)
	return nil
}

// configMember is where c's config lives.
func (c *candidate) configMember() string {
	if c.configPath != "" {
		return c.configPath
	}
	return BlobPath(c.configDesc.Digest)
}

// layerMember is where c's layer i lives, the digest its name implies (""
// when the name implies none, as for legacy <id>/layer.tar), and its
// descriptor from the OCI manifest when that describes the same blob.
func (c *candidate) layerMember(i int) (string, digest.Digest, ocispec.Descriptor) {
	if c.layerPaths == nil {
		d := c.layerDescs[i]
		return BlobPath(d.Digest), d.Digest, d
	}
	name, nd := c.layerPaths[i], digestFromPath(c.layerPaths[i])
	var desc ocispec.Descriptor
	if len(c.layerDescs) == len(c.layerPaths) && nd != "" && c.layerDescs[i].Digest == nd {
		desc = c.layerDescs[i]
	}
	return name, nd, desc
}

// present tells whether every blob c needs is in ar (cheap: lookups only).
func (c *candidate) present(ar *archive) bool {
	if c.missing != "" || !ar.has(c.configMember()) {
		return false
	}
	for i := 0; i < c.numLayers(); i++ {
		if name, _, _ := c.layerMember(i); !ar.has(name) {
			return false
		}
	}
	return true
}
