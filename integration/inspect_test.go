package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

// inspectJSON mirrors the documented JSON of `imgmount inspect --json`.
type inspectJSON struct {
	Archive string     `json:"archive"`
	Format  string     `json:"format"`
	Images  []imageRef `json:"images"`
	Image   imageRef   `json:"image"`
	Config  struct {
		OS           string            `json:"os"`
		Architecture string            `json:"architecture"`
		Variant      string            `json:"variant"`
		Env          []string          `json:"env"`
		Entrypoint   []string          `json:"entrypoint"`
		Cmd          []string          `json:"cmd"`
		WorkingDir   string            `json:"working_dir"`
		User         string            `json:"user"`
		ExposedPorts []string          `json:"exposed_ports"`
		Labels       map[string]string `json:"labels"`
	} `json:"config"`
	Layers []struct {
		Index       int    `json:"index"`
		DiffID      string `json:"diff_id"`
		Digest      string `json:"digest"`
		MediaType   string `json:"media_type"`
		Compression string `json:"compression"`
		StoredSize  int64  `json:"stored_size"`
		Size        int64  `json:"size"`
		Entries     int    `json:"entries"`
		CreatedBy   string `json:"created_by"`
		HiddenBytes int64  `json:"hidden_bytes"`
	} `json:"layers"`
	StoredSize  int64 `json:"stored_size"`
	Size        int64 `json:"size"`
	HiddenBytes int64 `json:"hidden_bytes"`
}

type imageRef struct {
	Tags           []string `json:"tags"`
	ManifestDigest string   `json:"manifest_digest"`
	ConfigDigest   string   `json:"config_digest"`
	Platform       string   `json:"platform"`
}

// skopeoView is what skopeo reads from a tarball: its manifest (raw) and
// config.
func skopeoView(t *testing.T, img testImage) (ocispec.Manifest, ocispec.Image) {
	t.Helper()
	src := img.path()
	if img.gz {
		src = filepath.Join(t.TempDir(), "input.tar")
		sh(t, "gunzip -c "+shellQuote(img.path())+" > "+shellQuote(src))
	}
	ref := img.transport + ":" + src
	if img.ref != "" {
		ref += ":" + img.ref
	}
	var man ocispec.Manifest
	var cfg ocispec.Image
	require.NoError(t, json.Unmarshal([]byte(cmdOK(t, "skopeo", "inspect", "--raw", ref)), &man))
	require.NoError(t, json.Unmarshal([]byte(cmdOK(t, "skopeo", "inspect", "--config", ref)), &cfg))
	return man, cfg
}

func nonEmptyHistory(cfg ocispec.Image) []ocispec.History {
	var hs []ocispec.History
	for _, h := range cfg.History {
		if !h.EmptyLayer {
			hs = append(hs, h)
		}
	}
	return hs
}

func sortedPorts(m map[string]struct{}) []string {
	out := []string{}
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// tarStats counts the members and bytes of an uncompressed layer.
func tarStats(t *testing.T, data []byte) (entries int) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		_, err := tr.Next()
		if err == io.EOF {
			return entries
		}
		require.NoError(t, err)
		entries++
	}
}

