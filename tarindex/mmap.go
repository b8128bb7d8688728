package tarindex

import (
	"bytes"
	"fmt"
	"io"
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

// Reader reads the mapping. Forward scans through it (an index build, a
// layer's hash) give back the page-table entries of what they have passed
// (see dropBehind).
func (m *Mapping) Reader() *MappedReader {
	return &MappedReader{Reader: bytes.NewReader(m.Data), data: m.Data}
}

// MappedReader is a bytes.Reader over a Mapping that knows its bytes are a
// file's pages, which it may drop from the process's page tables.
type MappedReader struct {
	*bytes.Reader
	data []byte
}

// release drops the page-table entries of the whole pages in [from, to).
// The pages stay in the page cache: a later read faults them back in from
// memory. Only a file mapping may be released so; an anonymous one would
// read back as zeros.
func (r *MappedReader) release(from, to int64) {
	page := int64(os.Getpagesize())
	from = (from + page - 1) &^ (page - 1)
	to = min(to, int64(len(r.data))) &^ (page - 1)
	if to <= from {
		return
	}
	_ = unix.Madvise(r.data[from:to], unix.MADV_DONTNEED)
}

// dropEvery is how far a scan runs between two releases: small beside the
// index of even a small image, large enough that the calls cost nothing.
const dropEvery = 4 << 20

// dropBehind follows a forward scan of a MappedReader and releases what it
// has passed. Without it, indexing and hashing a tarball of a million
// small files touches every page of it, and all of them count into the
// mount's resident memory (1.3 KB per entry of such a layer) for as long
// as it runs, although nothing reads them again. A nil dropBehind (the
// scan of anything but a MappedReader) does nothing.
type dropBehind struct {
	r    *MappedReader
	from int64
}

// newDropBehind starts following a scan of r from offset from.
func newDropBehind(r io.ReaderAt, from int64) *dropBehind {
	m, ok := r.(*MappedReader)
	if !ok {
		return nil
	}
	return &dropBehind{r: m, from: from}
}

// passed says the scan has read everything before pos.
func (d *dropBehind) passed(pos int64) {
	if d == nil || pos-d.from < dropEvery {
		return
	}
	d.r.release(d.from, pos)
	d.from = pos
}

// done releases the rest of the scan, up to pos.
func (d *dropBehind) done(pos int64) {
	if d == nil {
		return
	}
	d.r.release(d.from, pos)
	d.from = pos
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
