package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/imgmount/imgmount/fusefs"
	"github.com/imgmount/imgmount/overlay/cow"
	"golang.org/x/sys/unix"
)

// mountState describes a writable mount: the root of the mount answers it
// (as JSON) for the xattr fusefs.MountInfoXattr, so that
// `imgmount commit MOUNTPOINT` can open the same image and upper directory.
type mountState struct {
	Image    string   `json:"image"`
	Upper    string   `json:"upper"`
	Ref      string   `json:"ref,omitempty"`
	Platform string   `json:"platform,omitempty"`
	Bases    []string `json:"bases,omitempty"`
	CacheDir string   `json:"cache_dir"`
}

// encodeMountState gives the JSON a writable mount of cfg answers.
func encodeMountState(cfg *config) []byte {
	b, _ := json.Marshal(mountState{
		Image: cfg.image, Upper: cfg.upper, Ref: cfg.ref, Platform: cfg.platform,
		Bases: cfg.bases, CacheDir: cfg.cacheDir,
	})
	return b
}

// decodeMountState reads what a writable mount answered, checking that it
// names an image and an upper directory by absolute paths.
func decodeMountState(b []byte) (*mountState, error) {
	var st mountState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("malformed %s value: %w", fusefs.MountInfoXattr, err)
	}
	for _, f := range []struct{ name, val string }{{"image", st.Image}, {"upper", st.Upper}} {
		if !filepath.IsAbs(f.val) {
			return nil, fmt.Errorf("%s value: %q %q is not an absolute path", fusefs.MountInfoXattr, f.name, f.val)
		}
	}
	if st.CacheDir != "" && !filepath.IsAbs(st.CacheDir) {
		return nil, fmt.Errorf("%s value: \"cache_dir\" %q is not an absolute path", fusefs.MountInfoXattr, st.CacheDir)
	}
	return &st, nil
}

// readMountState asks the directory dir what writable mount it is. ok is
// false when it answers nothing: not an imgmount mount, or a read-only one.
func readMountState(dir string) (st *mountState, ok bool, err error) {
	v, err := lgetxattrAll(dir, fusefs.MountInfoXattr)
	switch {
	case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("%s: asking for %s: %w", dir, fusefs.MountInfoXattr, err)
	}
	st, err = decodeMountState(v)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", dir, err)
	}
	return st, true, nil
}

func lgetxattrAll(path, name string) ([]byte, error) {
	for size := 4096; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// resolveSource works out what a commit or export reads. A directory
// source must be a live writable mount: its state gives the image, upper
// directory and image flags, and its pending writes are flushed (syncfs)
// before the upper directory is read. A file source is the image tarball.
func resolveSource(cfg *config, r *repackRun) error {
	rc := cfg.repack
	fi, err := os.Stat(rc.source)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		st, ok, err := readMountState(rc.source)
		if err != nil {
			return err
		}
		if ok {
			return useMount(cfg, r, st)
		}
		if !isImageDir(rc.source) {
			return fmt.Errorf("%s is a directory but not a writable imgmount mount (it does not answer %s), nor an image (no index.json or manifest.json): give the image (tarball or directory) and --upper DIR, or the mountpoint of an 'imgmount --upper DIR IMAGE MOUNTPOINT' mount", rc.source, fusefs.MountInfoXattr)
		}
	}
	cfg.image = rc.source
	if cfg.upper != "" && cow.UpperInUse(cfg.upper) {
		return withStatus(exitUpperInUse, fmt.Errorf("upper directory %s is in use by a writable mount: commit through its mountpoint (imgmount commit MOUNTPOINT -o OUT.tar), which flushes the mount first", cfg.upper))
	}
	return nil
}

// isImageDir tells whether dir holds an image: an OCI layout or an
// extracted docker save.
func isImageDir(dir string) bool {
	for _, name := range []string{"index.json", "manifest.json"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}

// useMount takes the image and upper directory from the writable mount
// st describes, and flushes it.
func useMount(cfg *config, r *repackRun, st *mountState) error {
	rc := cfg.repack
	if len(rc.explicit) > 0 {
		return usagef("%s is a writable mount, which already says its image and upper directory: leave out %s", rc.source, strings.Join(rc.explicit, ", "))
	}
	cfg.image, cfg.upper, cfg.ref, cfg.platform, cfg.bases = st.Image, st.Upper, st.Ref, st.Platform, st.Bases
	if st.CacheDir != "" {
		cfg.cacheDir = st.CacheDir
	}
	r.progress(fmt.Sprintf("%s: flushing the mount's pending writes, then reading its upper directory %s", rc.source, st.Upper))
	return syncMount(rc.source)
}

// syncMount flushes the writes the kernel still holds for the mount at
// dir into its upper directory.
func syncMount(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("flushing the mount: %w", err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("flushing the mount %s (syncfs): %w", dir, err)
	}
	return nil
}