// TestInspect compares `imgmount inspect --json` with what skopeo reads
// from the same tarball, and with the layer tars themselves.
func TestInspect(t *testing.T) {
	for _, img := range allImages {
		t.Run(img.name, func(t *testing.T) {
			requireFUSE(t)
			r := run(t, 5*time.Minute, "inspect", "--json", img.path())
			require.Equal(t, 0, r.code, "%s", r)
			var got inspectJSON
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &got), "inspect --json output:\n%s", r.stdout)

			man, cfg := skopeoView(t, img)
			od := oracle(t, img)

			require.Equal(t, img.path(), got.Archive)
			require.Equal(t, img.format, got.Format)
			c := got.Config
			require.Equal(t, cfg.OS, c.OS)
			require.Equal(t, cfg.Architecture, c.Architecture)
			require.Equal(t, cfg.Variant, c.Variant)
			require.Equal(t, orEmpty(cfg.Config.Env), c.Env)
			require.Equal(t, orEmpty(cfg.Config.Entrypoint), c.Entrypoint)
			require.Equal(t, orEmpty(cfg.Config.Cmd), c.Cmd)
			require.Equal(t, cfg.Config.WorkingDir, c.WorkingDir)
			require.Equal(t, cfg.Config.User, c.User)
			require.Equal(t, sortedPorts(cfg.Config.ExposedPorts), orEmpty(c.ExposedPorts))
			wantLabels := cfg.Config.Labels
			if wantLabels == nil {
				wantLabels = map[string]string{}
			}
			require.Equal(t, wantLabels, c.Labels)

			require.Equal(t, man.Config.Digest.String(), got.Image.ConfigDigest, "config digest")
			require.True(t, slices.ContainsFunc(got.Images, func(ir imageRef) bool { return ir.ConfigDigest == got.Image.ConfigDigest }),
				"images[] lists the chosen image: %+v", got.Images)

			require.Len(t, got.Layers, len(cfg.RootFS.DiffIDs))
			require.Len(t, man.Layers, len(cfg.RootFS.DiffIDs))
			hist := nonEmptyHistory(cfg)
			var stored, size, hidden int64
			for i, l := range got.Layers {
				require.Equal(t, i, l.Index)
				require.Equal(t, cfg.RootFS.DiffIDs[i].String(), l.DiffID, "layer %d diff_id", i)
				data := layerTar(t, od, i)
				require.Equal(t, int64(len(data)), l.Size, "layer %d uncompressed size", i)
				require.Equal(t, tarStats(t, data), l.Entries, "layer %d entries", i)
				if i < len(hist) {
					require.Equal(t, hist[i].CreatedBy, l.CreatedBy, "layer %d created_by", i)
				}
				if img.transport == "docker-archive" {
					// Legacy docker save: layers are plain tars, their digest is the diff_id.
					require.Equal(t, "none", l.Compression, "layer %d", i)
					require.Equal(t, l.DiffID, l.Digest, "layer %d", i)
					require.Equal(t, l.Size, l.StoredSize, "layer %d", i)
				} else {
					md := man.Layers[i]
					require.Equal(t, md.Digest.String(), l.Digest, "layer %d digest", i)
					require.Equal(t, md.MediaType, l.MediaType, "layer %d media type", i)
					require.Equal(t, md.Size, l.StoredSize, "layer %d stored size", i)
					wantComp := "none"
					switch {
					case strings.HasSuffix(md.MediaType, "+gzip"):
						wantComp = "gzip"
					case strings.HasSuffix(md.MediaType, "+zstd"):
						wantComp = "zstd"
					}
					require.Equal(t, wantComp, l.Compression, "layer %d compression", i)
				}
				require.GreaterOrEqual(t, l.HiddenBytes, int64(0))
				stored += l.StoredSize
				size += l.Size
				hidden += l.HiddenBytes
			}
			require.Equal(t, stored, got.StoredSize)
			require.Equal(t, size, got.Size)
			require.Equal(t, hidden, got.HiddenBytes)
			if tags := repoTags(t, img); len(tags) > 0 {
				require.True(t, slices.ContainsFunc(got.Image.Tags, func(g string) bool { return familiar(g) == familiar(tags[0]) }),
					"image tags %q, manifest.json RepoTags %q", got.Image.Tags, tags)
			}
			switch img.kind {
			case "debian":
				// Layer 1 deletes /usr/share/doc, layer 2 replaces /etc/issue's owner...
				require.Greater(t, got.Layers[0].HiddenBytes, int64(1<<20), "layer 0 content hidden by later layers (usr/share/doc)")
			case "tricky":
				require.Greater(t, got.Layers[0].HiddenBytes, int64(0), "layer 0 content hidden by later layers")
			}

			// The text form: exit 0, the format, and each layer's short diff_id.
			r = run(t, 5*time.Minute, "inspect", img.path())
			require.Equal(t, 0, r.code, "%s", r)
			require.Contains(t, r.stdout, img.format)
			for _, d := range cfg.RootFS.DiffIDs {
				require.Contains(t, r.stdout, d.Encoded()[:12])
			}
		})
	}
}

// repoTags reads the RepoTags of manifest.json in the tarball (none for
// a pure OCI archive).
func repoTags(t *testing.T, img testImage) []string {
	t.Helper()
	f, err := os.Open(img.path())
	require.NoError(t, err)
	defer f.Close()
	var r io.Reader = f
	if img.gz {
		zr, err := gzip.NewReader(f)
		require.NoError(t, err)
		r = zr
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		require.NoError(t, err)
		if hdr.Name != "manifest.json" {
			continue
		}
		var m []struct{ RepoTags []string }
		require.NoError(t, json.NewDecoder(tr).Decode(&m))
		require.Len(t, m, 1)
		return m[0].RepoTags
	}
}

// familiar drops a registry host from a reference ("host.tld/a/b:t" ->
// "a/b:t"), as docker shows names.
func familiar(ref string) string {
	if i := strings.IndexByte(ref, '/'); i > 0 && strings.ContainsAny(ref[:i], ".:") {
		return ref[i+1:]
	}
	return ref
}
