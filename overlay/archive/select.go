package archive

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"unicode/utf8"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// normPlatform spells a platform the way the OCI spec does (GOOS/GOARCH
// values), so that "x86_64" matches "amd64" and arm64's default variant v8
// matches no variant.
func normPlatform(p ocispec.Platform) ocispec.Platform {
	p.OS = strings.ToLower(p.OS)
	p.Architecture = strings.ToLower(p.Architecture)
	p.Variant = strings.ToLower(p.Variant)
	switch p.Architecture {
	case "x86_64", "x86-64":
		p.Architecture = "amd64"
	case "aarch64":
		p.Architecture = "arm64"
	case "i386", "i686":
		p.Architecture = "386"
	case "armhf":
		p.Architecture, p.Variant = "arm", "v7"
	case "armel":
		p.Architecture, p.Variant = "arm", "v6"
	}
	if p.Architecture == "arm64" && p.Variant == "v8" {
		p.Variant = ""
	}
	if p.Architecture == "amd64" && p.Variant == "v1" {
		p.Variant = ""
	}
	return p
}

// platformString is "os/arch[/variant]", or "" when unknown.
func platformString(p ocispec.Platform) string {
	if p.OS == "" && p.Architecture == "" {
		return ""
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// parsePlatform reads "os/arch[/variant]".
func parsePlatform(s string) (ocispec.Platform, error) {
	parts := strings.Split(strings.TrimSpace(s), "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return ocispec.Platform{}, fmt.Errorf("invalid platform %q: want os/arch[/variant], e.g. linux/amd64 or linux/arm/v7", s)
	}
	p := ocispec.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return normPlatform(p), nil
}

func hostPlatform() ocispec.Platform {
	return normPlatform(ocispec.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH})
}

// platformMatches tells whether have satisfies want (both normalised): same
// OS and architecture, and the same variant if want names one.
func platformMatches(want, have ocispec.Platform) bool {
	return want.OS == have.OS && want.Architecture == have.Architecture &&
		(want.Variant == "" || want.Variant == have.Variant)
}

// normRef adds ":latest" to a reference that has no tag (and no digest).
func normRef(s string) string {
	if strings.Contains(s, "@") {
		return s
	}
	if !strings.Contains(s[strings.LastIndex(s, "/")+1:], ":") {
		return s + ":latest"
	}
	return s
}

// tagMatches tells whether the query q names the stored tag t: exactly, or
// with ":latest" implied on either side, or as a suffix of t starting after
// a "/" (so "alpine:3.19" and "library/alpine:3.19" both name
// "docker.io/library/alpine:3.19").
func tagMatches(q, t string) bool {
	if q == t {
		return true
	}
	nq, nt := normRef(q), normRef(t)
	return nq == nt || strings.HasSuffix(nt, "/"+nq)
}

// digestQuery returns the hex prefix q asks for, if q looks like a digest
// (prefix): "sha256:" followed by hex, or at least 4 bare hex digits.
func digestQuery(q string) (string, bool) {
	hex, explicit := strings.CutPrefix(strings.ToLower(q), "sha256:")
	if hex == "" || (!explicit && len(hex) < 4) {
		return "", false
	}
	for _, r := range hex {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return "", false
		}
	}
	return hex, true
}

func digestHasPrefix(d digest.Digest, hex string) bool {
	return d != "" && d.Algorithm() == digest.SHA256 && strings.HasPrefix(d.Encoded(), hex)
}

// matchQuery returns the candidates q names: by tag if any tag matches,
// else by a prefix of the manifest, config or top-level index digest.
func matchQuery(q string, all []*candidate) []*candidate {
	var out []*candidate
	for _, c := range all {
		if slices.ContainsFunc(c.group.tags, func(t string) bool { return tagMatches(q, t) }) {
			out = append(out, c)
		}
	}
	if len(out) > 0 {
		return out
	}
	hex, ok := digestQuery(q)
	if !ok {
		return nil
	}
	// A digest naming a whole multi-platform index selects all its platforms.
	for _, c := range all {
		if digestHasPrefix(c.manifestDigest, hex) || digestHasPrefix(c.configDigest, hex) || digestHasPrefix(c.group.digest, hex) {
			out = append(out, c)
		}
	}
	return out
}

