package repack

import (
	"encoding/json"
	"fmt"

	"github.com/imgmount/imgmount/overlay/archive"
	digest "github.com/opencontainers/go-digest"
)

// rewriteLists rewrites the lists of images (index.json, manifest.json,
// repositories) to name only the kept groups: the members as they are to
// be written, by name.
func rewriteLists(src *archive.Contents, keep []bool, members []rawMember) (map[string]rawMember, error) {
	kept := keptRefsOf(src, keep)
	out := map[string]rawMember{}
	for _, m := range members {
		var body []byte
		var err error
		switch m.name {
		case "index.json":
			body, err = filterIndex(src, kept.digests)
		case "manifest.json":
			body, err = filterDockerManifest(src, kept.configs)
		case "repositories":
			body, err = filterRepositories(src, kept.tags)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		if body == nil {
			continue
		}
		if out[m.name], err = m.withBody(body); err != nil {
			return nil, fmt.Errorf("%s: rewriting %s: %w", src.Path, m.name, err)
		}
	}
	return out, nil
}

// keptRefs are the ways the lists of images name the kept groups.
type keptRefs struct {
	digests map[digest.Digest]bool // index.json's: of the top-level descriptors
	configs map[digest.Digest]bool // manifest.json's: of the configs
	tags    map[string]bool        // repositories': name:tag
}

func keptRefsOf(src *archive.Contents, keep []bool) keptRefs {
	k := keptRefs{digests: map[digest.Digest]bool{}, configs: map[digest.Digest]bool{}, tags: map[string]bool{}}
	for gi, g := range src.Groups {
		if !keep[gi] {
			continue
		}
		if g.Digest != "" {
			k.digests[g.Digest] = true
		}
		for _, t := range g.Tags {
			k.tags[t] = true
		}
		for _, ii := range g.Images {
			k.configs[src.Images[ii].Ref.ConfigDigest] = true
		}
	}
	return k
}

// filterIndex is index.json listing only the manifests keep names; nil if
// the tarball has no index.json (or it is a link, left as it is).
func filterIndex(src *archive.Contents, keep map[digest.Digest]bool) ([]byte, error) {
	var idx map[string]json.RawMessage
	if err := src.ReadJSON("index.json", &idx); err != nil {
		return nil, err
	}
	var ms []json.RawMessage
	if raw, ok := idx["manifests"]; ok {
		if err := json.Unmarshal(raw, &ms); err != nil {
			return nil, fmt.Errorf("%s: index.json: manifests: %w", src.Path, err)
		}
	}
	kept := []json.RawMessage{}
	for _, m := range ms {
		var d struct{ Digest digest.Digest }
		if json.Unmarshal(m, &d) == nil && keep[d.Digest] {
			kept = append(kept, m)
		}
	}
	var err error
	if idx["manifests"], err = json.Marshal(kept); err != nil {
		return nil, err
	}
	return json.Marshal(idx)
}

// filterDockerManifest is manifest.json listing only the images whose
// configs keep names.
func filterDockerManifest(src *archive.Contents, keep map[digest.Digest]bool) ([]byte, error) {
	var entries []json.RawMessage
	if err := src.ReadJSON("manifest.json", &entries); err != nil {
		return nil, err
	}
	kept := []json.RawMessage{}
	for _, raw := range entries {
		var e archive.DockerManifestEntry
		if json.Unmarshal(raw, &e) != nil {
			continue
		}
		if keep[src.ManifestConfigDigest(e)] {
			kept = append(kept, raw)
		}
	}
	return json.Marshal(kept)
}

// filterRepositories is docker save's repositories file ({"name":
// {"tag": "<layer id>"}}) naming only the kept tags.
func filterRepositories(src *archive.Contents, keep map[string]bool) ([]byte, error) {
	var repos map[string]map[string]string
	if err := src.ReadJSON("repositories", &repos); err != nil {
		return nil, nil // not the file docker save writes: left as it is
	}
	out := map[string]map[string]string{}
	for name, tags := range repos {
		for tag, id := range tags {
			if keep[name+":"+tag] {
				if out[name] == nil {
					out[name] = map[string]string{}
				}
				out[name][tag] = id
			}
		}
	}
	return json.Marshal(out)
}
