package repack

import (
	"io"

	"github.com/imgmount/imgmount/internal/progress"
)

// taskWriter counts the bytes written through it into a progress task.
type taskWriter struct {
	w io.Writer
	t progress.Task
}

func (tw taskWriter) Write(p []byte) (int, error) {
	n, err := tw.w.Write(p)
	tw.t.Add(int64(n))
	return n, err
}

// withTask runs write on w counted into a task of ts (nil: none) named
// name, of about total bytes (0: unknown), and ends the task with
// write's error.
func withTask(ts progress.Tasks, name string, total int64, w io.Writer, write func(io.Writer) error) error {
	t := progress.Start(ts, name, total)
	err := write(taskWriter{w: w, t: t})
	t.Done(err)
	return err
}