// ShortDigest is d as people read it in messages: "sha256:" and 12 hex digits.
func ShortDigest(d digest.Digest) string {
	if d == "" {
		return ""
	}
	enc := d.Encoded()
	if len(enc) > 12 {
		enc = enc[:12]
	}
	return d.Algorithm().String() + ":" + enc
}

// groupsOf returns the distinct groups of cands, in order.
func groupsOf(cands []*candidate) []*imageGroup {
	var gs []*imageGroup
	for _, c := range cands {
		if !slices.Contains(gs, c.group) {
			gs = append(gs, c.group)
		}
	}
	return gs
}

// id is the digest that best names g: its top-level descriptor's, else its
// config's.
func (g *imageGroup) id() digest.Digest {
	if g.digest == "" && len(g.cands) > 0 {
		return g.cands[0].configDigest
	}
	return g.digest
}

// name is g's tags for messages (see tagList), or its short digest when it
// has none.
func (g *imageGroup) name() string {
	if len(g.tags) > 0 {
		return tagList(g.tags)
	}
	return ShortDigest(g.id())
}

// maxListed is how many images (or platforms) an error message lists: a
// hostile index can name hundreds of thousands.
const maxListed = 10

// maxTagsListed is how many tags of one image a message lists, and
// maxTagLen how many bytes of each: a hostile manifest.json can give an
// image a hundred thousand tags, of any length.
const (
	maxTagsListed = 3
	maxTagLen     = 200
)

// tagList is tags for messages: the first maxTagsListed, each cut to
// maxTagLen bytes, then how many more there are ("a:1, a:2, a:3, +7 more").
func tagList(tags []string) string {
	var b strings.Builder
	for i, t := range tags {
		if i > 0 {
			b.WriteString(", ")
		}
		if i == maxTagsListed {
			fmt.Fprintf(&b, "+%d more", len(tags)-maxTagsListed)
			break
		}
		b.WriteString(shortTag(t))
	}
	return b.String()
}

// shortTag is t cut to maxTagLen bytes (at a character boundary), "..."
// marking the cut.
func shortTag(t string) string {
	if len(t) <= maxTagLen {
		return t
	}
	cut := maxTagLen
	for cut > 0 && !utf8.RuneStart(t[cut]) {
		cut--
	}
	return t[:cut] + "..."
}

// describeGroups lists images for error messages:
// "alpine:3.19 (sha256:0123456789ab; linux/amd64, linux/arm64 [absent])".
// A platform is absent when a blob it needs is neither in ar nor, for a
// layer, among baseHas (the diff_ids the --base tarballs hold; nil when
// none are given).
func describeGroups(ar *archive, gs []*imageGroup, baseHas map[digest.Digest]bool) string {
	var parts []string
	for i, g := range gs {
		if i == maxListed {
			parts = append(parts, fmt.Sprintf("and %d more (imgmount inspect lists them all)", len(gs)-maxListed))
			break
		}
		name := tagList(g.tags)
		if name == "" {
			name = "(untagged)"
		}
		var info []string
		if id := g.id(); id != "" {
			info = append(info, ShortDigest(id))
		}
		var plats []string
		for j, c := range g.cands {
			if j == maxListed {
				plats = append(plats, fmt.Sprintf("and %d more", len(g.cands)-maxListed))
				break
			}
			p := platformString(c.platform)
			if p == "" {
				p = "unknown platform"
			}
			if !c.presentWith(ar, baseHas) {
				p += " [absent]"
			}
			plats = append(plats, p)
		}
		if len(plats) > 0 {
			info = append(info, strings.Join(plats, ", "))
		}
		if len(info) > 0 {
			name += " (" + strings.Join(info, "; ") + ")"
		}
		parts = append(parts, name)
	}
	return strings.Join(parts, ", ")
}

