package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
)

// The help is made of sections, each written once: `imgmount --help`
// prints the overview (all of them), `imgmount COMMAND --help` the
// sections of one command. {{platform}} and {{cache}} stand for this
// machine's defaults.

const helpIntro = `imgmount mounts a container image tarball, as docker save, podman save,
skopeo or buildah write it, as a FUSE filesystem without extracting it. The
layers are stacked as a container runtime would (whiteouts, opaque
directories), so the mount shows the image's root filesystem. It is
read-only unless --upper names a directory to hold the changes; the tarball
itself is never written.
`

const helpImage = `IMAGE is a tarball from docker save (any Docker version), an OCI archive
(skopeo copy oci-archive:, podman save --format oci-archive, buildah push
oci-archive:), or either of them gzipped as a whole; layers may be
uncompressed, gzip or zstd. IMAGE, and every --base, may also be a directory
holding one unpacked: an OCI image layout (skopeo copy ... oci:DIR:TAG) or
an extracted docker save (tar -xf app.tar -C DIR); its files are read where
they lie, nothing is copied.
`

// helpMountNotes close the overview: how a mount behaves.
const helpMountNotes = `Running: without -f, imgmount starts a background process that serves the
mount and returns once the mount is ready (or prints why it failed, leaving
nothing mounted). The mount is nosuid and nodev, read-only without --upper,
and the kernel checks permissions against the owners and modes stored in the
image (for a writable mount without root: against yours); only you can enter
it unless -o allow_other is given.

Reading: a read-only mount hands content to the kernel before it is asked
for, so that reads are served from the page cache: the first read of a
small file in a directory brings the directory's other small files (up to
1 MiB each, 32 MiB per directory), and reads that jump around a big file
bring the whole file (up to an eighth of RAM). Listing directories brings
nothing. -o noprefetch turns this off.

Compressed layers: gzip layers, and zstd layers of several frames
(zstd:chunked, pzstd), are read where they lie: the first mount inflates
each once, checks it against its diff_id and records checkpoints (about
6 KB per 2 MB); a read inflates from the nearest one, and recently inflated
spans stay in memory (--span-cache). Nothing decompressed is written to
disk. A zstd layer of one frame cannot be entered mid-way: it is
decompressed once into the cache, as every compressed layer is with
-o materialize (mmap speed for the disk it takes).

Cache: the first mount of a tarball indexes every layer; the indexes and
checkpoints are kept in the cache directory, so later mounts of the same
tarball start at once. A saved index whose tarball changed is rebuilt, never
trusted. The cache may be deleted whenever nothing is mounted from it; it is
kept under --cache-max, and imgmount cache lists, prunes and clears it.

Unmounting: imgmount -u MOUNTPOINT, fusermount3 -u MOUNTPOINT, or umount as
root; the background process exits when its mount goes away. An unmount
fails while a process has its working directory or open files in the mount.
`

// helpFlag is one flag of the help: its name column and its description,
// which starts at column helpFlagCol; lines of text after the first may be
// indented further (as -o's table is).
type helpFlag struct {
	name string // as printed: "--image REF", "-o, --output OUT.tar"
	text string
}

const helpFlagCol = 26

