package imagetest

import (
	"runtime"
	"time"
)

// Watchdog crashes the process, printing every goroutine's stack, if the
// returned stop function is not called within d. Fuzz targets use it so
// that an input that hangs the code is reported (and saved) as a crasher
// instead of stalling the fuzzer: `defer imagetest.Watchdog(10*time.Second)()`.
func Watchdog(d time.Duration) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
		case <-time.After(d):
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			panic("no answer after " + d.String() + ":\n" + string(buf[:n]))
		}
	}()
	return func() { close(done) }
}
