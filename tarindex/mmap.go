package tarindex

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Mapping is a read-only mmap of a whole file.
type Mapping struct {
	Data []byte
}

// MapFile maps the whole file at path read-only. An empty file maps to an
// empty slice.
func MapFile(path string) (*Mapping, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() == 0 {
		return &Mapping{Data: []byte{}}, nil
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap %s: %w", path, err)
	}
	return &Mapping{Data: data}, nil
}

// Close unmaps the file. The Data slice must not be used afterwards.
func (m *Mapping) Close() error {
	if len(m.Data) == 0 {
		return nil
	}
	err := unix.Munmap(m.Data)
	m.Data = nil
	return err
}
