package repack

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// ConfigEdits are changes to the runtime config of a committed image. Nil
// fields are left as they are.
type ConfigEdits struct {
	// Env entries "K=V" each replace the variable K where it stands, or
	// are appended.
	Env []string
	// Entrypoint and Cmd are a JSON array of strings (exec form) or any
	// other string, run by the image's shell (config Shell, else
	// ["/bin/sh", "-c"]) as a Dockerfile's shell form is; "" clears them.
	// As in a Dockerfile (and docker commit --change), a new Entrypoint
	// clears Cmd unless Cmd is given too.
	Entrypoint *string
	Cmd        *string
	WorkingDir *string
	User       *string
	// Labels are set (a value "" included).
	Labels map[string]string
}

// empty tells whether e changes nothing.
func (e *ConfigEdits) empty() bool {
	return len(e.Env) == 0 && e.Entrypoint == nil && e.Cmd == nil && e.WorkingDir == nil && e.User == nil && len(e.Labels) == 0
}

// ParseCommand turns an --entrypoint or --cmd value into the config's
// array: a JSON array of strings as it is, "" as none, anything else as
// shell + [s]. A value that starts with "[" must be a valid JSON array of
// strings: falling back to the shell form (what a Dockerfile does) would
// hide a typo.
func ParseCommand(s string, shell []string) ([]string, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return nil, nil
	}
	if strings.HasPrefix(t, "[") {
		var argv []string
		if err := json.Unmarshal([]byte(t), &argv); err != nil {
			return nil, fmt.Errorf("%q: not a JSON array of strings (%v); give [\"prog\", \"arg\"] or a shell command line", s, err)
		}
		return argv, nil
	}
	if len(shell) == 0 {
		shell = []string{"/bin/sh", "-c"}
	}
	return append(slices.Clone(shell), s), nil
}

// historyEntry is the history record a commit adds.
type historyEntry struct {
	Created    string `json:"created"`
	CreatedBy  string `json:"created_by,omitempty"`
	Comment    string `json:"comment,omitempty"`
	EmptyLayer bool   `json:"empty_layer,omitempty"`
}

// configChange says how a commit changes the image config.
type configChange struct {
	edits   ConfigEdits
	created time.Time
	history historyEntry
	// diffIDs replace rootfs.diff_ids when squash is set, else are
	// appended to them.
	diffIDs []digest.Digest
	squash  bool
}

// squashKeys are the top-level config fields a squashed image keeps: the
// platform and the runtime config. Build-time leftovers (container,
// container_config, docker_version, parent...) describe layers that are
// gone.
var squashKeys = []string{"architecture", "os", "os.version", "os.features", "variant", "config"}

// editConfig applies ch to the config JSON raw. Fields it does not know
// are kept as they are (only their whitespace may change).
func editConfig(raw []byte, ch configChange) ([]byte, error) {
	top := map[string]json.RawMessage{}
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fmt.Errorf("image config: malformed JSON: %w", err)
	}
	if ch.squash {
		kept := map[string]json.RawMessage{}
		for _, k := range squashKeys {
			if v, ok := top[k]; ok {
				kept[k] = v
			}
		}
		top = kept
	}
	if err := editRuntimeConfig(top, ch.edits); err != nil {
		return nil, err
	}
	if err := editRootFS(top, ch.diffIDs, ch.squash); err != nil {
		return nil, err
	}
	if err := appendHistory(top, ch.history, ch.squash); err != nil {
		return nil, err
	}
	if err := setJSON(top, "created", ch.created.UTC().Format(time.RFC3339Nano)); err != nil {
		return nil, err
	}
	return marshalJSON(top)
}

// marshalJSON encodes v without HTML escaping (so "<" in a label stays
// "<") and without the encoder's trailing newline. Map keys come sorted,
// so the same config always gives the same bytes.
func marshalJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

func setJSON(m map[string]json.RawMessage, key string, v any) error {
	b, err := marshalJSON(v)
	if err != nil {
		return fmt.Errorf("image config: %s: %w", key, err)
	}
	m[key] = b
	return nil
}

// getJSON decodes m[key] into v if present and not null.
func getJSON(m map[string]json.RawMessage, key string, v any) error {
	r, ok := m[key]
	if !ok || string(r) == "null" {
		return nil
	}
	if err := json.Unmarshal(r, v); err != nil {
		return fmt.Errorf("image config: %s: %w", key, err)
	}
	return nil
}

