// Package fusefs serves a union.Tree through FUSE (go-fuse's fs API).
//
// Nodes are created lazily: a go-fuse Inode exists only for what the kernel
// has looked up. Every node wraps one *union.Node and takes its attributes
// from the node's tar entry. Reads of file content go through
// union.Tree.Bytes: a slice of an uncompressed (or decompressed) layer's
// mapping is handed to the kernel without a copy; a sparse file, or a
// compressed layer served in place (through tarindex's span cache), is read
// into a buffer first. The tree never changes under the mount, so entries,
// attributes and file contents are cached by the kernel for a long time.
//
// Without an upper directory the mount is read-only: every operation that
// would change it answers EROFS. With one (Options.Writable), rw.go serves
// the mount instead: path-based nodes over cow.View, which records every
// change in the upper directory.
package fusefs

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imgmount/imgmount/overlay/cow"
	"github.com/imgmount/imgmount/overlay/union"
	"golang.org/x/sys/unix"
)

// Options says how to mount.
type Options struct {
	// MountOptions are raw -o options. allow_other, allow_root, fsname=,
	// subtype=, debug, noprefetch and ro are understood here; suid and dev
	// lift the nosuid and nodev defaults; anything else is passed to the
	// kernel (or fusermount3) as it is.
	MountOptions []string
	AllowOther   bool   // let other users in (fusermount3 needs user_allow_other in /etc/fuse.conf for non-root)
	FsName       string // shown as the mount's source in mount(8) and df; default "imgmount"
	Debug        bool   // log every FUSE request to stderr
	// AllowRoot lets root in besides the user who mounted (and nobody
	// else), as libfuse's allow_root does. It implies allow_other at the
	// kernel level; the other users are turned away here.
	AllowRoot bool
	// Writable, if set, makes the mount read-write: changes go to its
	// upper directory. MountInfo is what the root then answers for the
	// xattr MountInfoXattr.
	Writable  *cow.View
	MountInfo []byte
}

// Cache lifetimes: nothing under a read-only mount changes while it is
// mounted. A writable mount changes only through itself, and the kernel
// keeps its caches right for what it asks; the short lifetimes cover what
// it cannot see (copy-up giving a name a new inode, a hardlink's other
// names).
const (
	rwEntryTimeout = time.Second
	rwAttrTimeout  = time.Second

	entryTimeout    = time.Hour
	attrTimeout     = time.Hour
	negativeTimeout = time.Hour
	maxWrite        = 1 << 20
	maxReadAhead    = 1 << 20
	fsType          = "imgmount" // the mount shows as fuse.imgmount
)

// Mount mounts tree at mountpoint and starts serving it. It returns once the
// kernel has the mount (server.WaitMount done). The caller serves until
// server.Wait returns (unmounted) and may call server.Unmount.
//
// The process that serves the mount must not access the mountpoint itself.
func Mount(mountpoint string, tree *union.Tree, opts Options) (*fuse.Server, error) {
	if tree == nil || tree.Root == nil {
		return nil, errors.New("fusefs: no tree to mount")
	}
	mo, err := normalize(opts, opts.Writable != nil)
	if err != nil {
		return nil, err
	}
	if mountpoint, err = filepath.Abs(mountpoint); err != nil {
		return nil, err
	}
	euid := os.Geteuid()
	fsOpts := buildOptions(tree, mo, euid)
	ro := newRoot(tree, mo, uint32(euid))
	var root fs.InodeEmbedder = ro
	if opts.Writable == nil {
		if !mo.noPrefetch {
			ro.fsys.prefetch = newPrefetcher()
		}
	} else {
		root = &rwNode{fsys: &rwFS{cow: opts.Writable, allowRoot: mo.allowRoot, owner: uint32(euid), mountInfo: opts.MountInfo}}
		writableOptions(fsOpts, euid, mo.allowOther)
	}
	raw := fs.NewNodeFS(root, fsOpts)
	if opts.Writable == nil {
		raw = noOpendirFS{raw}
	}
	before := mountCount(mountpoint)
	server, err := fuse.NewServer(raw, mountpoint, &fsOpts.MountOptions)
	if err != nil {
		// NewServer can fail after the mount itself succeeded (the INIT
		// handshake): do not leave that dead mount behind.
		if mi, ok, _ := MountedAt(mountpoint); ok && mi.IsImgmount() && mountCount(mountpoint) > before {
			_ = UnmountLazy(mountpoint)
		}
		return nil, fmt.Errorf("mounting %s: %w", mountpoint, err)
	}
	go server.Serve()
	if p := ro.fsys.prefetch; p != nil {
		go func() {
			server.Wait()
			p.stop()
		}()
	}
	if err := server.WaitMount(); err != nil {
		// Mounted but not working: take it down again so that a failure
		// never leaves a mount behind.
		if uerr := server.Unmount(); uerr != nil {
			_ = UnmountLazy(mountpoint)
		}
		return nil, fmt.Errorf("mounting %s: %w", mountpoint, err)
	}
	tuneReadahead(mountpoint)
	return server, nil
}

// tuneReadahead raises the kernel's readahead for the mount to
// maxReadAhead. FUSE can only lower it from the default of 128 KiB at
// INIT, but root may raise it afterwards through the mount's BDI in sysfs,
// and with 1 MiB READs a big file's first read is about 1.6× faster. For
// anyone else the write fails and the default stays.
func tuneReadahead(mountpoint string) {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	_ = os.WriteFile(p, []byte(strconv.Itoa(maxReadAhead>>10)), 0)
}

