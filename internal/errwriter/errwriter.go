// Package errwriter is an io.Writer that keeps the first write error, so
// that code printing many lines (inspect's report, diff's changes) stays
// flat and checks once at the end. It imports nothing of imgmount's, so
// any package may use it.
package errwriter

import (
	"fmt"
	"io"
)

// Writer writes to W until a write fails; from then on every write
// returns that error, which Err holds.
type Writer struct {
	W   io.Writer
	Err error
}

func (e *Writer) Write(p []byte) (int, error) {
	if e.Err != nil {
		return 0, e.Err
	}
	n, err := e.W.Write(p)
	e.Err = err
	return n, err
}

// Printf formats to the writer (fmt.Fprintf); see Err for its error.
func (e *Writer) Printf(format string, a ...any) {
	fmt.Fprintf(e, format, a...)
}
