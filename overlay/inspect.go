package overlay

// Report is what `imgmount inspect` prints. Its JSON form is a stable,
// documented interface for scripts: fields are only ever added.
type Report struct {
	Archive string        `json:"archive"`
	Format  Format        `json:"format"`
	Images  []ImageRef    `json:"images"`
	Image   ImageRef      `json:"image"` // the chosen one
	Config  ConfigSummary `json:"config"`
	Layers  []LayerReport `json:"layers"`
}

// ConfigSummary is the runtime part of the image config.
type ConfigSummary struct {
	OS           string            `json:"os"`
	Architecture string            `json:"architecture"`
	Variant      string            `json:"variant,omitempty"`
	Env          []string          `json:"env"`
	Entrypoint   []string          `json:"entrypoint"`
	Cmd          []string          `json:"cmd"`
	WorkingDir   string            `json:"working_dir"`
	User         string            `json:"user"`
	ExposedPorts []string          `json:"exposed_ports"`
	Labels       map[string]string `json:"labels"`
}

// LayerReport describes one layer.
type LayerReport struct {
	Index       int    `json:"index"`
	DiffID      string `json:"diff_id"`
	Digest      string `json:"digest"`
	MediaType   string `json:"media_type"`
	Compression string `json:"compression"`
	StoredSize  int64  `json:"stored_size"`
	Size        int64  `json:"size"`
	Entries     int    `json:"entries"`
	CreatedBy   string `json:"created_by"`
	HiddenBytes int64  `json:"hidden_bytes"` // content overwritten or deleted by later layers
}

// Inspect summarises img; union must be BuildUnion(img) (it supplies the
// hidden bytes per layer).
func Inspect(img *Image, union *Tree) Report {
	// TODO(archive helper)
	return Report{}
}