// buildOptions turns opts into go-fuse options: long cache lifetimes, large
// reads, read-only, nosuid and nodev unless suid or dev is asked for,
// default_permissions, and a direct mount(2) when running as root
// (fusermount3 otherwise; go-fuse falls back to it if the direct mount fails).
func buildOptions(tree *union.Tree, mo mountOpts, euid int) *fs.Options {
	entry, attr, neg := entryTimeout, attrTimeout, negativeTimeout
	o := &fs.Options{
		EntryTimeout:    &entry,
		AttrTimeout:     &attr,
		NegativeTimeout: &neg,
		// Modes come from the image as they are: a mode of 0000 stays 0000.
		NullPermissions: true,
		RootStableAttr:  &fs.StableAttr{Ino: tree.Root.Ino},
	}
	o.MountOptions = fuse.MountOptions{
		AllowOther:   mo.allowOther,
		Options:      mo.options,
		MaxWrite:     maxWrite,
		MaxReadAhead: maxReadAhead,
		FsName:       mo.fsName,
		Name:         fsType,
		Debug:        mo.debug,
		// Symlinks never change under the mount.
		EnableSymlinkCaching: true,
		// Reads answer with slices of memory, never file descriptors:
		// go-fuse would otherwise try a splice for every READ first and
		// fail (a pipe resize, a header written into it, then writev).
		DisableSplice: true,
		DirectMount:   euid == 0,
		// mount(2) flags for the direct mount; the nosuid/nodev/suid/dev
		// words in Options adjust them as they do for fusermount3.
		DirectMountFlags: syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_RDONLY,
	}
	if mo.debug {
		o.MountOptions.Logger = log.New(os.Stderr, "", log.Lmicroseconds)
		o.Logger = o.MountOptions.Logger
	}
	return o
}

// writableOptions turns read-only mount options into those of a writable
// mount: short cache lifetimes, no read-only flag, and no symlink caching
// (a symlink can be replaced).
func writableOptions(o *fs.Options, euid int, allowOther bool) {
	entry, attr := rwEntryTimeout, rwAttrTimeout
	var neg time.Duration
	o.EntryTimeout, o.AttrTimeout, o.NegativeTimeout = &entry, &attr, &neg
	o.MountOptions.EnableSymlinkCaching = false
	o.MountOptions.DirectMountFlags &^= syscall.MS_RDONLY
	// Without root the mounting user owns every upper file, so the
	// kernel's checks against the recorded owners would lock them out of
	// what they can change anyway: when the mount is theirs alone they may
	// do anything in it. With allow_other the checks stay, for everyone.
	if euid != 0 && !allowOther {
		o.MountOptions.Options = slices.DeleteFunc(o.MountOptions.Options, func(s string) bool { return s == "default_permissions" })
	}
}

type mountOpts struct {
	options    []string
	allowOther bool
	allowRoot  bool
	fsName     string
	debug      bool
	noPrefetch bool // no content pushed into the kernel's cache (prefetch.go)
}

// normalize sorts the raw -o options into what go-fuse takes as fields and
// what goes to the kernel, and adds the safe defaults.
func normalize(opts Options, writable bool) (mountOpts, error) {
	mo := mountOpts{
		allowOther: opts.AllowOther || opts.AllowRoot,
		allowRoot:  opts.AllowRoot,
		fsName:     opts.FsName,
		debug:      opts.Debug,
	}
	suid, dev := false, false
	add := func(o string) {
		if !slices.Contains(mo.options, o) {
			mo.options = append(mo.options, o)
		}
	}
	for _, o := range opts.MountOptions {
		o = strings.TrimSpace(o)
		switch {
		case o == "":
		case o == "allow_other":
			mo.allowOther = true
		case o == "allow_root":
			mo.allowOther, mo.allowRoot = true, true
		case o == "debug":
			mo.debug = true
		case o == "noprefetch":
			mo.noPrefetch = true
		case o == "default_permissions", o == "nosuid", o == "nodev":
			// added below in any case
		case o == "ro":
			if writable {
				return mo, errors.New("mount option ro: an upper directory makes the mount writable; leave out one or the other")
			}
		case o == "rw":
			if !writable {
				return mo, errors.New("mount option rw: a writable mount needs an upper directory for the changes (--upper DIR)")
			}
		case o == "suid":
			suid = true
			add(o)
		case o == "dev":
			dev = true
			add(o)
		case strings.HasPrefix(o, "fsname="):
			mo.fsName = strings.TrimPrefix(o, "fsname=")
		case strings.HasPrefix(o, "subtype="):
			// The type is always fuse.imgmount: tools look for it.
		case strings.HasPrefix(o, "max_read="):
			// go-fuse sets max_read from MaxWrite.
		default:
			add(o)
		}
	}
	if !writable {
		add("ro")
	}
	add("default_permissions")
	if !suid {
		add("nosuid")
	}
	if !dev {
		add("nodev")
	}
	if mo.fsName == "" {
		mo.fsName = fsType
	}
	return mo, nil
}

// mountCount is how many mounts are stacked at path.
func mountCount(path string) int {
	ms, _ := Mounts()
	n := 0
	for _, m := range ms {
		if m.Mountpoint == path {
			n++
		}
	}
	return n
}