// selectCandidate picks the image opts asks for. See OpenOptions.
func (o *opener) selectCandidate(ar *archive, groups []*imageGroup) (*candidate, error) {
	var all []*candidate
	for _, g := range groups {
		all = append(all, g.cands...)
	}
	cands := all
	q := strings.TrimSpace(o.opts.Image)
	if q != "" {
		cands = matchQuery(q, all)
		if len(cands) == 0 {
			return nil, Errorf(ErrNoSuchImage, "%s: no image matches %q; the %s has: %s", ar.path, q, ar.what(), describeGroups(ar, groups, o.baseHas()))
		}
	}
	var want ocispec.Platform
	if o.opts.Platform != "" {
		var err error
		if want, err = parsePlatform(o.opts.Platform); err != nil {
			return nil, err
		}
		var m []*candidate
		for _, c := range cands {
			if platformMatches(want, c.platform) {
				m = append(m, c)
			}
		}
		if len(m) == 0 {
			what := "no image"
			if q != "" {
				what = fmt.Sprintf("no image matching %q", q)
			}
			return nil, Errorf(ErrNoSuchImage, "%s: %s for platform %s; the %s has: %s", ar.path, what, platformString(want), ar.what(), describeGroups(ar, groupsOf(cands), o.baseHas()))
		}
		cands = m
	}
	if gs := groupsOf(cands); len(gs) > 1 {
		if q == "" {
			return nil, Errorf(ErrAmbiguous, "%s: %d images in the %s: %s; choose one with --image NAME[:TAG] or --image DIGEST-PREFIX", ar.path, len(gs), ar.what(), describeGroups(ar, gs, o.baseHas()))
		}
		return nil, Errorf(ErrAmbiguous, "%s: %q matches %d images: %s; give a longer tag or digest", ar.path, q, len(gs), describeGroups(ar, gs, o.baseHas()))
	}
	if len(cands) == 1 {
		return cands[0], nil
	}

	// One image, several platforms. Prefer those whose blobs are all here
	// (or in the bases), then the host's platform (unless one was asked
	// for).
	var present []*candidate
	for _, c := range cands {
		if c.presentWith(ar, o.baseHas()) {
			present = append(present, c)
		}
	}
	if len(present) > 0 {
		cands = present
	}
	if o.opts.Platform == "" {
		var host []*candidate
		for _, c := range cands {
			if platformMatches(hostPlatform(), c.platform) {
				host = append(host, c)
			}
		}
		if len(host) > 0 {
			cands = host
		} else if len(cands) == 1 {
			o.progress("using platform %s, the only one whose layers are all in the tarball (the host is %s)", platformString(cands[0].platform), platformString(hostPlatform()))
		}
	}
	if len(cands) == 1 {
		return cands[0], nil
	}
	var plats []string
	for i, c := range cands {
		if i == maxListed {
			plats = append(plats, fmt.Sprintf("and %d more", len(cands)-maxListed))
			break
		}
		plats = append(plats, platformString(c.platform))
	}
	return nil, Errorf(ErrAmbiguous, "%s: image %s has several platforms (%s); choose one with --platform OS/ARCH[/VARIANT]", ar.path, cands[0].group.name(), strings.Join(plats, ", "))
}

// baseHas is the set of diff_ids whose blobs the --base tarballs hold,
// read from their metadata once (no layer is read); nil without bases. A
// base that cannot be read counts as holding nothing here: opening the
// image reports it if a layer is looked for there.
func (o *opener) baseHas() map[digest.Digest]bool {
	if len(o.opts.Bases) == 0 {
		return nil
	}
	if o.bases == nil {
		o.bases = map[digest.Digest]bool{}
		for _, bp := range o.opts.Bases {
			ids, err := StoredDiffIDs(bp, o.opts.CacheDir)
			if err != nil {
				continue
			}
			for d := range ids {
				o.bases[d] = true
			}
		}
	}
	return o.bases
}

// presentWith tells whether every blob c needs is in ar or, for a layer
// ar leaves out, among baseHas (the diff_ids the bases hold).
func (c *candidate) presentWith(ar *archive, baseHas map[digest.Digest]bool) bool {
	if c.present(ar) {
		return true
	}
	if len(baseHas) == 0 || c.missing != "" || !ar.has(c.configMember()) {
		return false
	}
	var cfg ocispec.Image
	if ar.readJSON("", c.configMember(), &cfg) != nil || len(cfg.RootFS.DiffIDs) != c.numLayers() {
		return false
	}
	for i, d := range cfg.RootFS.DiffIDs {
		if name, _, _ := c.layerMember(i); !ar.has(name) && !baseHas[d] {
			return false
		}
	}
	return true
}
