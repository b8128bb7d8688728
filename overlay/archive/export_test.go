package archive

// Internals the black-box tests (package archive_test) check directly.
var (
	OneLine      = oneLine
	HostPlatform = hostPlatform
)

// MaxIndexDepth is how deep indexes may nest.
const MaxIndexDepth = maxIndexDepth
