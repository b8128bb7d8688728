package repack

import (
	"bytes"
	"errors"
	"os"
	"sync"
	"testing"

	"github.com/imgmount/imgmount/internal/progress"
	"github.com/imgmount/imgmount/tarindex"
	"github.com/stretchr/testify/require"
)

// recTasks records the tasks started through it.
type recTasks struct {
	mu    sync.Mutex
	tasks []*recTask
}

type recTask struct {
	name  string
	total int64
	added int64
	ended bool
	err   error
}

func (r *recTasks) Start(name string, total int64) progress.Task {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := &recTask{name: name, total: total}
	r.tasks = append(r.tasks, t)
	return t
}

func (t *recTask) Add(n int64)    { t.added += n }
func (t *recTask) Done(err error) { t.ended, t.err = true, err }

func (r *recTasks) names() []string {
	var ns []string
	for _, t := range r.tasks {
		ns = append(ns, t.name)
	}
	return ns
}

func TestExportReportsBytes(t *testing.T) {
	img, _, _ := simpleImage(t, "oci")
	u := smallUpper(t)
	var buf bytes.Buffer
	var rec recTasks
	_, err := Export(img, &buf, ExportOptions{Upper: u.Dir, TempDir: t.TempDir(), Tasks: &rec})
	require.NoError(t, err)
	require.Equal(t, []string{"exporting the root filesystem"}, rec.names())
	task := rec.tasks[0]
	require.True(t, task.ended)
	require.NoError(t, task.err)
	require.Equal(t, int64(buf.Len()), task.added, "every byte written is counted")
	require.Positive(t, task.total)
}

func TestCommitReportsBytes(t *testing.T) {
	img, _, _ := simpleImage(t, "docker25")
	u := smallUpper(t)
	var rec recTasks
	out, res := commitToFile(t, img, CommitOptions{Upper: u.Dir, Compression: tarindex.CompressionGzip, Tasks: &rec})
	require.Equal(t, []string{"writing the new layer from " + u.Dir, "writing the image"}, rec.names())
	for _, task := range rec.tasks {
		require.True(t, task.ended, task.name)
		require.NoError(t, task.err, task.name)
	}
	require.Equal(t, res.NewLayer.TarSize, rec.tasks[0].added, "the new layer counts its uncompressed tar")
	require.Zero(t, rec.tasks[0].total, "its size is not known before")
	st, err := os.Stat(out)
	require.NoError(t, err)
	require.Equal(t, st.Size(), rec.tasks[1].added)
	require.GreaterOrEqual(t, rec.tasks[1].total, st.Size()-64<<10, "the total is about the output")

	rec = recTasks{}
	commitToFile(t, img, CommitOptions{Upper: u.Dir, Squash: true, Tasks: &rec})
	require.Equal(t, []string{"writing the squashed layer", "writing the image"}, rec.names())
	require.Positive(t, rec.tasks[0].total)
}

// failingWriter fails every write.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestExportTaskFails(t *testing.T) {
	img, _, _ := simpleImage(t, "oci")
	var rec recTasks
	_, err := Export(img, failingWriter{}, ExportOptions{TempDir: t.TempDir(), Tasks: &rec})
	require.Error(t, err)
	require.Len(t, rec.tasks, 1)
	require.True(t, rec.tasks[0].ended)
	require.ErrorContains(t, rec.tasks[0].err, "disk on fire")
}