// Flags that several commands share, described once.
var (
	flagImage = helpFlag{"--image REF", `the image to use when the tarball holds several: a
tag (name:tag; name alone means name:latest) or a
digest of the manifest or config (sha256:..., or a
unique prefix of at least 4 hex digits)`}
	flagPlatform = helpFlag{"--platform OS/ARCH[/VARIANT]", `the platform of a multi-platform image, e.g.
linux/arm64 or linux/arm/v7 (default: the host's,
{{platform}})`}
	flagBase = helpFlag{"--base BASE.tar", `an image (tarball or directory) that supplies
layers IMAGE leaves out (a "thin" tarball);
repeatable`}
	flagCacheDir = helpFlag{"--cache-dir DIR", `where saved indexes and decompressed layers are kept
(default $XDG_CACHE_HOME/imgmount, else
~/.cache/imgmount; here: {{cache}})`}
	flagMaxMemory = helpFlag{"--max-memory SIZE", `the memory the image's index may take (4G,
512M, none); an image with more files stops with
an error (status 7) instead of exhausting the
machine (default: half the RAM, about 2 KiB a file)`}
	flagSpanCache = helpFlag{"--span-cache SIZE", `memory for recently inflated spans of compressed
layers, shared by all of them (4G, 512M, none;
default 128M)`}
	flagMaxRatio = helpFlag{"--max-ratio N", `a compressed layer that inflates to more than N
times its size is refused as a decompression bomb
(status 7; default 100, and at least 64 GiB)`}
	flagCacheMax = helpFlag{"--cache-max SIZE", `the most the cache directory may take (4G, 512M,
none): after writing to it, imgmount removes the
least recently used items until it fits, never
what a mount uses nor what was used in the last
15 minutes (default: a tenth of its filesystem, at
least 1 GiB, at most 20 GiB); every command that
opens an image takes it`}
	flagUpperCommit = helpFlag{"--upper DIR", `the upper directory holding the changes (with
IMAGE; a MOUNTPOINT names its own)`}
	flagHelp = helpFlag{"-h, --help", "print this help and exit"}
)

// helpCommand is the help of one command.
type helpCommand struct {
	name  string // the word after imgmount; "" for mounting, the default
	title string // in the overview's "Flags for TITLE:"
	usage string // its lines of the Usage block
	// about comes before its flags: what it does, if usage does not say
	// enough.
	about string
	flags []helpFlag // its own flags
	// shared are flags that an earlier command describes: the overview
	// only names them, followed by sharedAs; a command's own help gives
	// them in full.
	shared   []helpFlag
	sharedAs string
	examples string
}

