package cow

import (
	"io/fs"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzParseStatOverride reads arbitrary StatXattr values, as a hostile or
// damaged upper directory holds them: refused, or read into a value that
// formats back to what parses the same.
func FuzzParseStatOverride(f *testing.F) {
	for _, v := range []string{"0:0:4755", "1000:1000:0750", "0:0:0666:char:1:3", "0:0:0644:block:8:0", "0:0:0777:symlink", "5:5:1777:dir", ":::", "0:0:99999"} {
		f.Add(v, uint8(0))
		f.Add(v, uint8(1))
	}
	// The types a file in the upper directory can have.
	types := []fs.FileMode{0, fs.ModeDir, fs.ModeSymlink, fs.ModeNamedPipe, fs.ModeSocket, fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice}
	f.Fuzz(func(t *testing.T, v string, typ uint8) {
		fileType := types[int(typ)%len(types)]
		o, err := ParseStatOverride(v, fileType)
		if err != nil {
			return
		}
		back, err := ParseStatOverride(FormatStatOverride(o), fileType)
		require.NoError(t, err, "%q formats as %q", v, FormatStatOverride(o))
		require.Equal(t, o, back)
	})
}
