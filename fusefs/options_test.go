package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/union"
	"github.com/stretchr/testify/require"
)

func TestNormalizeDefaults(t *testing.T) {
	mo, err := normalize(Options{}, false)
	require.NoError(t, err)
	require.Equal(t, []string{"ro", "default_permissions", "nosuid", "nodev"}, mo.options)
	require.Equal(t, "imgmount", mo.fsName)
	require.False(t, mo.allowOther)
	require.False(t, mo.debug)
}

func TestNormalizeOptions(t *testing.T) {
	mo, err := normalize(Options{
		MountOptions: []string{"allow_other", "fsname=imgmount:/x.tar", "suid", "noatime", "ro", "nodev", "debug", "subtype=foo", "max_read=4096", "noatime", "noprefetch", " "},
		FsName:       "ignored",
	}, false)
	require.NoError(t, err)
	require.Equal(t, []string{"suid", "noatime", "ro", "default_permissions", "nodev"}, mo.options)
	require.Equal(t, "imgmount:/x.tar", mo.fsName)
	require.True(t, mo.allowOther)
	require.True(t, mo.debug)
	require.True(t, mo.noPrefetch)
	require.False(t, mo.allowRoot)

	mo, err = normalize(Options{MountOptions: []string{"allow_root", "dev"}}, false)
	require.NoError(t, err)
	require.True(t, mo.allowOther)
	require.True(t, mo.allowRoot)
	require.Equal(t, []string{"dev", "ro", "default_permissions", "nosuid"}, mo.options)

	mo, err = normalize(Options{AllowRoot: true, FsName: "imgmount:/a.tar"}, false)
	require.NoError(t, err)
	require.True(t, mo.allowOther)
	require.Equal(t, "imgmount:/a.tar", mo.fsName)

	_, err = normalize(Options{MountOptions: []string{"rw"}}, false)
	require.ErrorContains(t, err, "--upper")
}

func TestBuildOptions(t *testing.T) {
	tree, err := union.BuildUnion(fixtureImage(t))
	require.NoError(t, err)
	mo, err := normalize(Options{AllowOther: true, FsName: "imgmount:/x.tar"}, false)
	require.NoError(t, err)
	o := buildOptions(tree, mo, 0)
	require.Equal(t, entryTimeout, *o.EntryTimeout)
	require.Equal(t, attrTimeout, *o.AttrTimeout)
	require.Equal(t, negativeTimeout, *o.NegativeTimeout)
	require.True(t, o.NullPermissions)
	require.Equal(t, tree.Root.Ino, o.RootStableAttr.Ino)
	m := o.MountOptions
	require.True(t, m.AllowOther)
	require.Equal(t, 1<<20, m.MaxWrite)
	require.Equal(t, 1<<20, m.MaxReadAhead)
	require.Equal(t, "imgmount", m.Name)
	require.Equal(t, "imgmount:/x.tar", m.FsName)
	require.True(t, m.DirectMount, "direct mount as root")
	require.Equal(t, uintptr(syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_RDONLY), m.DirectMountFlags)
	require.False(t, buildOptions(tree, mo, 1000).MountOptions.DirectMount, "fusermount3 otherwise")
}

func TestToErrno(t *testing.T) {
	for _, c := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{syscall.ENOENT, syscall.ENOENT},
		{fmt.Errorf("reading: %w", syscall.ENOSPC), syscall.ENOSPC},
		{&os.PathError{Op: "open", Path: "/x", Err: syscall.EACCES}, syscall.EACCES},
		{fmt.Errorf("a: %w", fmt.Errorf("b: %w", fs.ErrNotExist)), syscall.ENOENT},
		{fmt.Errorf("x: %w", fs.ErrPermission), syscall.EACCES},
		{fmt.Errorf("x: %w", fs.ErrExist), syscall.EEXIST},
		{fmt.Errorf("layer 3: %w", io.ErrUnexpectedEOF), syscall.EIO},
		{fmt.Errorf("layer 3: %w", archive.ErrCorruptLayer), syscall.EIO},
		{errors.New("something else"), syscall.EIO},
		{syscall.Errno(0), syscall.EIO},
	} {
		require.Equal(t, c.want, toErrno(c.err), "%v", c.err)
	}
}

func TestParseMountinfo(t *testing.T) {
	in := `22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
90 22 0:50 / /mnt/with\040space rw,nosuid,nodev,relatime shared:60 - fuse.imgmount imgmount:/srv/app\040x.tar ro,user_id=0,group_id=0
91 22 0:51 / /mnt/sshfs rw,nosuid,nodev - fuse.sshfs host: rw
garbage
`
	ms := parseMountinfo([]byte(in))
	require.Len(t, ms, 3)
	require.Equal(t, "/mnt/with space", ms[1].Mountpoint)
	require.Equal(t, "imgmount:/srv/app x.tar", ms[1].Source)
	require.Equal(t, "rw,nosuid,nodev,relatime", ms[1].Options)
	require.True(t, ms[1].IsImgmount())
	require.True(t, ms[1].IsFUSE())
	require.False(t, ms[2].IsImgmount())
	require.True(t, ms[2].IsFUSE())
	require.False(t, ms[0].IsFUSE())
}

func TestAllowRootDenies(t *testing.T) {
	tree, err := union.BuildUnion(fixtureImage(t))
	require.NoError(t, err)
	as := func(uid uint32) context.Context {
		return &fuse.Context{Caller: fuse.Caller{Owner: fuse.Owner{Uid: uid}}}
	}
	open := newRoot(tree, mountOpts{}, 1000)
	require.False(t, open.fsys.denied(as(4242)))
	r := newRoot(tree, mountOpts{allowRoot: true, allowOther: true}, 1000)
	require.False(t, r.fsys.denied(as(0)))
	require.False(t, r.fsys.denied(as(1000)))
	require.True(t, r.fsys.denied(as(4242)))
	var out fuse.AttrOut
	require.Equal(t, syscall.EACCES, r.Getattr(as(4242), nil, &out))
	require.Equal(t, syscall.Errno(0), r.Getattr(as(1000), nil, &out))
}
