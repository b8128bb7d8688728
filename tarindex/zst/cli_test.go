package zst

import (
	"bytes"
	"os/exec"
	"testing"
)

// TestCommandLine indexes what the reference tools write: zstd (one
// frame, with or without checksum and size), pzstd (frames of a fixed
// input size, each after a skippable frame holding its compressed size),
// and zstd outputs concatenated. Skipped where they are not installed.
func TestCommandLine(t *testing.T) {
	text := textData(9<<20, 12)
	run := func(t *testing.T, name string, args ...string) []byte {
		t.Helper()
		if _, err := exec.LookPath(name); err != nil {
			t.Skipf("%s not installed", name)
		}
		cmd := exec.Command(name, args...)
		cmd.Stdin = bytes.NewReader(text)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %v: %v: %s", name, args, err, stderr.Bytes())
		}
		return out
	}
	cases := []struct {
		name   string
		cmd    string
		args   []string
		frames int // -1: more than one
	}{
		{"zstd", "zstd", []string{"-q", "-c", "-3"}, 1},
		{"zstd no check, no size", "zstd", []string{"-q", "-c", "-1", "--no-check", "--no-content-size"}, 1},
		{"zstd -T2", "zstd", []string{"-q", "-c", "-T2"}, 1},
		{"pzstd", "pzstd", []string{"-q", "-c", "-1", "-p", "2"}, -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := run(t, c.cmd, c.args...)
			s := stream{src: src, data: text, frames: c.frames, max: -1}
			if c.frames == 1 {
				s.max = int64(len(text))
			}
			ix, out := build(t, src)
			if !bytes.Equal(out, text) {
				t.Fatal("output differs")
			}
			if c.frames < 0 && ix.Frames() < 2 {
				t.Fatalf("%d frames", ix.Frames())
			}
			checkIndex(t, ix, s)
			t.Logf("%d frames, the largest %d bytes, %d seek points", ix.Frames(), ix.MaxFrame(), ix.SeekPoints())
		})
	}
	t.Run("concatenated", func(t *testing.T) {
		one := run(t, "zstd", "-q", "-c", "-1")
		src := append(bytes.Clone(one), one...)
		ix, out := build(t, src)
		if !bytes.Equal(out, append(bytes.Clone(text), text...)) || ix.Frames() != 2 || ix.MaxFrame() != int64(len(text)) {
			t.Fatalf("%d frames, %d bytes", ix.Frames(), len(out))
		}
	})
}
