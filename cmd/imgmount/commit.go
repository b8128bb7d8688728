package main

import (
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/imgmount/imgmount/overlay/archive"
	"github.com/imgmount/imgmount/overlay/repack"
	"github.com/imgmount/imgmount/tarindex"
	digest "github.com/opencontainers/go-digest"
	flag "github.com/spf13/pflag"
)

// repackConfig is what `imgmount commit` and `imgmount export` add to the
// config: the source (an image tarball or a live writable mount), the
// output and, for commit, what the new image is.
type repackConfig struct {
	source string // IMAGE or MOUNTPOINT, absolute
	output string // -o: absolute path, or "-" for stdout
	// Flags that name the image or upper directory, which a MOUNTPOINT
	// source already says: giving them too is a mistake.
	explicit []string

	squash      bool
	format      repack.OutputFormat
	compression tarindex.Compression
	tags        []string // nil: keep the image's
	message     string
	edits       repack.ConfigEdits
	thinFrom    []string
	have        []string // --have LIST: absolute, or "-" for stdin
	created     time.Time
	createdBy   string
}

// commonRepackFlags registers the flags commit and export share.
func commonRepackFlags(fl *flag.FlagSet, cfg *config, output *string, help *bool) {
	imageFlags(fl, cfg)
	fl.StringVar(&cfg.upper, "upper", "", "")
	fl.StringVarP(output, "output", "o", "", "")
	fl.BoolVarP(help, "help", "h", false, "")
}

// commitFlags holds the raw values of commit's own flags.
type commitFlags struct {
	format, compress, message string
	tags, env, labels         []string
	entrypoint, cmd           string
	workdir, user             string
	thinFrom                  []string
	have                      []string
	squash                    bool
}

// parseCommit parses the arguments of `imgmount commit`.
func parseCommit(args []string, getenv env) (*config, error) {
	cfg := &config{mode: modeCommit, repack: &repackConfig{}}
	fl := newFlagSet("imgmount commit")
	var help bool
	var output string
	var cf commitFlags
	commonRepackFlags(fl, cfg, &output, &help)
	fl.StringVar(&cf.format, "format", "", "")
	fl.StringVar(&cf.compress, "compress", "none", "")
	fl.StringArrayVarP(&cf.tags, "tag", "t", nil, "")
	fl.StringVarP(&cf.message, "message", "m", "", "")
	fl.StringArrayVar(&cf.env, "env", nil, "")
	fl.StringArrayVar(&cf.labels, "label", nil, "")
	fl.StringVar(&cf.entrypoint, "entrypoint", "", "")
	fl.StringVar(&cf.cmd, "cmd", "", "")
	fl.StringVar(&cf.workdir, "workdir", "", "")
	fl.StringVar(&cf.user, "user", "", "")
	fl.StringArrayVar(&cf.thinFrom, "thin-from", nil, "")
	fl.StringArrayVar(&cf.have, "have", nil, "")
	fl.BoolVar(&cf.squash, "squash", false, "")
	if err := fl.Parse(args); err != nil {
		return nil, usagef("commit: %v", err)
	}
	if help {
		cfg.mode = modeHelp
		return cfg, nil
	}
	if err := finishRepack(cfg, fl, "commit", output, getenv); err != nil {
		return nil, err
	}
	if err := cf.apply(cfg.repack, fl, getenv); err != nil {
		return nil, err
	}
	return cfg, nil
}

// finishRepack checks what commit and export share: one source, an
// output, the image flags.
func finishRepack(cfg *config, fl *flag.FlagSet, cmd, output string, getenv env) error {
	rc := cfg.repack
	usage := fmt.Sprintf("imgmount %s [flags] IMAGE|MOUNTPOINT -o OUT", cmd)
	switch pos := fl.Args(); len(pos) {
	case 0:
		return usagef("%s: missing IMAGE or MOUNTPOINT (%s)", cmd, usage)
	case 1:
		var err error
		if rc.source, err = absPath(pos[0]); err != nil {
			return err
		}
	default:
		return usagef("%s: too many arguments: %s (%s)", cmd, strings.Join(pos, " "), usage)
	}
	switch output {
	case "":
		return usagef("%s: missing -o OUT, the file to write (%s)", cmd, usage)
	case "-":
		rc.output = "-"
	default:
		var err error
		if rc.output, err = absPath(output); err != nil {
			return err
		}
		if rc.output == rc.source {
			return usagef("%s: -o %s is the source itself", cmd, output)
		}
	}
	for _, name := range []string{"image", "platform", "base", "upper"} {
		if fl.Changed(name) {
			rc.explicit = append(rc.explicit, "--"+name)
		}
	}
	if cfg.upper != "" {
		var err error
		if cfg.upper, err = absPath(cfg.upper); err != nil {
			return err
		}
	}
	return cfg.finishCommon(getenv)
}

