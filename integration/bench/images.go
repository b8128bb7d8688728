// Package bench holds imgmount's benchmarks: Go benchmarks of the in-process
// parts (indexing, loading a saved index, building the union) and the
// synthetic images the end-to-end driver (./driver, run by `make bench`)
// measures against the alternatives.
//
// The synthetic images are legacy `docker save` tarballs (manifest.json,
// config, uncompressed layer tars), which imgmount, podman and skopeo all
// read. They are deterministic: the same arguments give the same bytes.
package bench

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"
)

// Epoch is the mtime of every synthetic entry.
var Epoch = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// LayerFunc writes one layer's entries.
type LayerFunc func(tw *tar.Writer) error

// WriteDockerArchive writes a legacy docker-archive tarball at path with
// the given layers (base first), tagged tag. Each layer is written once to
// a temporary file beside path (to learn its diff_id) and then copied into
// the archive; the archive itself appears under its name only when
// complete.
func WriteDockerArchive(path, tag string, layers []LayerFunc) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	type built struct {
		file   string
		diffID string
		size   int64
	}
	var done []built
	defer func() {
		for _, b := range done {
			os.Remove(b.file)
		}
	}()
	for i, lf := range layers {
		f, err := os.CreateTemp(dir, ".layer-*.tar")
		if err != nil {
			return err
		}
		h := sha256.New()
		cw := &countWriter{w: io.MultiWriter(f, h)}
		tw := tar.NewWriter(cw)
		err = lf(tw)
		if err == nil {
			err = tw.Close()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		done = append(done, built{file: f.Name(), diffID: hex.EncodeToString(h.Sum(nil)), size: cw.n})
		if err != nil {
			return fmt.Errorf("%s: layer %d: %w", path, i, err)
		}
	}

	diffIDs := make([]string, len(done))
	history := make([]map[string]string, len(done))
	for i, b := range done {
		diffIDs[i] = "sha256:" + b.diffID
		history[i] = map[string]string{"created": Epoch.Format(time.RFC3339), "created_by": fmt.Sprintf("bench layer %d", i)}
	}
	cfg, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      Epoch.Format(time.RFC3339),
		"config":       map[string]any{"Env": []string{"PATH=/usr/bin:/bin"}, "Cmd": []string{"/bin/sh"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
		"history":      history,
	})
	if err != nil {
		return err
	}
	cfgSum := sha256.Sum256(cfg)
	cfgName := hex.EncodeToString(cfgSum[:]) + ".json"
	layerNames := make([]string, len(done))
	for i, b := range done {
		layerNames[i] = b.diffID + "/layer.tar"
	}
	manifest, err := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{tag}, "Layers": layerNames}})
	if err != nil {
		return err
	}

	out, err := os.CreateTemp(dir, ".archive-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name()) // no-op once renamed
	tw := tar.NewWriter(out)
	put := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: Epoch, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	seen := map[string]bool{}
	for i, b := range done {
		if seen[b.diffID] {
			continue // the same layer twice: one copy serves both names
		}
		seen[b.diffID] = true
		if err := tw.WriteHeader(&tar.Header{Name: b.diffID + "/", Mode: 0o755, ModTime: Epoch, Typeflag: tar.TypeDir}); err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: layerNames[i], Mode: 0o644, Size: b.size, ModTime: Epoch, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		lf, err := os.Open(b.file)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, lf)
		lf.Close()
		if err != nil {
			return fmt.Errorf("%s: copying layer %d: %w", path, i, err)
		}
	}
	if err := put(cfgName, cfg); err != nil {
		return err
	}
	if err := put("manifest.json", manifest); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(out.Name(), path)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Dir writes a directory entry.
func Dir(tw *tar.Writer, name string) error {
	return tw.WriteHeader(&tar.Header{Name: name + "/", Mode: 0o755, ModTime: Epoch, Typeflag: tar.TypeDir, Format: tar.FormatPAX})
}

// File writes a regular file entry with content.
func File(tw *tar.Writer, name string, content []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), ModTime: Epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err := tw.Write(content)
	return err
}

