package main

import (
	"bytes"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func helpOf(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	require.Equal(t, exitOK, run(args, &out, &errb), "%q: %s", args, errb.String())
	require.Empty(t, errb.String())
	for i, line := range strings.Split(out.String(), "\n") {
		require.LessOrEqual(t, len([]rune(line)), 80, "%q: line %d too long: %q", args, i+1, line)
		require.Equal(t, strings.TrimRight(line, " "), line, "%q: line %d ends in spaces", args, i+1)
	}
	require.NotContains(t, out.String(), "{{")
	return out.String()
}

// Every command has help of its own, and every help is of a command.
func TestHelpCommands(t *testing.T) {
	var parsed, helped []string
	for name := range commands {
		parsed = append(parsed, name)
	}
	for _, c := range helpCommands {
		if c.name != "" {
			helped = append(helped, c.name)
		}
	}
	sort.Strings(parsed)
	sort.Strings(helped)
	require.Equal(t, parsed, helped)
	require.NotNil(t, findHelpCommand(""), "mounting has its sections")
}

func TestParseCommandHelp(t *testing.T) {
	for _, name := range []string{"inspect", "commit", "export"} {
		for _, h := range []string{"--help", "-h"} {
			cfg := parseOK(t, name, h)
			require.Equal(t, modeHelp, cfg.mode)
			require.Equal(t, name, cfg.helpFor)
			// Help wins over missing or extra arguments, as for mounting.
			cfg = parseOK(t, name, "a", "b", "c", h)
			require.Equal(t, modeHelp, cfg.mode)
			require.Equal(t, name, cfg.helpFor)
		}
	}
	require.Equal(t, "", parseOK(t, "--help").helpFor)
	require.Equal(t, "", parseOK(t, "-h", "inspect").helpFor, "the overview: inspect is IMAGE here")
}

func TestCommandHelp(t *testing.T) {
	overview := helpOf(t, "--help")
	for _, c := range []struct {
		name    string
		has     []string // besides the command's usage line
		hasNot  []string
		minimum int // lines
	}{
		{"inspect",
			[]string{"--json", "--image REF         the image to use when", "--platform OS/ARCH[/VARIANT]\n", "--base BASE.tar", "--cache-dir DIR     where saved", "imgmount inspect --json app.tar"},
			[]string{"--layers", "allow_other", "--squash", "--output", "as for mounting", "imgmount commit", "Cache:"},
			20},
		{"commit",
			[]string{"-o, --output OUT.tar", "--upper DIR         the upper directory holding", "--squash", "--thin-from", "--label", "IMAGE's layers are copied", "--image REF         the image to use when", "imgmount commit app.tar --upper ./edits"},
			[]string{"--layers", "allow_other", "--json", "as for mounting", "plain tar", "Cache:"},
			40},
		{"export",
			[]string{"-o, --output OUT.tar    the tar to write", "--upper DIR         the upper directory holding", "what docker export gives", "--cache-dir DIR     where saved", "imgmount export app.tar"},
			[]string{"--layers", "--squash", "--json", "as for commit", "IMAGE's layers are copied", "Cache:"},
			20},
	} {
		for _, h := range []string{"--help", "-h"} {
			help := helpOf(t, c.name, h)
			require.True(t, strings.HasPrefix(help, "Usage:\n  imgmount "+c.name+" [flags] IMAGE"), "%s %s:\n%s", c.name, h, help)
			for _, s := range append(c.has, "IMAGE is a tarball", "-h, --help              print this help and exit", "Exit status:\n  0  success", "'imgmount --help'") {
				require.Contains(t, help, s, "%s %s", c.name, h)
			}
			for _, s := range c.hasNot {
				require.NotContains(t, help, s, "%s %s", c.name, h)
			}
			lines := strings.Count(help, "\n")
			require.GreaterOrEqual(t, lines, c.minimum, "%s %s", c.name, h)
			require.Less(t, lines, strings.Count(overview, "\n")/2, "%s %s: the command's help, not the whole page", c.name, h)
		}
	}
}

// The overview and the commands' help come from one text: each flag's
// description appears once in the overview, under the command that owns it.
func TestHelpOverview(t *testing.T) {
	overview := helpOf(t, "--help")
	for _, s := range []string{
		"the image to use when the tarball holds several",
		"the upper directory holding the changes",
		"IMAGE is a tarball",
		"Exit status:",
		"print this help and exit",
	} {
		require.Equal(t, 1, strings.Count(overview, s), "%q once in the overview", s)
	}
	for _, s := range []string{
		"Usage:\n  imgmount [flags] IMAGE MOUNTPOINT", "imgmount COMMAND --help",
		"Flags for mounting:", "Flags for inspect:", "Flags for commit:", "Flags for export:",
		"      --image REF, --platform OS/ARCH[/VARIANT], --base BASE.tar,\n      --cache-dir DIR, --max-memory SIZE\n                          as for mounting\n",
		"as for mounting (with IMAGE only)", "as for commit",
		"Running:", "Reading:", "Cache:", "Unmounting:",
		// Directories go wherever a tarball does (issue 12).
		"may also be a directory\nholding one unpacked: an OCI image layout", "an extracted docker save",
		"--base BASE.tar     an image (tarball or directory) that supplies", "imgmount app.d /mnt/app",
	} {
		require.Contains(t, overview, s)
	}
	// Every command's usage, flags and examples are in the overview.
	overview = helpOverview() // placeholders not yet replaced
	for _, c := range helpCommands {
		require.Contains(t, overview, c.usage)
		require.Contains(t, overview, c.examples)
		for _, f := range c.flags {
			var b strings.Builder
			f.write(&b)
			require.Contains(t, overview, b.String())
		}
	}
}

func TestHelpFlagLayout(t *testing.T) {
	var b strings.Builder
	helpFlag{"--user USER[:GROUP]", "set the user"}.write(&b)
	helpFlag{"-t, --tag NAME[:TAG]", "the tag;\nrepeatable"}.write(&b)
	helpFlag{"--compress none|gzip|zstd", "the compression"}.write(&b)
	require.Equal(t, ""+
		"      --user USER[:GROUP] set the user\n"+
		"  -t, --tag NAME[:TAG]    the tag;\n"+
		"                          repeatable\n"+
		"      --compress none|gzip|zstd\n"+
		"                          the compression\n", b.String())

	b.Reset()
	writeFlagRefs(&b, []helpFlag{flagUpperCommit, flagImage}, "as for commit")
	writeFlagRefs(&b, []helpFlag{flagPlatform, flagImage}, "as for mounting")
	require.Equal(t, ""+
		"      --upper DIR, --image REF\n"+
		"                          as for commit\n"+
		"      --platform OS/ARCH[/VARIANT], --image REF\n"+
		"                          as for mounting\n", b.String())
}