// apply checks commit's own flags and stores them in rc.
func (cf *commitFlags) apply(rc *repackConfig, fl *flag.FlagSet, getenv env) error {
	rc.squash = cf.squash
	switch cf.format {
	case "":
		rc.format = repack.OutputCombined
	case "docker", "oci":
		rc.format = repack.OutputFormat(cf.format)
	default:
		return usagef("commit: --format %q: want docker or oci (default: both in one tarball, as Docker 25+ saves)", cf.format)
	}
	switch cf.compress {
	case "none":
		rc.compression = tarindex.CompressionNone
	case "gzip":
		rc.compression = tarindex.CompressionGzip
	case "zstd":
		rc.compression = tarindex.CompressionZstd
	default:
		return usagef("commit: --compress %q: want none, gzip or zstd", cf.compress)
	}
	for _, t := range cf.tags {
		tag, err := normalizeTag(t)
		if err != nil {
			return err
		}
		rc.tags = append(rc.tags, tag)
	}
	rc.message = cf.message
	if err := cf.configEdits(rc, fl); err != nil {
		return err
	}
	for _, p := range cf.thinFrom {
		a, err := absPath(p)
		if err != nil {
			return err
		}
		rc.thinFrom = append(rc.thinFrom, a)
	}
	for _, p := range cf.have {
		if p != "-" {
			var err error
			if p, err = absPath(p); err != nil {
				return err
			}
		}
		rc.have = append(rc.have, p)
	}
	var err error
	if rc.created, err = createdTime(getenv); err != nil {
		return err
	}
	rc.createdBy = cf.createdBy(fl)
	return nil
}

// configEdits checks the config flags and turns them into edits.
func (cf *commitFlags) configEdits(rc *repackConfig, fl *flag.FlagSet) error {
	e := &rc.edits
	for _, kv := range cf.env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return usagef("commit: --env %q: want KEY=VALUE", kv)
		}
		e.Env = append(e.Env, kv)
	}
	for _, kv := range cf.labels {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usagef("commit: --label %q: want KEY=VALUE", kv)
		}
		if e.Labels == nil {
			e.Labels = map[string]string{}
		}
		e.Labels[k] = v
	}
	for _, f := range []struct {
		name string
		val  string
		dst  **string
		argv bool
	}{
		{"entrypoint", cf.entrypoint, &e.Entrypoint, true},
		{"cmd", cf.cmd, &e.Cmd, true},
		{"workdir", cf.workdir, &e.WorkingDir, false},
		{"user", cf.user, &e.User, false},
	} {
		if !fl.Changed(f.name) {
			continue
		}
		if f.argv {
			if _, err := repack.ParseCommand(f.val, nil); err != nil {
				return usagef("commit: --%s %v", f.name, err)
			}
		}
		v := f.val
		*f.dst = &v
	}
	if e.WorkingDir != nil && *e.WorkingDir != "" && !strings.HasPrefix(*e.WorkingDir, "/") {
		return usagef("commit: --workdir %q: want an absolute path", *e.WorkingDir)
	}
	return nil
}

// createdBy is the history entry's created_by: the command and the flags
// that change the image, without paths of this machine.
func (cf *commitFlags) createdBy(fl *flag.FlagSet) string {
	parts := []string{"imgmount commit"}
	if cf.squash {
		parts = append(parts, "--squash")
	}
	for _, kv := range cf.env {
		parts = append(parts, "--env "+strconv.Quote(kv))
	}
	for _, kv := range cf.labels {
		parts = append(parts, "--label "+strconv.Quote(kv))
	}
	for _, name := range []string{"entrypoint", "cmd", "workdir", "user"} {
		if fl.Changed(name) {
			v, _ := fl.GetString(name)
			parts = append(parts, "--"+name+" "+strconv.Quote(v))
		}
	}
	return strings.Join(parts, " ")
}