// Whiteout writes an OCI whiteout for name.
func Whiteout(tw *tar.Writer, name string) error {
	d, b := filepath.Split(name)
	return tw.WriteHeader(&tar.Header{Name: d + ".wh." + b, Mode: 0o644, ModTime: Epoch, Typeflag: tar.TypeReg})
}

// rng is a deterministic stream of pseudo-random bytes.
func rng(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return rand.NewChaCha8(s)
}

// BigFileLayer is one layer holding data/big.bin: size bytes of
// pseudo-random (incompressible) content.
func BigFileLayer(size int64) LayerFunc {
	return func(tw *tar.Writer) error {
		if err := Dir(tw, "data"); err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: "data/big.bin", Mode: 0o644, Size: size, ModTime: Epoch, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := io.CopyN(tw, rng(1), size)
		return err
	}
}

// ManyFilesLayer is one layer of n small files, 1,000 per directory
// (files/dNNNN/fNNNN), each 0 to 1,023 bytes, plus their directories.
func ManyFilesLayer(n int) LayerFunc {
	return func(tw *tar.Writer) error {
		r := rand.New(rng(2))
		buf := make([]byte, 1024)
		_, _ = rng(3).Read(buf)
		if err := Dir(tw, "files"); err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			if i%1000 == 0 {
				if err := Dir(tw, fmt.Sprintf("files/d%04d", i/1000)); err != nil {
					return err
				}
			}
			size := r.IntN(1024)
			if err := File(tw, fmt.Sprintf("files/d%04d/f%04d", i/1000, i%1000), buf[:size]); err != nil {
				return err
			}
		}
		return nil
	}
}

// OverlapLayers is an image of n layers over one shared tree of dirs
// directories, each layer writing files files spread over them: most
// paths recur in many layers (later ones win), every fifth layer whites
// out a few files and one directory of earlier layers, and each layer
// adds a directory of its own.
func OverlapLayers(n, dirs, files int) []LayerFunc {
	out := make([]LayerFunc, n)
	for i := range out {
		out[i] = func(tw *tar.Writer) error {
			r := rand.New(rng(uint64(100 + i)))
			content := make([]byte, 512)
			_, _ = rng(uint64(200 + i)).Read(content)
			if err := Dir(tw, "shared"); err != nil {
				return err
			}
			for d := 0; d < dirs; d++ {
				if err := Dir(tw, fmt.Sprintf("shared/d%03d", d)); err != nil {
					return err
				}
			}
			if i > 0 && i%5 == 0 {
				for k := 0; k < 20; k++ {
					if err := Whiteout(tw, fmt.Sprintf("shared/d%03d/f%04d", r.IntN(dirs), r.IntN(files))); err != nil {
						return err
					}
				}
				if err := Whiteout(tw, fmt.Sprintf("own/l%02d", i-5)); err != nil {
					return err
				}
			}
			// A path is in this layer with probability 1/4: across 50
			// layers each appears about 12 times.
			for f := 0; f < files; f++ {
				if r.IntN(4) != 0 {
					continue
				}
				name := fmt.Sprintf("shared/d%03d/f%04d", f%dirs, f)
				if err := File(tw, name, content[:r.IntN(len(content))]); err != nil {
					return err
				}
			}
			if err := Dir(tw, "own"); err != nil {
				return err
			}
			if err := Dir(tw, fmt.Sprintf("own/l%02d", i)); err != nil {
				return err
			}
			for f := 0; f < 50; f++ {
				if err := File(tw, fmt.Sprintf("own/l%02d/f%02d", i, f), content[:64]); err != nil {
					return err
				}
			}
			return nil
		}
	}
	return out
}

// EnsureArchive writes the archive at path with WriteDockerArchive unless
// a file stamped with the same recipe is already there.
func EnsureArchive(path, recipe, tag string, layers []LayerFunc) (built bool, err error) {
	stamp := path + ".stamp"
	if b, err := os.ReadFile(stamp); err == nil && string(b) == recipe {
		if _, err := os.Stat(path); err == nil {
			return false, nil
		}
	}
	os.Remove(stamp)
	if err := WriteDockerArchive(path, tag, layers); err != nil {
		return false, err
	}
	return true, os.WriteFile(stamp, []byte(recipe), 0o644)
}
