package archive

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/imgmount/imgmount/tarindex"
	"golang.org/x/sys/unix"
)

// dirSource is an image laid out in a directory rather than a tarball: an
// OCI image layout (skopeo copy ... oci:DIR:TAG) or an extracted docker
// save (tar -xf image.tar -C DIR). A member is the regular file of that
// name inside the directory, mapped whole on its first lookup and unmapped
// when the archive closes; its cache identity is the file's own.
type dirSource struct {
	path    string   // as the caller gave it; used in messages
	abs     string   // absolute path, for the members' identities
	root    *os.Root // lookups never leave it
	closers *cleanup // the archive's: members' unmaps join it

	mu      sync.Mutex
	members map[string]blobRef // cleaned name → mapped member
}

// openDir opens the directory at p (abs, its absolute path; fi, its stat)
// as an archive.
func openDir(p, abs string, fi os.FileInfo) (*archive, error) {
	root, err := os.OpenRoot(p)
	if err != nil {
		return nil, err
	}
	ar := &archive{path: p, ident: fileIdentity(abs, fi)}
	ar.closers.add(root.Close)
	ar.dir = &dirSource{path: p, abs: abs, root: root, closers: &ar.closers, members: map[string]blobRef{}}
	return ar, nil
}

// lookup maps the regular file called name (already cleaned; orig is the
// name as asked, for messages). Symlinks are followed inside the directory
// only: one that is absolute or climbs out of it is refused (os.Root), as
// the tarball's lookup refuses to leave the tarball. The error wraps
// errMemberAbsent when there is no such file.
func (d *dirSource) lookup(orig, name string) (blobRef, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if b, ok := d.members[name]; ok {
		return b, nil
	}
	b, err := d.mapMember(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return blobRef{}, &sentinelError{sentinel: errMemberAbsent, err: fmt.Errorf("%s: not in the directory", orig)}
		}
		var pe *fs.PathError
		if errors.As(err, &pe) && pe.Err.Error() == "path escapes from parent" { // os.Root's errPathEscapes
			return blobRef{}, fmt.Errorf("member %s: a symlink leads out of the directory, which imgmount does not follow: %w", name, err)
		}
		return blobRef{}, fmt.Errorf("member %s: %w", name, err)
	}
	d.members[name] = b
	return b, nil
}

// mapMember opens and maps the member name.
func (d *dirSource) mapMember(name string) (blobRef, error) {
	// Stat first: opening a fifo or a device could block or have effects.
	fi, err := d.root.Stat(name)
	if err != nil {
		return blobRef{}, err
	}
	if !fi.Mode().IsRegular() {
		return blobRef{}, fmt.Errorf("is a %s, not a file", typeName(fi.Mode()))
	}
	f, err := d.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return blobRef{}, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return blobRef{}, err
	}
	if !fi.Mode().IsRegular() {
		return blobRef{}, fmt.Errorf("is a %s, not a file", typeName(fi.Mode()))
	}
	m := &tarindex.Mapping{Data: []byte{}}
	if fi.Size() > 0 {
		data, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return blobRef{}, fmt.Errorf("mmap: %w", err)
		}
		m.Data = data
	}
	d.closers.add(m.Close)
	ident := fileIdentity(filepath.Join(d.abs, filepath.FromSlash(name)), fi)
	return blobRef{name: name, src: m.Reader(), data: m.Data, ident: ident, off: 0, size: int64(len(m.Data))}, nil
}

// typeName names a non-regular file's type in messages.
func typeName(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// hint names a subdirectory that holds the image, for the not-an-image
// message: the layout copied one directory down.
func (d *dirSource) hint() string {
	f, err := d.root.Open(".")
	if err != nil {
		return ""
	}
	defer f.Close()
	des, _ := f.ReadDir(1000)
	for _, de := range des {
		if !de.IsDir() {
			continue
		}
		for _, base := range []string{"index.json", "manifest.json"} {
			p := path.Join(de.Name(), base)
			if fi, err := d.root.Stat(p); err == nil && fi.Mode().IsRegular() {
				return fmt.Sprintf(" (it has %s: is the image one directory down?)", p)
			}
		}
	}
	return ""
}