// editRuntimeConfig applies the edits to the "config" object, keeping
// the fields it does not touch as they are.
func editRuntimeConfig(top map[string]json.RawMessage, e ConfigEdits) error {
	if e.empty() {
		return nil
	}
	cfg := map[string]json.RawMessage{}
	if err := getJSON(top, "config", &cfg); err != nil {
		return err
	}
	if cfg == nil {
		cfg = map[string]json.RawMessage{}
	}
	var shell []string
	if err := getJSON(cfg, "Shell", &shell); err != nil {
		return err
	}
	steps := []func() error{
		func() error { return editEnv(cfg, e.Env) },
		func() error { return editCommand(cfg, "Entrypoint", e.Entrypoint, shell) },
		func() error { return editCommand(cfg, "Cmd", e.Cmd, shell) },
		func() error { return editString(cfg, "WorkingDir", e.WorkingDir) },
		func() error { return editString(cfg, "User", e.User) },
		func() error { return editLabels(cfg, e.Labels) },
	}
	if e.Entrypoint != nil && e.Cmd == nil {
		steps = append(steps, func() error { return setJSON(cfg, "Cmd", nil) })
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return setJSON(top, "config", cfg)
}

func editEnv(cfg map[string]json.RawMessage, set []string) error {
	if len(set) == 0 {
		return nil
	}
	var env []string
	if err := getJSON(cfg, "Env", &env); err != nil {
		return err
	}
	for _, kv := range set {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("env %q: want KEY=VALUE", kv)
		}
		i := slices.IndexFunc(env, func(old string) bool {
			ok, _, _ := strings.Cut(old, "=")
			return ok == k
		})
		if i >= 0 {
			env[i] = kv
		} else {
			env = append(env, kv)
		}
	}
	return setJSON(cfg, "Env", env)
}

func editCommand(cfg map[string]json.RawMessage, key string, v *string, shell []string) error {
	if v == nil {
		return nil
	}
	argv, err := ParseCommand(*v, shell)
	if err != nil {
		return fmt.Errorf("%s %w", strings.ToLower(key), err)
	}
	return setJSON(cfg, key, argv)
}

func editString(cfg map[string]json.RawMessage, key string, v *string) error {
	if v == nil {
		return nil
	}
	return setJSON(cfg, key, *v)
}

func editLabels(cfg map[string]json.RawMessage, set map[string]string) error {
	if len(set) == 0 {
		return nil
	}
	labels := map[string]string{}
	if err := getJSON(cfg, "Labels", &labels); err != nil {
		return err
	}
	if labels == nil {
		labels = map[string]string{}
	}
	for k, v := range set {
		labels[k] = v
	}
	return setJSON(cfg, "Labels", labels)
}

// editRootFS appends (or, squashing, sets) the diff_ids.
func editRootFS(top map[string]json.RawMessage, diffIDs []digest.Digest, squash bool) error {
	rootfs := map[string]json.RawMessage{}
	if !squash {
		if err := getJSON(top, "rootfs", &rootfs); err != nil {
			return err
		}
	}
	if rootfs == nil {
		rootfs = map[string]json.RawMessage{}
	}
	var ids []digest.Digest
	if !squash {
		if err := getJSON(rootfs, "diff_ids", &ids); err != nil {
			return err
		}
	}
	ids = append(ids, diffIDs...)
	if ids == nil {
		ids = []digest.Digest{}
	}
	if err := setJSON(rootfs, "type", "layers"); err != nil {
		return err
	}
	if err := setJSON(rootfs, "diff_ids", ids); err != nil {
		return err
	}
	return setJSON(top, "rootfs", rootfs)
}

// appendHistory appends h to the history (squashing: makes it the only
// entry). Existing entries are kept as they are.
func appendHistory(top map[string]json.RawMessage, h historyEntry, squash bool) error {
	var hist []json.RawMessage
	if !squash {
		if err := getJSON(top, "history", &hist); err != nil {
			return err
		}
	}
	b, err := marshalJSON(h)
	if err != nil {
		return err
	}
	return setJSON(top, "history", append(hist, b))
}
