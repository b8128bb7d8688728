package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/stretchr/testify/require"
)

func TestExitStatus(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	_, missingMnt := checkMountpoint(filepath.Join(dir, "missing"))
	_, fileMnt := checkMountpoint(file)
	_, procMnt := checkMountpoint("/proc")
	_, usage := parseArgs([]string{"--bogus"}, homeEnv)
	_, commitUsage := parseArgs([]string{"commit", "/i.tar"}, homeEnv)

	for _, c := range []struct {
		name string
		err  error
		want int
	}{
		{"no error", nil, exitOK},
		{"plain", errors.New("boom"), exitError},
		{"missing file", &os.PathError{Op: "open", Path: "/x.tar", Err: syscall.ENOENT}, exitError},
		{"usage", usage, exitUsage},
		{"commit usage", commitUsage, exitUsage},
		{"usage, wrapped", fmt.Errorf("x: %w", usagef("y")), exitUsage},
		{"not an image", archive.Errorf(archive.ErrNotImage, "/x.tar: empty file"), exitBadImage},
		{"corrupt layer", archive.Errorf(archive.ErrCorruptLayer, "layer 1: truncated"), exitBadImage},
		{"corrupt layer, wrapped", fmt.Errorf("/x.tar: %w", archive.Errorf(archive.ErrCorruptLayer, "layer 1")), exitBadImage},
		{"diff_id", archive.Errorf(archive.ErrDiffIDMismatch, "layer 0"), exitBadImage},
		{"no such image", archive.Errorf(archive.ErrNoSuchImage, "no image matches"), exitBadImage},
		{"ambiguous", archive.Errorf(archive.ErrAmbiguous, "2 images"), exitBadImage},
		{"with %w", fmt.Errorf("x: %w", archive.ErrNotImage), exitBadImage},
		{"layer missing", archive.Errorf(archive.ErrLayerMissing, "thin"), exitLayerMissing},
		{"layer missing, joined", errors.Join(errors.New("a"), archive.Errorf(archive.ErrLayerMissing, "thin")), exitLayerMissing},
		{"mountpoint missing", missingMnt, exitMountpoint},
		{"mountpoint a file", fileMnt, exitMountpoint},
		{"mountpoint mounted", procMnt, exitMountpoint},
		{"mountpoint, wrapped", fmt.Errorf("x: %w", fileMnt), exitMountpoint},
		{"upper in use", withStatus(exitUpperInUse, errors.New("in use")), exitUpperInUse},
		{"reported by the child", withStatus(exitLayerMissing, errors.New("text")), exitLayerMissing},
	} {
		require.Equal(t, c.want, exitStatus(c.err), "%s: %v", c.name, c.err)
	}
	require.NoError(t, withStatus(exitMountpoint, nil))
	require.Equal(t, "in use", withStatus(exitUpperInUse, errors.New("in use")).Error(), "the message as it is")
}

func TestExitStatusesListed(t *testing.T) {
	for i, s := range exitStatuses {
		require.Equal(t, i, s.status, "exitStatuses in order, without gaps")
		for _, l := range strings.Split(s.text, "\n") {
			require.LessOrEqual(t, len(l)+5, 80, "status %d: line too long: %q", s.status, l)
		}
	}
	require.Len(t, exitStatuses, exitTooLarge+1, "every status is listed")

	var out bytes.Buffer
	require.Equal(t, exitOK, run([]string{"--help"}, &out, &out))
	require.Contains(t, out.String(), "Exit status:\n  0  success\n  1  ")
	require.Contains(t, out.String(), "\n  6  the upper directory is in use")
}

func TestFailHint(t *testing.T) {
	var out, errb bytes.Buffer
	require.Equal(t, exitUsage, run([]string{"commit", "--bogus"}, &out, &errb))
	require.Equal(t, "imgmount: commit: unknown flag: --bogus\nTry 'imgmount commit --help' for more information.\n", errb.String())

	errb.Reset()
	require.Equal(t, exitUsage, run([]string{"inspect"}, &out, &errb))
	require.Contains(t, errb.String(), "Try 'imgmount inspect --help'")

	errb.Reset()
	require.Equal(t, exitUsage, run([]string{"/i.tar"}, &out, &errb))
	require.Contains(t, errb.String(), "Try 'imgmount --help'")

	errb.Reset()
	require.Equal(t, exitMountpoint, fail(&errb, withStatus(exitMountpoint, errors.New("/m is not a directory"))))
	require.Equal(t, "imgmount: /m is not a directory\n", errb.String(), "no hint but after a usage error")
}

func TestRunMountBadMountpoint(t *testing.T) {
	var out, errb bytes.Buffer
	dir := t.TempDir()
	mnt := filepath.Join(dir, "missing")
	code := run([]string{"-f", "--cache-dir", dir, filepath.Join(dir, "i.tar"), mnt}, &out, &errb)
	require.Equal(t, exitMountpoint, code, errb.String())
	require.Contains(t, errb.String(), "does not exist")
}

func TestChildExitStatus(t *testing.T) {
	require.Equal(t, exitLayerMissing, childExitStatus(exec.Command("sh", "-c", "exit 4").Run()))
	require.Equal(t, exitError, childExitStatus(exec.Command("sh", "-c", "exit 0").Run()), "an error reported, yet exit 0")
	require.Equal(t, exitError, childExitStatus(exec.Command("sh", "-c", "kill -9 $$").Run()), "killed")
	require.Equal(t, exitError, childExitStatus(errors.New("wait failed")))
}

func TestUnlessSignalled(t *testing.T) {
	sigc := make(chan os.Signal, 1)
	want := &mountSource{mnt: "/m"}
	src, err := unlessSignalled(sigc, func() (*mountSource, error) { return want, nil }, (*mountSource).close, interruptedBeforeMount)
	require.NoError(t, err)
	require.Same(t, want, src)

	_, err = unlessSignalled(sigc, func() (*mountSource, error) { return nil, errors.New("bad image") }, (*mountSource).close, interruptedBeforeMount)
	require.EqualError(t, err, "bad image")

	// A signal while preparing: the error at once, not when it ends.
	release := make(chan struct{})
	defer close(release)
	sigc <- syscall.SIGINT
	start := time.Now()
	_, err = unlessSignalled(sigc, func() (*mountSource, error) {
		<-release
		return nil, errors.New("too late")
	}, (*mountSource).close, interruptedBeforeMount)
	require.EqualError(t, err, "interrupted by SIGINT before mounting; nothing was mounted")
	require.Equal(t, exitError, exitStatus(err))
	require.Less(t, time.Since(start), 5*time.Second)
}
