package repack

import (
	"context"
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
// write's error. Writes fail once ctx is done (see cancellable).
func withTask(ctx context.Context, ts progress.Tasks, name string, total int64, w io.Writer, write func(io.Writer) error) error {
	t := progress.Start(ts, name, total)
	err := write(taskWriter{w: cancellable(ctx, w), t: t})
	t.Done(err)
	return err
}

// cancellable is w failing every write with ctx's error once ctx is done
// (w itself when ctx is nil): the writes are where a cancelled commit,
// export, thin or complete stops, returning through its cleanup.
func cancellable(ctx context.Context, w io.Writer) io.Writer {
	if ctx == nil {
		return w
	}
	return ctxWriter{ctx: ctx, w: w}
}

type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (cw ctxWriter) Write(p []byte) (int, error) {
	if err := cw.ctx.Err(); err != nil {
		return 0, err
	}
	return cw.w.Write(p)
}

// ctxErr is ctx's error, nil for a nil ctx.
func ctxErr(ctx context.Context) error {
	if ctx == nil {
		return nil
	}
	return ctx.Err()
}