// helpCommands are the commands in the order of the overview: mounting
// first, then every word of commands.
var helpCommands = []*helpCommand{
	{
		name:  "",
		title: "mounting",
		usage: `  imgmount [flags] IMAGE MOUNTPOINT   mount IMAGE on MOUNTPOINT (an existing
                                      directory); returns once it is ready
  imgmount -u MOUNTPOINT              unmount
`,
		flags: []helpFlag{
			flagImage,
			flagPlatform,
			{"--layers", `show one directory per layer instead of the union,
named NN-<first 12 hex digits of the diff_id>, each
with the layer's entries as stored (whiteout files
.wh.* included)`},
			flagBase,
			{"--upper DIR", `mount read-write: every change goes to DIR (created
if missing), an OCI layer directory (deletions as
.wh.NAME files); mounting again with the same DIR
shows the changes again. Names starting with .wh.
are refused. Without root, owners and modes you
cannot give are kept in the xattr
user.imgmount.stat and shown as asked, and you may
change everything in the mount`},
			flagCacheDir,
			flagCacheMax,
			flagMaxMemory,
			flagSpanCache,
			flagMaxRatio,
			{"-o OPT[,OPT...]", `mount options, repeatable:
  allow_other  let other users in (a user other than
               root needs user_allow_other in
               /etc/fuse.conf)
  allow_root   let root in besides you
  fsname=NAME  the source mount(8) and df show
               (default imgmount:IMAGE)
  suid, dev    honour setuid bits and device nodes
               (default: nosuid,nodev)
  debug        same as -d
  noprefetch   never push file content into the
               page cache before it is read (see
               Reading below)
  materialize  decompress compressed layers into the
               cache and map the copies instead of
               reading them in place
  ro, rw       accepted where they agree with
               --upper (rw needs it)
anything else goes to the kernel (or fusermount3)
as it is, e.g. -o noatime`},
			{"-f, --foreground", `stay in the foreground and serve until unmounted,
Ctrl-C or SIGTERM (which unmount)`},
			{"-d, --debug", "print every FUSE request on stderr (implies -f)"},
			{"-u, --unmount", `unmount MOUNTPOINT (umount as root, else
fusermount3 -u); fails while the mount is busy`},
			{"--version", "print the version and exit"},
			flagHelp,
		},
		examples: `  # Mount the image's root filesystem, look around, unmount.
  imgmount app.tar /mnt/app
  ls /mnt/app; sudo chroot /mnt/app /bin/sh
  imgmount -u /mnt/app

  # Edit the image: changes land in ./edits, the tarball stays as it is.
  imgmount --upper ./edits app.tar /mnt/app
  echo 'nameserver 10.0.0.1' > /mnt/app/etc/resolv.conf
  sudo chroot /mnt/app /bin/sh    # add -o dev to use the image's /dev/null

  # One directory per layer, whiteouts visible.
  imgmount --layers app.tar /mnt/layers

  # One image of a tarball that holds several, by tag or by digest prefix.
  imgmount --image myapp:1.2 images.tar /mnt/app
  imgmount --image sha256:3f9a images.tar /mnt/app

  # One platform of a multi-platform image.
  imgmount --platform linux/arm64 multi.tar /mnt/app

  # Let other users see the mount.
  imgmount -o allow_other app.tar /mnt/app

  # A thin tarball whose base layers are in another tarball.
  imgmount --base base.tar thin.tar /mnt/app

  # A directory: an OCI layout (skopeo copy ... oci:DIR:TAG), or an
  # extracted docker save.
  mkdir app.d && tar -xf app.tar -C app.d && imgmount app.d /mnt/app

  # Serve in the foreground; Ctrl-C unmounts.
  imgmount -f app.tar /mnt/app

  # A gzipped docker save works as it is.
  docker save myapp | gzip > app.tar.gz && imgmount app.tar.gz /mnt/app
`,
	},
	{
		name:  "inspect",
		title: "inspect",
		usage: `  imgmount inspect [flags] IMAGE      describe the tarball: its images, the
                                      config and the layers
`,
		about: `Inspect: when the tarball holds several images (docker save a b c) and no
--image chooses one, it describes them all: each image's tags, platform,
number of layers and stored size, and the layers they share, by diff_id
(the JSON then has images[] with a layer count each, and layers[], each
layer once with the images that use it in used_by). With --image, the
layers of the chosen image that the others have too are listed after its
layer table (shared_with in the JSON). A thin tarball inspected without its
--base is described too, its left-out layers marked absent.
`,
		flags: []helpFlag{
			{"--json", `print one JSON object (a stable interface: fields
are only ever added)`},
			{"--files", `list every path of the image instead, a line
each: the layer that last wrote it (- for a
directory no layer stores), type, size, path
(and -> target); with --json, as "files"`},
		},
		shared:   []helpFlag{flagImage, flagPlatform, flagBase, flagCacheDir, flagMaxMemory},
		sharedAs: "as for mounting",
		examples: `  # What is in the tarball: images, config, layers; as JSON for scripts.
  imgmount inspect app.tar
  imgmount inspect --json app.tar | jq -r '.layers[].diff_id'
  # Which layer put each file there.
  imgmount inspect --files app.tar | grep /etc/
  # Every image of docker save a b c, and the layers they share.
  imgmount inspect abc.tar
`,
	},
	{
		name:  "commit",
		title: "commit",
		usage: `  imgmount commit [flags] IMAGE|MOUNTPOINT -o OUT.tar
                                      write a new image tarball: IMAGE's
                                      layers plus one made of the changes
`,
		about: `Commit: IMAGE's layers are copied byte for byte, as stored (compressed or
not), and the upper directory becomes one new layer (whiteouts, opaque
directories, hardlinks, xattrs; owners and modes as user.imgmount.stat
gives them). The config gets the layer's diff_id, a history entry and the
edits asked for; created is now, or SOURCE_DATE_EPOCH if set. An upper
directory with no entries (or none given) adds no layer: the history entry
is then marked empty_layer. With MOUNTPOINT, a writable imgmount mount, the
mount says which image and upper directory; its pending writes are flushed
first (stop writing to it while it commits). The image ID (the config's
digest) is printed on stdout.
`,
		flags: []helpFlag{
			{"-o, --output OUT.tar", `the tarball to write (- for stdout); written under
a temporary name and renamed when complete, so an
interrupted or failed commit leaves nothing`},
			flagUpperCommit,
			{"-t, --tag NAME[:TAG]", `the new image's tag (NAME alone means NAME:latest);
repeatable (default: the image's own tags)`},
			{"-m, --message TEXT", "the history entry's comment"},
			{"--format docker|oci", `the layout to write (default: both in one tarball,
as Docker 25+ saves: oci-layout, index.json and
blobs/sha256/ plus manifest.json pointing at the
same blobs, which docker load, podman load, skopeo
and umoci all read); docker: manifest.json and the
blobs; oci: the OCI layout only`},
			{"--compress none|gzip|zstd", `the new layer's compression (default none: imgmount
mounts uncompressed layers in place, without a
decompressed copy in the cache)`},
			{"--squash", `one layer holding the whole root filesystem,
changes included; the runtime config is kept
(Env, Cmd, Entrypoint, WorkingDir, User, Labels,
ExposedPorts, Volumes, StopSignal...), the history
is one entry`},
			{"--thin-from BASE.tar", `leave out the layer blobs BASE.tar holds (any image
in it), keeping them in the manifest and config:
mount the result with --base BASE.tar; repeatable`},
			{"--have LIST", `leave out the layer blobs the receiving side has
(the list imgmount have prints there, as for
imgmount thin --have); repeatable`},
			{"--env KEY=VALUE", `set an environment variable (replacing KEY where it
stands); repeatable`},
			{"--entrypoint CMD, --cmd CMD", `set the entrypoint or command: a JSON array
(["/app/run", "--fast"]) as it is, any other text
run by the image's shell (its config Shell, else
/bin/sh -c), "" to clear it; as in a Dockerfile, a
new entrypoint clears the command unless --cmd is
given too`},
			{"--workdir DIR", "set the working directory (absolute)"},
			{"--user USER[:GROUP]", "set the user"},
			{"--label KEY=VALUE", "set a label; repeatable"},
		},
		shared:   []helpFlag{flagImage, flagPlatform, flagBase, flagCacheDir, flagMaxMemory},
		sharedAs: "as for mounting (with IMAGE only)",
		examples: `  # Turn the edits into a new image, and load it.
  imgmount commit app.tar --upper ./edits -t myapp:edited -o new.tar
  docker load -i new.tar
  # ...or commit the live mount, gzip the new layer, set the command.
  imgmount commit /mnt/app --compress gzip --cmd '["/app/run"]' -o new.tar
  # A one-layer image; a tarball of only the new layer's blob.
  imgmount commit app.tar --upper ./edits --squash -o flat.tar
  imgmount commit app.tar --upper ./edits --thin-from app.tar -o thin.tar
`,
	},
	{
		name:  "export",
		title: "export",
		usage: `  imgmount export [flags] IMAGE|MOUNTPOINT -o OUT.tar
                                      write the root filesystem (changes
                                      included) as one plain tar
`,
		about: `Export writes what docker export gives: the union of the layers (and of
the upper directory, if any) as one plain tar, hardlinks kept, sparse files
kept sparse (PAX 1.0, which GNU tar and Go read).
`,
		flags: []helpFlag{
			{"-o, --output OUT.tar", "the tar to write; - for stdout"},
		},
		shared:   []helpFlag{flagUpperCommit, flagImage, flagPlatform, flagBase, flagCacheDir, flagMaxMemory},
		sharedAs: "as for commit",
		examples: `  # The root filesystem as a tar, changes included.
  imgmount export app.tar --upper ./edits -o - | tar -tv
`,
	},
	{
		name:  "diff",
		title: "diff",
		usage: `  imgmount diff [flags] A B           the paths image B adds, removes and
                                      changes from image A
  imgmount diff --layers IMAGE N [M]  the same between layers N and M of
                                      IMAGE (N alone: what layer N changed)
`,
		about: `Diff compares two root filesystems as a mount shows them (layers stacked,
whiteouts applied) without extracting either: A and B are images (two
tarballs, or one tarball twice with --image-a and --image-b), or with
--layers the image as it stands after layer N and after layer M. It prints
one line per path that differs, sorted by path:
  A /path                added: only in B
  D /path                deleted: only in A (a directory, and all it held)
  M /path (what, ...)    modified; what is among: type file→dir, content,
                         mode 0644→0755, owner 0:0→1000:1000,
                         target "a"→"b", device 1,3→1,5,
                         xattrs +added -removed ~changed
Content differs where the sizes do, else where the sha256 sums do (files of
a layer both sides share are not read). Modification times and hardlinks
are not compared. A path with a control character or invalid UTF-8 is
quoted as a Go string. Nothing printed means the trees are the same: the
exit status is 0 whether they differ or not.
`,
		flags: []helpFlag{
			{"--image-a REF, --image-b REF", `the image of A, of B, where its tarball holds
several (default: --image)`},
			{"--layers", `compare two layers of one image: IMAGE N [M], the
layer numbers as imgmount inspect prints them`},
			{"--json", `print one JSON object: a, b, equal, counts, and
the changes, each path with its attributes on
each side and the layer that wrote it (fields are
only ever added)`},
		},
		shared:   []helpFlag{flagImage, flagPlatform, flagBase, flagCacheDir, flagMaxMemory},
		sharedAs: "as for mounting (for A and B)",
		examples: `  # What release 2 changed, for a review; the changed paths for a script.
  imgmount diff app-1.tar app-2.tar
  imgmount diff --json app-1.tar app-2.tar | jq -r '.changes[].path'
  # Two images of one tarball.
  imgmount diff --image-a app:1 --image-b app:2 images.tar images.tar
  # What layer 3 changed; all that layers 2 and 3 changed.
  imgmount diff --layers app.tar 3
  imgmount diff --layers app.tar 1 3
`,
	},
	{
		name:  "thin",
		title: "thin",
		usage: `  imgmount thin [flags] IMAGE -o OUT.tar
                                      IMAGE without the layer blobs the
                                      receiving side has (--base, --have)
`,
		about: `Thin: for a machine that already holds some of IMAGE's layers (the base
it was built FROM, last week's release), write IMAGE without their blobs,
every other member as it was: configs, manifests, index.json,
manifest.json, repositories, byte for byte, so the image IDs and manifest
digests do not change. docker load (20.10 and later) takes the layers left
out from its store, imgmount mounts the result with --base, and imgmount
complete puts them back. A layer is left out when the receiving side has
it and every layer below it (docker load looks layers up by their chain).
Every image of IMAGE is kept (each layer stored once) unless --image names
some. A tarball compressed as a whole is written uncompressed; a
directory is written as a tarball.
`,
		flags: []helpFlag{
			{"-o, --output OUT.tar", `the tarball to write (- for stdout); written under
a temporary name and renamed when complete`},
			{"--base BASE.tar", `an image (tarball or directory) the receiving side
has: the layers it stores are left out; repeatable`},
			{"--have LIST", `a file naming the layers the receiving side has:
what imgmount have prints there (text or --json),
one diff_id (sha256:...) a line, or the JSON of
docker image inspect; - for stdin; repeatable`},
			{"--image REF", `keep only this image (a tag or a digest prefix, as
for mounting; all its platforms) and the members
it uses; repeatable (default: every image)`},
		},
		shared:   []helpFlag{flagCacheDir, flagMaxMemory},
		sharedAs: "as for mounting",
		examples: `  # The receiving side says what it has; the sender ships only the rest.
  imgmount have --docker > site.have          # on the receiving side
  imgmount thin release.tar --have site.have -o ship.tar
  docker load -i ship.tar                     # on the receiving side
  # Against a base tarball; two of the images of docker save a b c.
  imgmount thin app.tar --base base.tar -o app-thin.tar
  imgmount thin abc.tar --base base.tar --image a --image b -o ab.tar
`,
	},
	{
		name:  "complete",
		title: "complete",
		usage: `  imgmount complete [flags] THIN -o OUT.tar
                                      put back the layer blobs a thin
                                      tarball leaves out, from --base
`,
		about: `Complete: the layer blobs THIN leaves out (as imgmount thin or commit
--thin-from write it) are taken from the --base tarballs, any image in
them, and put back; every other member is copied as it is. Every layer
blob written, THIN's own included, is checked against its digest and its
diff_id. The result holds every layer of every image and loads anywhere. A
layer no base has is an error (status 4) naming it and the images that
need it.
`,
		flags: []helpFlag{
			{"-o, --output OUT.tar", `the tarball to write (- for stdout); written under
a temporary name and renamed when complete`},
			{"--base SOURCE", `an image (tarball or directory) holding layers THIN
leaves out; repeatable`},
		},
		shared:   []helpFlag{flagCacheDir, flagMaxMemory},
		sharedAs: "as for mounting",
		examples: `  # A self-contained tarball again, for a machine without the base.
  imgmount complete app-thin.tar --base base.tar -o app.tar
`,
	},
	{
		name:  "have",
		title: "have",
		usage: `  imgmount have [flags] [SOURCE...]   list the layers this machine has, for
                                      imgmount thin --have
`,
		about: `Have lists the layers the machine it runs on holds: those the images
given as SOURCE (tarballs or directories) store, and with --docker or
--podman those of every image the engine holds (image ls, then image
inspect's RootFS.Layers, through the docker or podman command). It prints
one diff_id a line, sorted; --json prints {"diff_ids": [...],
"chain_ids": [...]}, whose chain IDs tell thin which layers sit on which.
`,
		flags: []helpFlag{
			{"--docker", `the images of the Docker engine (the docker command,
as DOCKER_HOST or its context says)`},
			{"--podman", "the images of podman (the podman command)"},
			{"--json", `print one JSON object: diff_ids and chain_ids
(fields are only ever added)`},
		},
		shared:   []helpFlag{flagCacheDir, flagMaxMemory},
		sharedAs: "as for mounting",
		examples: `  # What the local engine and a kept base tarball hold.
  imgmount have --docker --json base.tar > site.have
`,
	},
	{
		name:  "cache",
		title: "cache",
		usage: `  imgmount cache [list] [--json]      what the cache directory holds
  imgmount cache prune [--max-size SIZE]
                                      remove the least recently used items
  imgmount cache clear                remove every item not in use
`,
		about: `Cache directory: it holds saved indexes (kind index), checkpoints into gzip
and zstd layers (checkpoints), decompressed copies of layers (decompressed),
markers of layers checked once against their diff_id (verified, empty: only
counted in the table) and files being written (temporary). imgmount cache
list prints each item, the least recently used first, with its size on disk,
last use, whether a mount uses it and the tarball it was made from. Prune
removes the least recently used items until the cache fits SIZE, and files
that interrupted writers left; clear removes every item. Neither removes
what a mount maps, nor a file being written: those are listed as in use.
Anything removed is made again when needed, by a slower mount.
`,
		flags: []helpFlag{
			{"--json", `list: print one JSON object: dir, total,
default_bound and items, each with path, kind,
size, last_use, in_use and source (fields are only
ever added)`},
			{"--max-size SIZE", `prune: the size to bring the cache under (4G,
512M; default: the default of --cache-max; none:
remove only what interrupted writers left)`},
		},
		shared:   []helpFlag{flagCacheDir},
		sharedAs: "as for mounting",
		examples: `  # What the cache holds, what a prune would go for first.
  imgmount cache
  imgmount cache list --json | jq '.items[] | select(.kind == "decompressed")'
  # Down to 2 GiB; everything not in use.
  imgmount cache prune --max-size 2G
  imgmount cache clear
`,
	},
}

