package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/repack"
	digest "github.com/opencontainers/go-digest"
)

// parseHave parses the arguments of `imgmount have`.
func parseHave(args []string, getenv env) (*config, error) {
	cfg := &config{mode: modeHave, ship: &shipConfig{}}
	sc := cfg.ship
	fl := newFlagSet("imgmount have")
	var help bool
	fl.StringVar(&cfg.cacheDir, "cache-dir", "", "")
	fl.Var(&cfg.maxMemory, "max-memory", "")
	fl.BoolVarP(&help, "help", "h", false, "")
	fl.BoolVar(&sc.docker, "docker", false, "")
	fl.BoolVar(&sc.podman, "podman", false, "")
	fl.BoolVar(&cfg.json, "json", false, "")
	if err := fl.Parse(args); err != nil {
		return nil, usagef("have: %v", err)
	}
	if help {
		cfg.mode = modeHelp
		return cfg, nil
	}
	for _, p := range fl.Args() {
		a, err := absPath(p)
		if err != nil {
			return nil, err
		}
		sc.sources = append(sc.sources, a)
	}
	if len(sc.sources) == 0 && !sc.docker && !sc.podman {
		return nil, usagef("have: nothing to list: give image tarballs, --docker or --podman (imgmount have [--docker] [--podman] [--json] [SOURCE...])")
	}
	if err := cfg.finishCommon(getenv); err != nil {
		return nil, err
	}
	return cfg, nil
}

// runHave is imgmount have: the layers this machine has, for the sender's
// imgmount thin --have.
func runHave(cfg *config, stdout, stderr io.Writer) error {
	sc := cfg.ship
	have := repack.NewHave()
	for _, p := range sc.sources {
		c, err := archive.OpenContents(p, cfg.cacheDir, cfg.maxMemory.entries())
		if err != nil {
			return err
		}
		have.Merge(repack.HaveOf(c))
		c.Close()
	}
	for _, engine := range []struct {
		on   bool
		name string
	}{{sc.docker, "docker"}, {sc.podman, "podman"}} {
		if !engine.on {
			continue
		}
		h, err := engineHave(engine.name)
		if err != nil {
			return err
		}
		have.Merge(h)
	}
	l := have.List()
	if cfg.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(l)
	}
	var b strings.Builder
	for _, d := range l.DiffIDs {
		b.WriteString(d.String() + "\n")
	}
	_, err := io.WriteString(stdout, b.String())
	return err
}

// engineBatch is how many images one `docker image inspect` is given.
const engineBatch = 200

// engineHave lists the layers of every image a container engine (docker
// or podman, through its command) holds: `image ls` for the images, then
// `image inspect` for their RootFS.Layers.
func engineHave(cli string) (*repack.Have, error) {
	if _, err := exec.LookPath(cli); err != nil {
		return nil, fmt.Errorf("--%s: the %s command is not installed (%w)", cli, cli, err)
	}
	out, err := engineOutput(cli, "image", "ls", "--all", "--quiet", "--no-trunc")
	if err != nil {
		return nil, err
	}
	var ids []string
	seen := map[string]bool{}
	for _, id := range strings.Fields(string(out)) {
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	have := repack.NewHave()
	for len(ids) > 0 {
		n := min(len(ids), engineBatch)
		batch := ids[:n]
		ids = ids[n:]
		out, err := engineOutput(cli, append([]string{"image", "inspect"}, batch...)...)
		if err != nil {
			return nil, err
		}
		var imgs []struct {
			ID     string `json:"Id"`
			RootFS struct {
				Layers []digest.Digest
			}
		}
		if err := json.Unmarshal(out, &imgs); err != nil {
			return nil, fmt.Errorf("--%s: %s image inspect printed what is not its JSON: %w", cli, cli, err)
		}
		for _, im := range imgs {
			for _, d := range im.RootFS.Layers {
				if err := d.Validate(); err != nil {
					return nil, fmt.Errorf("--%s: image %s: layer %q: %w", cli, im.ID, d, err)
				}
			}
			have.AddImage(im.RootFS.Layers)
		}
	}
	return have, nil
}

// engineOutput runs the engine's command and gives its stdout; its stderr
// goes into the error.
func engineOutput(cli string, args ...string) ([]byte, error) {
	cmd := exec.Command(cli, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		var ee *exec.ExitError
		if msg != "" && errors.As(err, &ee) {
			return nil, fmt.Errorf("--%s: %s %s: %s", cli, cli, strings.Join(args[:min(len(args), 2)], " "), msg)
		}
		return nil, fmt.Errorf("--%s: %s %s: %w", cli, cli, strings.Join(args[:min(len(args), 2)], " "), err)
	}
	return out, nil
}
