// Package progress is how long work (indexing a compressed layer, writing
// a commit, a squash or an export) reports how far it has got, so that the
// command line can draw a bar per task on a terminal, print plain lines
// elsewhere, and relay both from a daemonized mount to its parent.
//
// The work side only counts bytes; rendering is the command line's
// business. A nil Tasks is valid and reports nothing (see Start).
package progress

// Tasks starts tasks. Implementations must be safe for concurrent use:
// layers are indexed in parallel.
type Tasks interface {
	// Start begins a task named name (e.g. "layer 3 (sha256:0123abcd,
	// 52 MB gzip)") that will process total bytes (0 if unknown).
	Start(name string, total int64) Task
}

// Task is one piece of long work. Add and Done are called from one
// goroutine at a time.
type Task interface {
	// Add records n more bytes processed.
	Add(n int64)
	// Done ends the task; err is nil on success.
	Done(err error)
}

// Start is ts.Start, or a task that reports nothing when ts is nil.
func Start(ts Tasks, name string, total int64) Task {
	if ts == nil {
		return nop{}
	}
	return ts.Start(name, total)
}

type nop struct{}

func (nop) Add(int64)  {}
func (nop) Done(error) {}