// helpUsageTail ends the overview's Usage block.
const helpUsageTail = `  imgmount COMMAND --help             the help of one command: inspect,
                                      commit, export, diff, thin, cache,
                                      complete or have
  imgmount --version | --help
`

// findHelpCommand gives the help of the command name ("" for mounting),
// nil if there is none.
func findHelpCommand(name string) *helpCommand {
	for _, c := range helpCommands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// helpCommandLine is how to ask for the help of command ("" for the
// overview).
func helpCommandLine(command string) string {
	if command == "" || findHelpCommand(command) == nil {
		return "imgmount --help"
	}
	return "imgmount " + command + " --help"
}

// printHelp writes the help of command, or the overview for "" (or a
// command without help of its own), with this machine's defaults filled
// in.
func printHelp(w io.Writer, getenv env, command string) {
	var text string
	if c := findHelpCommand(command); c != nil && c.name != "" {
		text = c.help()
	} else {
		text = helpOverview()
	}
	cache, err := defaultCacheDir(getenv)
	if err != nil {
		cache = "none: set --cache-dir"
	}
	r := strings.NewReplacer("{{platform}}", runtime.GOOS+"/"+runtime.GOARCH, "{{cache}}", cache)
	_, _ = io.WriteString(w, r.Replace(text))
}

// helpOverview is `imgmount --help`: every section.
func helpOverview() string {
	var b strings.Builder
	b.WriteString(helpIntro)
	b.WriteString("\nUsage:\n")
	for _, c := range helpCommands {
		b.WriteString(c.usage)
	}
	b.WriteString(helpUsageTail)
	b.WriteString("\n" + helpImage)
	for _, c := range helpCommands {
		b.WriteString("\n")
		if c.about != "" {
			b.WriteString(c.about + "\n")
		}
		fmt.Fprintf(&b, "Flags for %s:\n", c.title)
		for _, f := range c.flags {
			f.write(&b)
		}
		writeFlagRefs(&b, c.shared, c.sharedAs)
	}
	b.WriteString("\nExamples:\n")
	for i, c := range helpCommands {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(c.examples)
	}
	b.WriteString("\n" + helpMountNotes)
	b.WriteString("\n" + helpExitStatus())
	return b.String()
}

// help is `imgmount COMMAND --help`: the command's sections only, its
// shared flags in full.
func (c *helpCommand) help() string {
	var b strings.Builder
	b.WriteString("Usage:\n" + c.usage)
	if c.about != "" {
		b.WriteString("\n" + c.about)
	}
	b.WriteString("\n" + helpImage)
	b.WriteString("\nFlags:\n")
	for _, f := range c.flags {
		f.write(&b)
	}
	for _, f := range c.shared {
		f.write(&b)
	}
	flagHelp.write(&b)
	b.WriteString("\nExamples:\n" + c.examples)
	b.WriteString("\n" + helpExitStatus())
	b.WriteString("\n'imgmount --help' describes mounting, the cache and every command.\n")
	return b.String()
}

// write writes the flag: its name from column 2 (6 for a long flag
// alone), its text from column helpFlagCol, on the same line if the name
// leaves room.
func (f helpFlag) write(b *strings.Builder) {
	name := "  " + f.name
	if strings.HasPrefix(f.name, "--") {
		name = "      " + f.name
	}
	lines := strings.Split(f.text, "\n")
	if len(name) < helpFlagCol {
		b.WriteString(name + strings.Repeat(" ", helpFlagCol-len(name)) + lines[0] + "\n")
		lines = lines[1:]
	} else {
		b.WriteString(name + "\n")
	}
	for _, l := range lines {
		b.WriteString(strings.Repeat(" ", helpFlagCol) + l + "\n")
	}
}

// writeFlagRefs names flags described elsewhere, wrapped at 80 columns,
// followed by as ("as for mounting").
func writeFlagRefs(b *strings.Builder, flags []helpFlag, as string) {
	if len(flags) == 0 {
		return
	}
	const indent = "      "
	line := indent
	for i, f := range flags {
		word := f.name
		if i < len(flags)-1 {
			word += ","
		}
		if line != indent && len(line)+1+len(word) > 80 {
			b.WriteString(line + "\n")
			line = indent
		}
		if line != indent {
			line += " "
		}
		line += word
	}
	if len(line) < helpFlagCol {
		b.WriteString(line + strings.Repeat(" ", helpFlagCol-len(line)) + as + "\n")
		return
	}
	b.WriteString(line + "\n" + strings.Repeat(" ", helpFlagCol) + as + "\n")
}

// helpExitStatus is the table of exitStatuses.
func helpExitStatus() string {
	var b strings.Builder
	b.WriteString("Exit status:\n")
	for _, s := range exitStatuses {
		fmt.Fprintf(&b, "  %d  %s\n", s.status, strings.ReplaceAll(s.text, "\n", "\n     "))
	}
	return b.String()
}
