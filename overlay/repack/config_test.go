package repack

import (
	"encoding/json"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

// dockerConfig is a config as Docker writes it, with fields ocispec.Image
// does not know.
const dockerConfig = `{
  "architecture": "amd64",
  "os": "linux",
  "config": {
    "Hostname": "",
    "Env": ["PATH=/usr/bin:/bin", "LANG=C", "EMPTY="],
    "Cmd": ["bash"],
    "Entrypoint": null,
    "WorkingDir": "/srv",
    "Labels": {"a": "1", "html": "<b>"},
    "ExposedPorts": {"80/tcp": {}},
    "Volumes": {"/data": {}},
    "StopSignal": "SIGQUIT",
    "Shell": ["/bin/bash", "-euc"],
    "OnBuild": null,
    "ArgsEscaped": true
  },
  "container": "deadbeef",
  "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) CMD [\"bash\"]"]},
  "docker_version": "24.0.7",
  "created": "2023-01-01T00:00:00Z",
  "rootfs": {"type": "layers", "diff_ids": ["sha256:1111111111111111111111111111111111111111111111111111111111111111"]},
  "history": [
    {"created": "2023-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file:x in /"},
    {"created": "2023-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) CMD [\"bash\"]", "empty_layer": true}
  ]
}`

var newDiffID = digest.Digest("sha256:2222222222222222222222222222222222222222222222222222222222222222")

func editedConfig(t *testing.T, ch configChange) (map[string]json.RawMessage, map[string]any) {
	t.Helper()
	if ch.created.IsZero() {
		ch.created = time.Date(2025, 6, 7, 8, 9, 10, 11, time.UTC)
	}
	out, err := editConfig([]byte(dockerConfig), ch)
	require.NoError(t, err)
	var top map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(out, &top))
	var cfg map[string]any
	require.NoError(t, json.Unmarshal(top["config"], &cfg))
	return top, cfg
}

func strp(s string) *string { return &s }

func TestEditConfigKeepsUnknownFields(t *testing.T) {
	top, cfg := editedConfig(t, configChange{diffIDs: []digest.Digest{newDiffID}, history: historyEntry{Created: "2025-06-07T08:09:10.000000011Z", CreatedBy: "imgmount commit", Comment: "hi"}})
	require.JSONEq(t, `{"Cmd": ["/bin/sh", "-c", "#(nop) CMD [\"bash\"]"]}`, string(top["container_config"]))
	require.JSONEq(t, `"24.0.7"`, string(top["docker_version"]))
	require.Equal(t, true, cfg["ArgsEscaped"])
	require.Contains(t, cfg, "Hostname")
	require.JSONEq(t, `"2025-06-07T08:09:10.000000011Z"`, string(top["created"]))
	require.JSONEq(t, `{"type":"layers","diff_ids":["sha256:1111111111111111111111111111111111111111111111111111111111111111","sha256:2222222222222222222222222222222222222222222222222222222222222222"]}`, string(top["rootfs"]))
	var hist []map[string]any
	require.NoError(t, json.Unmarshal(top["history"], &hist))
	require.Len(t, hist, 3)
	require.Equal(t, true, hist[1]["empty_layer"])
	require.Equal(t, map[string]any{"created": "2025-06-07T08:09:10.000000011Z", "created_by": "imgmount commit", "comment": "hi"}, hist[2])

	out, err := editConfig([]byte(dockerConfig), configChange{created: time.Unix(0, 0)})
	require.NoError(t, err)
	require.Contains(t, string(out), `"html":"<b>"`, "no HTML escaping")
}

func TestEditConfigRuntimeSettings(t *testing.T) {
	_, cfg := editedConfig(t, configChange{edits: ConfigEdits{
		Env:        []string{"LANG=C.UTF-8", "NEW=1", "EMPTY=x"},
		Cmd:        strp(`["serve", "--port", "80"]`),
		WorkingDir: strp("/app"),
		User:       strp("1000:1000"),
		Labels:     map[string]string{"b": "2", "a": "changed"},
	}})
	require.Equal(t, []any{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "EMPTY=x", "NEW=1"}, cfg["Env"], "a variable is replaced where it stands")
	require.Equal(t, []any{"serve", "--port", "80"}, cfg["Cmd"])
	require.Nil(t, cfg["Entrypoint"])
	require.Equal(t, "/app", cfg["WorkingDir"])
	require.Equal(t, "1000:1000", cfg["User"])
	require.Equal(t, map[string]any{"a": "changed", "b": "2", "html": "<b>"}, cfg["Labels"])
	require.Equal(t, "SIGQUIT", cfg["StopSignal"])

	_, cfg = editedConfig(t, configChange{edits: ConfigEdits{Entrypoint: strp("exec /app/run $ARGS")}})
	require.Equal(t, []any{"/bin/bash", "-euc", "exec /app/run $ARGS"}, cfg["Entrypoint"], "shell form runs through the image's Shell")
	require.Nil(t, cfg["Cmd"], "a new entrypoint clears Cmd, as in a Dockerfile")

	_, cfg = editedConfig(t, configChange{edits: ConfigEdits{Entrypoint: strp(`["/app/run"]`), Cmd: strp("")}})
	require.Equal(t, []any{"/app/run"}, cfg["Entrypoint"])
	require.Nil(t, cfg["Cmd"])

	_, err := editConfig([]byte(dockerConfig), configChange{edits: ConfigEdits{Env: []string{"NOEQUALS"}}})
	require.ErrorContains(t, err, "NOEQUALS")
	_, err = editConfig([]byte(dockerConfig), configChange{edits: ConfigEdits{Cmd: strp(`["unterminated"`)}})
	require.ErrorContains(t, err, "JSON array")
	_, err = editConfig([]byte(`{"config": [1]`), configChange{})
	require.ErrorContains(t, err, "malformed")
}

func TestEditConfigSquash(t *testing.T) {
	top, cfg := editedConfig(t, configChange{squash: true, diffIDs: []digest.Digest{newDiffID}, history: historyEntry{CreatedBy: "imgmount commit --squash"}})
	var keys []string
	for k := range top {
		keys = append(keys, k)
	}
	require.ElementsMatch(t, []string{"architecture", "os", "config", "rootfs", "history", "created"}, keys)
	require.JSONEq(t, `{"type":"layers","diff_ids":["sha256:2222222222222222222222222222222222222222222222222222222222222222"]}`, string(top["rootfs"]))
	var hist []map[string]any
	require.NoError(t, json.Unmarshal(top["history"], &hist))
	require.Len(t, hist, 1)
	require.Equal(t, []any{"bash"}, cfg["Cmd"])
	require.Equal(t, map[string]any{"/data": map[string]any{}}, cfg["Volumes"])
}

func TestParseCommand(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{`["a", "b c"]`, []string{"a", "b c"}},
		{`  ["a"]  `, []string{"a"}},
		{`[]`, []string{}},
		{`echo "hi"; exit 1`, []string{"/bin/sh", "-c", `echo "hi"; exit 1`}},
		{``, nil},
		{`   `, nil},
	} {
		got, err := ParseCommand(c.in, nil)
		require.NoError(t, err, c.in)
		require.Equal(t, c.want, got, c.in)
	}
	_, err := ParseCommand(`[1, 2]`, nil)
	require.Error(t, err)
}