// createdTime is the new config's time: SOURCE_DATE_EPOCH if set (for
// reproducible images), else now.
func createdTime(getenv env) (time.Time, error) {
	s := getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Now().UTC(), nil
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, usagef("SOURCE_DATE_EPOCH=%q: want a number of seconds since 1970", s)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// tagRE is the shape docker load accepts for RepoTags: lowercase name
// components separated by "/" (the first may be a registry host[:port]),
// then ":tag".
var tagRE = regexp.MustCompile(`^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// normalizeTag checks a --tag value; "name" means "name:latest".
func normalizeTag(t string) (string, error) {
	full := t
	if !strings.Contains(t[strings.LastIndex(t, "/")+1:], ":") {
		full += ":latest"
	}
	if !tagRE.MatchString(full) {
		return "", usagef("commit: --tag %q: want NAME[:TAG], e.g. myapp:1.2 or registry.example:5000/team/app:v1 (lowercase name)", t)
	}
	return full, nil
}

// startRepack is how commit and export begin: check where the output goes,
// find the image (and, for a mountpoint, its upper directory, flushed) and
// open it, unless a signal comes first. The caller ends r; the work (see
// repackRun.work) closes img.
func startRepack(cfg *config, stdout, stderr io.Writer) (*repackRun, *archive.Image, error) {
	if err := checkStdout(cfg.repack.output, stdout); err != nil {
		return nil, nil, err
	}
	r := newRepackRun(stderr)
	img, err := unlessSignalled(r.sigc, func() (*archive.Image, error) {
		if err := resolveSource(cfg, r); err != nil {
			return nil, err
		}
		return openForRepack(cfg, r)
	}, closeImage, r.interrupted)
	if err != nil {
		r.end()
		return nil, nil, err
	}
	return r, img, nil
}

func closeImage(img *archive.Image) { img.Close() }

// runCommit is imgmount commit.
func runCommit(cfg *config, stdout, stderr io.Writer) error {
	rc := cfg.repack
	r, img, err := startRepack(cfg, stdout, stderr)
	if err != nil {
		return err
	}
	defer r.end()
	return r.work(func() error {
		defer img.Close() // here: the work may outlive runCommit (see work)
		thin, err := thinDiffIDs(rc.thinFrom, cfg.cacheDir)
		if err != nil {
			return err
		}
		if thin, err = addHaveLists(thin, rc.have, img); err != nil {
			return err
		}
		out, err := r.create(rc.output, stdout)
		if err != nil {
			return err
		}
		defer out.abort()
		res, err := repack.Commit(img, out.direct(), repack.CommitOptions{
			Upper:       cfg.upper,
			Squash:      rc.squash,
			Format:      rc.format,
			Compression: rc.compression,
			Tags:        rc.tags,
			Message:     rc.message,
			CreatedBy:   rc.createdBy,
			Config:      rc.edits,
			Created:     rc.created,
			ThinFrom:    thin,
			TempDir:     out.scratch,
			Progress:    r.progress,
			Warn:        r.warn,
			Tasks:       r.tasks,
			Free:        out.free(),
			Context:     r.ctx,
		})
		if err != nil {
			return err
		}
		if err := out.finish(); err != nil {
			return err
		}
		r.summary(commitSummary(rc, res))
		// The image ID on stdout, as docker commit prints it (on stderr
		// when the image itself goes to stdout).
		if rc.output == "-" {
			fmt.Fprintln(stderr, res.ConfigDigest)
		} else {
			fmt.Fprintln(stdout, res.ConfigDigest)
		}
		return nil
	})
}

// commitSummary is the line a terminal gets once the commit is written.
func commitSummary(rc *repackConfig, res *repack.CommitResult) string {
	s := fmt.Sprintf("wrote %s: image %s, %d layers", rc.output, res.ConfigDigest, res.Layers)
	switch {
	case res.NewLayer != nil:
		s += fmt.Sprintf(" (new layer %s, %d entries, %d bytes %s)", res.NewLayer.DiffID, res.NewLayer.Entries, res.NewLayer.Size, res.NewLayer.Compression)
	default:
		s += " (no changes: no layer added)"
	}
	if len(res.Omitted) > 0 {
		s += fmt.Sprintf("; %d layer blobs left out (thin: mount with --base)", len(res.Omitted))
	}
	if len(res.Tags) > 0 {
		s += "; tags " + strings.Join(res.Tags, ", ")
	}
	return s
}

// thinDiffIDs collects the diff_ids the --thin-from tarballs hold.
func thinDiffIDs(paths []string, cacheDir string) (map[digest.Digest]bool, error) {
	if len(paths) == 0 {
		return nil, nil
	}
	all := map[digest.Digest]bool{}
	for _, p := range paths {
		ids, err := archive.StoredDiffIDs(p, cacheDir)
		if err != nil {
			return nil, fmt.Errorf("--thin-from: %w", err)
		}
		for d := range ids {
			all[d] = true
		}
	}
	return all, nil
}

// addHaveLists adds to thin the layers of img that the --have lists say
// the receiving side has (with every layer below them, as docker load
// needs).
func addHaveLists(thin map[digest.Digest]bool, lists []string, img *archive.Image) (map[digest.Digest]bool, error) {
	if len(lists) == 0 {
		return thin, nil
	}
	have := repack.NewHave()
	for _, p := range lists {
		h, err := readHaveList(p)
		if err != nil {
			return nil, err
		}
		have.Merge(h)
	}
	if thin == nil {
		thin = map[digest.Digest]bool{}
	}
	diffIDs := make([]digest.Digest, len(img.Layers))
	for i, l := range img.Layers {
		diffIDs[i] = l.DiffID
	}
	for i, out := range have.LeftOut(diffIDs) {
		if out {
			thin[diffIDs[i]] = true
		}
	}
	return thin, nil
}

// openForRepack opens the image the config names.
func openForRepack(cfg *config, r *repackRun) (*archive.Image, error) {
	cfg.tasks = r.tasks
	return archive.Open(cfg.image, cfg.openOptions(r.progress))
}
