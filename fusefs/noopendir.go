package fusefs

import "github.com/hanwen/go-fuse/v2/fuse"

// noOpendirFS serves a read-only mount's directories without OPENDIR and
// RELEASEDIR. Answering OPENDIR with ENOSYS puts the kernel in FUSE's
// no-opendir mode: it stops sending both for the whole mount, one round
// trip fewer for every directory listed (a quarter of those `find -ls`
// makes). go-fuse's node API reads directories through a handle, so a
// READDIR(PLUS) that comes without one opens a handle for the length of
// that call; dirHandle offsets are exact positions, so the fresh handle
// seeks to where the kernel asks and nothing a handle would have kept is
// lost.
type noOpendirFS struct {
	fuse.RawFileSystem
}

func (w noOpendirFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fuse.ENOSYS
}

func (w noOpendirFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return w.withHandle(cancel, in, func(in *fuse.ReadIn) fuse.Status {
		return w.RawFileSystem.ReadDir(cancel, in, out)
	})
}

func (w noOpendirFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return w.withHandle(cancel, in, func(in *fuse.ReadIn) fuse.Status {
		return w.RawFileSystem.ReadDirPlus(cancel, in, out)
	})
}

func (w noOpendirFS) withHandle(cancel <-chan struct{}, in *fuse.ReadIn, read func(*fuse.ReadIn) fuse.Status) fuse.Status {
	if in.Fh != 0 {
		return read(in)
	}
	var opened fuse.OpenOut
	if st := w.RawFileSystem.OpenDir(cancel, &fuse.OpenIn{InHeader: in.InHeader, Flags: in.Flags}, &opened); !st.Ok() {
		return st
	}
	defer w.RawFileSystem.ReleaseDir(&fuse.ReleaseIn{InHeader: in.InHeader, Fh: opened.Fh})
	withFh := *in
	withFh.Fh = opened.Fh
	return read(&withFh)
}
