package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

type rowDef struct {
	key, name, target string
	full              bool // only in the full set
	fn                func(*config) result
}

var rows = []rowDef{
	{key: "cold", name: "ready to browse, uncompressed docker-archive, cold (no saved index)", target: "≤ 5% of podman", fn: rowCold},
	{key: "warm", name: "the same, second mount (saved index)", target: "≤ 1% of podman", fn: rowWarm},
	{key: "gzip", name: "ready to browse, gzip oci-archive, cold", target: "≤ 20% of umoci; ≤ 1.2× one decompression pass", fn: rowGzip},
	{key: "gz-cold", name: "gzip oci-archive, cold mount: time, and bytes written to the cache dir", target: "≤ 1.0× one gzip -dc pass; cache dir ≤ 5% of the uncompressed size", fn: rowGzCold},
	{key: "gz-warm", name: "the same, second mount (saved index)", target: "≤ 50 ms", full: true, fn: rowGzWarm},
	{key: "tgz", name: "`docker save \\| gzip` of the same image: cold mount, second mount, cache dir", target: "cold ≤ 1.0× one gzip -dc pass; second ≤ 50 ms; cache dir ≤ 5% of the uncompressed size", full: true, fn: rowTgz},
	{key: "gz-readall", name: "read every file of the gzip image's union, fresh mount", target: "≤ 2× the uncompressed image's time; faster than ratarmount", full: true, fn: rowGzReadAll},
	{key: "gz-fio", name: "random 4 KiB reads in a {big} file in a gzip layer (fio, 1 job)", target: "≥ 25% of the uncompressed IOPS", full: true, fn: rowGzFio},
	{key: "zstd", name: "zstd layers in 1 MiB frames: cold mount, read every file", target: "each ≤ the gzip image's figure", full: true, fn: rowZstd},
	{key: "gz-rss", name: "peak RSS of the mount, gzip oci-archive", target: "≤ 1.1× the uncompressed image's + the span cache (128 MiB)", full: true, fn: rowGzRSS},
	{key: "readall", name: "read every file in the union", target: "≤ 1.5× native", fn: rowReadAll},
	{key: "stat", name: "stat every path (`find -ls`)", target: "≤ 2× native", fn: rowStat},
	{key: "seq", name: "sequential read of a {big} file", target: "≥ 70% of native throughput", fn: rowSeq},
	{key: "fio", name: "random 4 KiB reads in a {big} file (fio, 1 job)", target: "≥ 50% of native IOPS", fn: rowFio},
	{key: "many", name: "one layer of {many} small files: cold mount, saved-index mount, peak RSS", target: "peak RSS ≤ 400 B/entry cold, ≤ 150 saved-index mount, ≤ 400 after `find -ls`; saved-index mount ≤ 0.5 s", fn: rowMany},
	{key: "many300k", name: "one layer of 300,000 small files (a second check): peak RSS, cold mount / after `find -ls`", target: "≤ 400 / ≤ 400 B/entry", full: true, fn: rowMany300k},
	{key: "layers", name: "50-layer image with overlapping paths", target: "≤ 5% of podman", fn: rowLayers},
	{key: "commit", name: "commit of a one-file edit (thin / full / squash)", target: "thin independent of image size; full ≤ 1.2× cp; squash ≤ 1.5× tar -c", fn: rowCommit},
	{key: "write", name: "writable mount: untar {untar} into it", target: "≤ 1.0× fuse-overlayfs; aim 1.5× kernel overlayfs", fn: rowWrite},
	{key: "write-runtime", name: "writable mount: untar Go's `src/runtime` into it", target: "≤ 1.0× fuse-overlayfs", full: true, fn: rowWriteRuntime},
}

func rowKeys() []string {
	var ks []string
	for _, r := range rows {
		ks = append(ks, r.key)
	}
	return ks
}

func failed(err error) result {
	return result{imgmount: "error", met: "not measured", notes: []string{"error: " + strings.ReplaceAll(tail(err.Error(), 400), "\n", " ")}}
}

// scratch returns a fresh directory under the run's scratch space.
func (c *config) scratch(name string) string {
	return filepath.Join(c.out, "run", name)
}

// mount mounts img at mnt with imgmount (daemonized: it returns once the
// mount is ready).
func (c *config) mount(img, mnt, cache string, extra ...string) error {
	args := append([]string{"--cache-dir", cache}, extra...)
	args = append(args, img, mnt)
	if b, err := exec.Command(c.bin, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("imgmount %s: %v: %s", strings.Join(args, " "), err, tail(string(b), 400))
	}
	return nil
}

func (c *config) umount(mnt string) error {
	if b, err := exec.Command(c.bin, "-u", mnt).CombinedOutput(); err != nil && isMounted(mnt) {
		return fmt.Errorf("imgmount -u %s: %v: %s", mnt, err, tail(string(b), 300))
	}
	return unmount(mnt)
}

func (c *config) supports(word string) bool {
	b, _ := exec.Command(c.bin, "--help").CombinedOutput()
	return strings.Contains(string(b), word)
}

// browse is what "ready to browse" ends with: the root listed.
func browse(mnt string) error {
	_, err := os.ReadDir(mnt)
	return err
}

// --- podman -------------------------------------------------------------------

type podman struct{ root string }

func (p podman) cmd() string {
	return fmt.Sprintf("podman --root %s --runroot %s --storage-driver overlay --cgroup-manager cgroupfs --events-backend none",
		q(filepath.Join(p.root, "root")), q(filepath.Join(p.root, "run")))
}

func (p podman) reset() error {
	if exists(p.root) {
		_, _ = sh("%s image unmount --all --force 2>/dev/null", p.cmd())
	}
	return resetDir(p.root)
}

// loadMount loads img and mounts the image: what podman needs before the
// image can be browsed. It returns the mount's path.
func (p podman) loadMount(img string) (string, error) {
	out, err := sh(`set -o pipefail; id=$(%[1]s load -i %[2]s | sed -n 's/^Loaded image[^:]*: //p' | head -1); [ -n "$id" ] && %[1]s image mount "$id"`, p.cmd(), q(img))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

func podmanTrial(c *config, img string, cold bool, after func(string) error) trial {
	p := podman{root: c.scratch("podman")}
	return trial{
		setup: func() error {
			if err := p.reset(); err != nil {
				return err
			}
			if cold {
				return dropCaches()
			}
			return nil
		},
		run: func() error {
			m, err := p.loadMount(img)
			if err == nil && after != nil {
				err = after(m)
			}
			return err
		},
		teardown: p.reset,
	}
}

// --- rows 1 and 2: ready to browse ------------------------------------------------

// altsReady measures the alternatives to mounting the Debian docker-archive.
func altsReady(c *config, cold bool) (map[string]time.Duration, []string, error) {
	img := c.debianDocker()
	layers, err := dockerLayers(img)
	if err != nil {
		return nil, nil, err
	}
	dest := c.scratch("extract")
	setup := func() error {
		if err := resetDir(dest); err != nil {
			return err
		}
		if cold {
			return dropCaches()
		}
		return nil
	}
	out := map[string]time.Duration{}
	var order []string
	add := func(name string, d time.Duration, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		out[name] = d
		order = append(order, name)
		return nil
	}
	d, err := measure(c.slow, trial{setup: setup, run: func() error {
		for _, l := range layers {
			// umoci writes its last layer here without the end-of-archive
			// blocks; GNU tar extracts it and then reports the EOF.
			if _, err := sh("tar -xOf %s --occurrence=1 %s | tar -x --recursive-unlink --exclude='.wh.*' -C %s", q(img), q(l), q(dest)); err != nil && !strings.Contains(err.Error(), "Unexpected EOF") {
				return err
			}
		}
		return nil
	}})
	if err := add("tar -x of each layer", d, err); err != nil {
		return nil, nil, err
	}
	d, err = measure(c.slow, trial{setup: setup, run: func() error {
		_, err := sh("skopeo copy -q docker-archive:%s oci:%s/layout:x && umoci unpack --image %s/layout:x %s/bundle", q(img), q(dest), q(dest), q(dest))
		return err
	}})
	if err := add("skopeo copy to OCI + umoci unpack", d, err); err != nil {
		return nil, nil, err
	}
	d, err = measure(c.slow, podmanTrial(c, img, cold, nil))
	if err := add("podman load + image mount", d, err); err != nil {
		return nil, nil, err
	}
	_ = resetDir(dest)
	return out, order, nil
}

func imgmountReady(c *config, img string, cold bool) (time.Duration, error) {
	mnt, cache := c.scratch("mnt"), c.scratch("cache")
	if err := resetDir(mnt); err != nil {
		return 0, err
	}
	if !cold {
		// One mount to save the index and remember the layer checks.
		if err := resetDir(cache); err != nil {
			return 0, err
		}
		if err := c.mount(img, mnt, cache); err != nil {
			return 0, err
		}
		if err := c.umount(mnt); err != nil {
			return 0, err
		}
	}
	return measure(c.runs, trial{
		setup: func() error {
			if cold {
				if err := resetDir(cache); err != nil {
					return err
				}
				return dropCaches()
			}
			return nil
		},
		run: func() error {
			if err := c.mount(img, mnt, cache); err != nil {
				return err
			}
			return browse(mnt)
		},
		teardown: func() error { return c.umount(mnt) },
	})
}

func readyRow(c *config, cold bool, limit float64) result {
	im, err := imgmountReady(c, c.debianDocker(), cold)
	if err != nil {
		return failed(err)
	}
	alts, order, err := altsReady(c, cold)
	if err != nil {
		return failed(err)
	}
	r := result{imgmount: fmtDur(im)}
	for _, k := range order {
		r.alts = append(r.alts, fmt.Sprintf("%s %s (%s)", k, fmtDur(alts[k]), ratio(im.Seconds(), alts[k].Seconds())))
	}
	pod := alts["podman load + image mount"]
	r.met = verdict(im.Seconds() <= limit*pod.Seconds(), fmt.Sprintf("%s of podman", ratio(im.Seconds(), pod.Seconds())))
	fi, _ := os.Stat(c.debianDocker())
	if fi != nil && cold {
		r.notes = append(r.notes, fmt.Sprintf("the image is %s with %d layers (debootstrap bookworm minbase plus three umoci layers; integration/testdata/debian.sh); cold = page cache dropped before every run, and for imgmount an empty cache directory (index built, layers hashed against their diff_ids)", fmtBytes(float64(fi.Size())), 4))
	}
	return r
}

func verdict(ok bool, detail string) string {
	if ok {
		return "yes (" + detail + ")"
	}
	return "**no** (" + detail + ")"
}

func rowCold(c *config) result { return readyRow(c, true, 0.05) }
func rowWarm(c *config) result { return readyRow(c, false, 0.01) }

// --- row 3: gzip oci-archive ----------------------------------------------------

func rowGzip(c *config) result {
	img := c.debianOCIGzip()
	cold, err := imgmountColdCache(c, img) // shared with the gz-cold row
	if err != nil {
		return failed(err)
	}
	im := cold.d
	_, blobs, err := gzipLayout(c)
	if err != nil {
		return failed(err)
	}
	dest := c.scratch("gzip-dest")
	umoci, err := umociGzip(c)
	if err != nil {
		return failed(err)
	}
	gz, err := measure(c.runs, trial{setup: func() error { return errs(resetDir(dest), dropCaches()) }, run: func() error {
		for i, b := range blobs {
			if _, err := sh("gzip -dc %s > %s/%d.tar", q(b), q(dest), i); err != nil {
				return err
			}
		}
		return nil
	}})
	if err != nil {
		return failed(err)
	}
	_ = resetDir(dest)
	r := result{imgmount: fmtDur(im), alts: []string{
		fmt.Sprintf("umoci unpack (of the archive already untarred to a layout) %s (%s)", fmtDur(umoci), ratio(im.Seconds(), umoci.Seconds())),
		fmt.Sprintf("gzip -dc of the %d layers into files, one after the other %s (%s)", len(blobs), fmtDur(gz), ratio(im.Seconds(), gz.Seconds())),
	}}
	ok := im.Seconds() <= 0.2*umoci.Seconds() && im.Seconds() <= 1.2*gz.Seconds()
	r.met = verdict(ok, fmt.Sprintf("%s of umoci, %s of gzip -dc", ratio(im.Seconds(), umoci.Seconds()), ratio(im.Seconds(), gz.Seconds())))
	return r
}

// --- rows 4 and 5: whole-tree walks -------------------------------------------------

// walkRow times fn over the imgmount union (fresh mount per run, saved
// index), the native union, and ratarmount and archivemount on the base
// layer's tar (fresh mount per run).
func walkRow(c *config, fn func(dir string) error, limit float64, what string) result {
	img := c.debianDocker()
	mnt, cache := c.scratch("mnt"), c.scratch("cache")
	if err := resetDir(mnt); err != nil {
		return failed(err)
	}
	if err := resetDir(cache); err != nil {
		return failed(err)
	}
	if err := c.mount(img, mnt, cache); err != nil { // saves the index
		return failed(err)
	}
	if err := c.umount(mnt); err != nil {
		return failed(err)
	}
	im, err := measure(c.runs, trial{
		setup:    func() error { return c.mount(img, mnt, cache) },
		run:      func() error { return fn(mnt) },
		teardown: func() error { return c.umount(mnt) },
	})
	if err != nil {
		return failed(err)
	}
	nat := c.nativeDebian()
	if err := fn(nat); err != nil { // warm the page cache
		return failed(err)
	}
	native, err := measure(c.runs, trial{run: func() error { return fn(nat) }})
	if err != nil {
		return failed(err)
	}
	r := result{imgmount: fmt.Sprintf("%s (%s native)", fmtDur(im), ratio(im.Seconds(), native.Seconds()))}
	r.alts = append(r.alts, fmt.Sprintf("native (the union extracted on local disk) %s", fmtDur(native)))
	base := c.debianLayerTar(0)
	if c.ratar != "" {
		d, err := fuseTarTrial(c, "ratarmount", ratarmountArgv(c, base), fn)
		if err != nil {
			r.alts = append(r.alts, "ratarmount: failed ("+tail(err.Error(), 200)+")")
		} else {
			r.alts = append(r.alts, fmt.Sprintf("ratarmount, base layer only, ×1 %s (%s native)", fmtDur(d), ratio(d.Seconds(), native.Seconds())))
		}
	} else {
		r.alts = append(r.alts, "ratarmount: not run ($RATARMOUNT unset)")
	}
	if c.quick {
		r.alts = append(r.alts, "archivemount: full set only (it takes about a minute here)")
		r.met = verdict(im.Seconds() <= limit*native.Seconds(), ratio(im.Seconds(), native.Seconds())+" native")
		r.notes = append(r.notes, what)
		return r
	}
	d, err := fuseTarTrial(c, "archivemount", []string{"archivemount", "-f", "-o", "ro,readonly", base}, fn)
	if err != nil {
		r.alts = append(r.alts, "archivemount: failed ("+tail(err.Error(), 200)+")")
	} else {
		r.alts = append(r.alts, fmt.Sprintf("archivemount, base layer only, ×1 %s (%s native)", fmtDur(d), ratio(d.Seconds(), native.Seconds())))
	}
	r.met = verdict(im.Seconds() <= limit*native.Seconds(), ratio(im.Seconds(), native.Seconds())+" native")
	r.notes = append(r.notes, what)
	return r
}

// fuseTarTrial mounts a tar with another FUSE tool (argv + mountpoint, in
// the foreground so that we hold its pid) before each run, untimed, and
// times fn on the mount.
func fuseTarTrial(c *config, name string, argv []string, fn func(string) error) (time.Duration, error) {
	mnt := c.scratch("mnt-" + name)
	if err := resetDir(mnt); err != nil {
		return 0, err
	}
	var p *bg
	return measure(1, trial{
		setup: func() error {
			var err error
			args := append(append([]string{}, argv[1:]...), mnt)
			if p, err = startBG(argv[0], args...); err != nil {
				return err
			}
			if err := waitMounted(mnt, 10*time.Minute); err != nil {
				return fmt.Errorf("%w: %s", err, tail(p.out.String(), 300))
			}
			return nil
		},
		run: func() error { return fn(mnt) },
		teardown: func() error {
			err := unmount(mnt)
			if serr := p.stop(); err == nil {
				err = serr
			}
			return err
		},
	})
}

func rowReadAll(c *config) result {
	return walkRow(c, func(dir string) error {
		_, err := readAll(dir)
		return err
	}, 1.5, "every regular file opened and read to the end with 1 MiB reads (a Go walker); imgmount is remounted (saved index) before each run, so its kernel page cache starts empty while the native files are in the page cache; ratarmount and archivemount serve only layer 0's tar, which holds most of the image")
}

func rowStat(c *config) result {
	return walkRow(c, func(dir string) error {
		_, err := sh("find %s -ls > /dev/null", q(dir))
		return err
	}, 2, "`find DIR -ls > /dev/null`; imgmount is remounted (saved index) before each run; the native tree's inodes and dentries are cached")
}

// --- rows 6 and 7: one big file -----------------------------------------------------

// bigSetup mounts the big-file image (fresh cache, first mount untimed)
// and extracts the same file natively; it returns the two paths.
func bigSetup(c *config) (mounted, native string, err error) {
	mnt, cache := c.scratch("mnt"), c.scratch(fmt.Sprintf("cache-big-%dm", c.sizes().bigFile>>20))
	if err := resetDir(mnt); err != nil {
		return "", "", err
	}
	if !exists(cache) {
		if err := c.mount(c.bigImage(), mnt, cache); err != nil {
			return "", "", err
		}
		if err := c.umount(mnt); err != nil {
			return "", "", err
		}
	}
	nat := c.scratch(fmt.Sprintf("native-big-%dm", c.sizes().bigFile>>20))
	if !exists(filepath.Join(nat, "data", "big.bin")) {
		if err := resetDir(nat); err != nil {
			return "", "", err
		}
		layers, err := dockerLayers(c.bigImage())
		if err != nil {
			return "", "", err
		}
		if _, err := sh("tar -xOf %s --occurrence=1 %s | tar -x -C %s", q(c.bigImage()), q(layers[0]), q(nat)); err != nil {
			return "", "", err
		}
	}
	return mnt, filepath.Join(nat, "data", "big.bin"), nil
}

func rowSeq(c *config) result {
	mnt, nat, err := bigSetup(c)
	if err != nil {
		return failed(err)
	}
	cache := c.scratch(fmt.Sprintf("cache-big-%dm", c.sizes().bigFile>>20))
	size := float64(c.sizes().bigFile)
	im, err := measure(c.runs, trial{
		setup: func() error { return c.mount(c.bigImage(), mnt, cache) },
		run: func() error {
			n, err := readFile(filepath.Join(mnt, "data", "big.bin"))
			if err == nil && n != int64(size) {
				err = fmt.Errorf("read %d bytes of a %d-byte file", n, int64(size))
			}
			return err
		},
		teardown: func() error { return c.umount(mnt) },
	})
	if err != nil {
		return failed(err)
	}
	if _, err := readFile(nat); err != nil {
		return failed(err)
	}
	native, err := measure(c.runs, trial{run: func() error { _, err := readFile(nat); return err }})
	if err != nil {
		return failed(err)
	}
	// A second read on the same mount comes from the kernel's page cache
	// (FOPEN_KEEP_CACHE).
	if err := c.mount(c.bigImage(), mnt, cache); err != nil {
		return failed(err)
	}
	p := filepath.Join(mnt, "data", "big.bin")
	_, _ = readFile(p)
	again, err := measure(c.runs, trial{run: func() error { _, err := readFile(p); return err }})
	_ = c.umount(mnt)
	if err != nil {
		return failed(err)
	}
	tput := func(d time.Duration) float64 { return size / d.Seconds() / (1 << 20) }
	r := result{
		row:      "",
		imgmount: fmt.Sprintf("%.0f MiB/s first read after mounting; %.0f MiB/s reread (kernel page cache kept)", tput(im), tput(again)),
		alts:     []string{fmt.Sprintf("native (extracted on local disk, page cache warm) %.0f MiB/s (imgmount %s)", tput(native), ratio(tput(im), tput(native)))},
	}
	r.met = verdict(tput(im) >= 0.7*tput(native), ratio(tput(im), tput(native))+" of native on the first read")
	r.notes = append(r.notes, fmt.Sprintf("a %s file of random bytes in an uncompressed layer, read with 1 MiB read(2)s", fmtBytes(size)))
	return r
}

func rowFio(c *config) result {
	mnt, nat, err := bigSetup(c)
	if err != nil {
		return failed(err)
	}
	cache := c.scratch(fmt.Sprintf("cache-big-%dm", c.sizes().bigFile>>20))
	secs := 5
	if c.quick {
		secs = 2
	}
	fio := func(p string) (float64, error) { return fioIOPS(p, secs) }
	var ims, nats []float64
	for i := 0; i < c.slow; i++ {
		if err := c.mount(c.bigImage(), mnt, cache); err != nil {
			return failed(err)
		}
		v, err := fio(filepath.Join(mnt, "data", "big.bin"))
		_ = c.umount(mnt)
		if err != nil {
			return failed(err)
		}
		ims = append(ims, v)
	}
	if _, err := readFile(nat); err != nil {
		return failed(err)
	}
	for i := 0; i < c.slow; i++ {
		v, err := fio(nat)
		if err != nil {
			return failed(err)
		}
		nats = append(nats, v)
	}
	im, native := medianF(ims), medianF(nats)
	r := result{
		imgmount: fmt.Sprintf("%.0f IOPS", im),
		alts:     []string{fmt.Sprintf("native (extracted, page cache warm) %.0f IOPS (imgmount %s)", native, ratio(im, native))},
	}
	r.met = verdict(im >= 0.5*native, ratio(im, native)+" of native")
	r.notes = append(r.notes, fmt.Sprintf("fio randread, bs=4k, psync, 1 job, %d s time-based, invalidate=0, on a fresh mount each run (natively the page cache fills as reads go; imgmount pushes the whole file into it once reads jump around)", secs))
	return r
}

// --- row 8: small files (a million; and 300,000) ---------------------------------------

// rssMount mounts img in the foreground (so that we know the serving
// process) and returns its peak and current RSS in bytes after the mount
// and after `find -ls` over it, and the mount time.
func rssMount(c *config, img, cache string) (mountT time.Duration, hwmMount, hwmFind int64, err error) {
	mnt := c.scratch("mnt-rss")
	if err := resetDir(mnt); err != nil {
		return 0, 0, 0, err
	}
	p, mountT, end, err := serveFG(mnt, c.bin, "-f", "--cache-dir", cache, img)
	if err != nil {
		return 0, 0, 0, err
	}
	defer end()
	if hwmMount, err = p.peakRSS(); err != nil {
		return 0, 0, 0, err
	}
	if _, err := sh("find %s -ls > /dev/null", q(mnt)); err != nil {
		return 0, 0, 0, err
	}
	hwmFind, err = p.peakRSS()
	return mountT, hwmMount, hwmFind, err
}

// many300k is the file count of the second small-files row (issue 13).
const many300k = 300_000

// manyEntries is the number of entries of bench.ManyFilesLayer(n): the
// files, their directories and files/.
func manyEntries(n int) float64 { return float64(n + n/1000 + 1) }

// rssCold is rssMount with an empty cache directory (no saved index).
func rssCold(c *config, img string) (mountT time.Duration, hwmMount, hwmFind int64, err error) {
	cache := c.scratch("cache-many-rss")
	if err := resetDir(cache); err != nil {
		return 0, 0, 0, err
	}
	defer os.RemoveAll(cache)
	return rssMount(c, img, cache)
}

// manyLayerTar writes the one layer of the small-files image img out as a
// plain tar, for archivemount and ratarmount; the caller removes it.
func manyLayerTar(c *config, img string) (string, error) {
	layers, err := dockerLayers(img)
	if err != nil {
		return "", err
	}
	lt := filepath.Join(c.out, "run", strings.TrimSuffix(filepath.Base(img), ".tar")+"-layer.tar")
	if _, err := sh("tar -xOf %s --occurrence=1 %s > %s", q(img), q(layers[0]), q(lt)); err != nil {
		return "", err
	}
	return lt, nil
}

// fuseTarRSS mounts a tar once with another FUSE tool (argv, in the
// foreground; the mountpoint is appended) and returns the time until its
// root is listed and the process's peak RSS (VmHWM) in bytes then.
func fuseTarRSS(c *config, name string, argv []string) (time.Duration, int64, error) {
	mnt := c.scratch("mnt-" + name)
	if err := resetDir(mnt); err != nil {
		return 0, 0, err
	}
	p, d, end, err := serveFG(mnt, argv...)
	if err != nil {
		return 0, 0, err
	}
	defer end()
	hwm, err := p.peakRSS()
	return d, hwm, err
}

// ratarRSS is fuseTarRSS of ratarmount on the layer tar lt, building its
// index (next to lt, removed before and after).
func ratarRSS(c *config, lt string) (time.Duration, int64, error) {
	_ = os.Remove(lt + ".index.sqlite")
	defer os.Remove(lt + ".index.sqlite")
	return fuseTarRSS(c, "ratarmount", ratarmountArgv(c, lt))
}

func rowMany(c *config) result {
	n := c.sizes().manyFiles
	img := c.manyImageN(n)
	entries := manyEntries(n)
	mnt, cache := c.scratch("mnt"), c.scratch("cache-many")
	if err := resetDir(mnt); err != nil {
		return failed(err)
	}
	cold, err := measure(c.slow, trial{
		setup: func() error {
			if err := resetDir(cache); err != nil {
				return err
			}
			return dropCaches()
		},
		run:      func() error { return errs(c.mount(img, mnt, cache), browse(mnt)) },
		teardown: func() error { return c.umount(mnt) },
	})
	if err != nil {
		return failed(err)
	}
	warm, err := measure(c.runs, trial{
		run:      func() error { return errs(c.mount(img, mnt, cache), browse(mnt)) },
		teardown: func() error { return c.umount(mnt) },
	})
	if err != nil {
		return failed(err)
	}
	_, hwmSaved, hwmFind, err := rssMount(c, img, cache)
	if err != nil {
		return failed(err)
	}
	_, hwmCold, hwmColdFind, err := rssCold(c, img)
	if err != nil {
		return failed(err)
	}
	perCold, perSaved, perFind := float64(hwmCold)/entries, float64(hwmSaved)/entries, float64(hwmFind)/entries
	r := result{imgmount: fmt.Sprintf("cold mount %s; saved-index mount %s; peak RSS %.0f B/entry (cold), %.0f B/entry (saved index), %.0f B/entry after `find -ls` of everything (saved-index mount; %.0f on the cold one)",
		fmtDur(cold), fmtDur(warm), perCold, perSaved, perFind, float64(hwmColdFind)/entries)}

	dest := c.scratch("many-extract")
	layers, err := dockerLayers(img)
	if err != nil {
		return failed(err)
	}
	tarx, err := measure(1, trial{
		setup: func() error { return errs(resetDir(dest), dropCaches()) },
		run: func() error {
			_, err := sh("tar -xOf %s --occurrence=1 %s | tar -x -C %s", q(img), q(layers[0]), q(dest))
			return err
		},
		teardown: func() error { return resetDir(dest) },
	})
	if err != nil {
		return failed(err)
	}
	_ = os.RemoveAll(dest)
	r.alts = append(r.alts, fmt.Sprintf("tar -x of the layer, cold, ×1 %s (cold mount %s)", fmtDur(tarx), ratio(cold.Seconds(), tarx.Seconds())))

	// archivemount and ratarmount on the layer tar: mount time and peak RSS.
	lt, err := manyLayerTar(c, img)
	if err != nil {
		return failed(err)
	}
	defer os.Remove(lt)
	if d, hwm, err := fuseTarRSS(c, "archivemount", []string{"archivemount", "-f", "-o", "ro,readonly", lt}); err != nil {
		r.alts = append(r.alts, "archivemount: failed ("+tail(err.Error(), 200)+")")
	} else {
		r.alts = append(r.alts, fmt.Sprintf("archivemount of the layer tar, ×1: mount %s (saved-index mount %s), peak RSS %.0f B/entry", fmtDur(d), ratio(warm.Seconds(), d.Seconds()), float64(hwm)/entries))
	}
	if c.ratar == "" {
		r.alts = append(r.alts, "ratarmount: not run ($RATARMOUNT unset)")
	} else if d, hwm, err := ratarRSS(c, lt); err != nil {
		r.alts = append(r.alts, "ratarmount: failed ("+tail(err.Error(), 200)+")")
	} else {
		r.alts = append(r.alts, fmt.Sprintf("ratarmount of the layer tar, first mount (builds its index), ×1: %s (cold mount %s), peak RSS %.0f B/entry", fmtDur(d), ratio(cold.Seconds(), d.Seconds()), float64(hwm)/entries))
	}
	r.met = strings.Join([]string{
		"cold: " + verdict(perCold <= 400, fmt.Sprintf("%.0f B/entry", perCold)),
		"saved index: " + verdict(perSaved <= 150, fmt.Sprintf("%.0f B/entry", perSaved)),
		"after `find -ls`: " + verdict(perFind <= 400, fmt.Sprintf("%.0f B/entry", perFind)),
		"saved-index mount: " + verdict(warm <= 500*time.Millisecond, fmtDur(warm)),
	}, "<br>")
	r.notes = append(r.notes, fmt.Sprintf("%s files of 0 to 1,023 bytes in %s directories, one uncompressed layer; peak RSS is the serving process's VmHWM once the mount is ready (and after `find -ls` has made the kernel look up every path), per entry (files and directories); cold = an empty cache directory", groupDigits(n), groupDigits(n/1000)))
	return r
}

// rowMany300k is issue 13's second check of memory per entry: the many
// row's layer with 300,000 files, peak RSS of a cold mount before and
// after `find -ls`.
func rowMany300k(c *config) result {
	img := c.manyImageN(many300k)
	entries := manyEntries(many300k)
	mountT, hwm, hwmFind, err := rssCold(c, img)
	if err != nil {
		return failed(err)
	}
	perCold, perFind := float64(hwm)/entries, float64(hwmFind)/entries
	r := result{imgmount: fmt.Sprintf("peak RSS %.0f B/entry once the cold mount is ready (%s), %.0f B/entry after `find -ls` of everything", perCold, fmtDur(mountT), perFind)}
	if c.ratar == "" {
		r.alts = append(r.alts, "ratarmount: not run ($RATARMOUNT unset)")
	} else if lt, err := manyLayerTar(c, img); err != nil {
		r.alts = append(r.alts, "ratarmount: failed ("+tail(err.Error(), 200)+")")
	} else {
		d, rhwm, err := ratarRSS(c, lt)
		_ = os.Remove(lt)
		if err != nil {
			r.alts = append(r.alts, "ratarmount: failed ("+tail(err.Error(), 200)+")")
		} else {
			r.alts = append(r.alts, fmt.Sprintf("ratarmount of the layer tar, first mount (builds its index), ×1: %s, peak RSS %.0f B/entry (imgmount cold: %s)", fmtDur(d), float64(rhwm)/entries, ratio(perCold, float64(rhwm)/entries)))
		}
	}
	r.met = strings.Join([]string{
		"cold: " + verdict(perCold <= 400, fmt.Sprintf("%.0f B/entry", perCold)),
		"after `find -ls`: " + verdict(perFind <= 400, fmt.Sprintf("%.0f B/entry", perFind)),
	}, "<br>")
	r.notes = append(r.notes, fmt.Sprintf("the many row's generator with %s files (%d directories of 1,000 files of 0 to 1,023 bytes, one uncompressed layer); one mount with an empty cache directory, `find -ls` on that same mount; per entry as in the many row", groupDigits(many300k), many300k/1000))
	return r
}

func errs(es ...error) error {
	for _, e := range es {
		if e != nil {
			return e
		}
	}
	return nil
}

// --- row 9: fifty layers ----------------------------------------------------------------

func rowLayers(c *config) result {
	img := c.layersImage()
	mnt, cache := c.scratch("mnt"), c.scratch("cache-layers")
	if err := resetDir(mnt); err != nil {
		return failed(err)
	}
	find := func(dir string) error {
		_, err := sh("find %s -ls > /dev/null", q(dir))
		return err
	}
	var findT []time.Duration
	mountT, err := measure(c.runs, trial{
		setup: func() error { return resetDir(cache) },
		run:   func() error { return errs(c.mount(img, mnt, cache), browse(mnt)) },
		teardown: func() error {
			t := time.Now()
			err := find(mnt)
			findT = append(findT, time.Since(t))
			return errs(err, c.umount(mnt))
		},
	})
	if err != nil {
		return failed(err)
	}
	var podFind []time.Duration
	pod, err := measure(c.slow, podmanTrial(c, img, false, func(m string) error {
		t := time.Now()
		err := find(m)
		podFind = append(podFind, time.Since(t))
		return err
	}))
	if err != nil {
		return failed(err)
	}
	// podmanTrial timed load + mount + find: take the find back out.
	podMount := pod - median(podFind)
	im := median(findT)
	r := result{imgmount: fmt.Sprintf("mount %s (no saved index), then `find -ls` %s", fmtDur(mountT), fmtDur(im))}
	r.alts = append(r.alts, fmt.Sprintf("podman load + image mount %s (%s), then `find -ls` %s", fmtDur(podMount), ratio(mountT.Seconds(), podMount.Seconds()), fmtDur(median(podFind))))
	r.met = verdict(mountT.Seconds() <= 0.05*podMount.Seconds(), ratio(mountT.Seconds(), podMount.Seconds())+" of podman's load + mount")
	s := c.sizes()
	r.notes = append(r.notes, fmt.Sprintf("%d uncompressed layers over %d shared directories; each layer rewrites about a quarter of %d shared files, every fifth whites out 20 files and an earlier layer's own directory", s.layers, s.layerDirs, s.layerFiles))
	return r
}

// --- row 10: commit ------------------------------------------------------------------------

func rowCommit(c *config) result {
	if !c.supports("commit") || !c.supports("--upper") {
		return result{imgmount: "n/a (not implemented)", met: "n/a (not implemented)"}
	}
	img := c.debianDocker()
	mnt, cache, upper := c.scratch("mnt"), c.scratch("cache-commit"), c.scratch("upper-commit")
	edit := func(image string) error {
		if err := errs(resetDir(mnt), resetDir(upper)); err != nil {
			return err
		}
		if err := c.mount(image, mnt, cache, "--upper", upper); err != nil {
			return err
		}
		err := os.WriteFile(filepath.Join(mnt, "etc", "motd"), []byte("edited by the benchmark\n"), 0o644)
		if err != nil {
			err = os.WriteFile(filepath.Join(mnt, "edited.txt"), []byte("edited by the benchmark\n"), 0o644)
		}
		return errs(err, c.umount(mnt))
	}
	outTar := c.scratch("commit-out") + ".tar"
	commit := func(image string, extra ...string) (time.Duration, error) {
		if err := edit(image); err != nil {
			return 0, err
		}
		args := append([]string{"commit", "--cache-dir", cache, image, "--upper", upper, "-o", outTar}, extra...)
		return measure(c.runs, trial{
			setup: func() error { os.Remove(outTar); return nil },
			run: func() error {
				if b, err := exec.Command(c.bin, args...).CombinedOutput(); err != nil {
					return fmt.Errorf("imgmount %s: %v: %s", strings.Join(args, " "), err, tail(string(b), 300))
				}
				return nil
			},
		})
	}
	thin, err := commit(img, "--thin-from", img)
	if err != nil {
		return failed(err)
	}
	thinBig, err := commit(c.bigImage(), "--thin-from", c.bigImage())
	if err != nil {
		return failed(err)
	}
	full, err := commit(img)
	if err != nil {
		return failed(err)
	}
	squash, err := commit(img, "--squash")
	if err != nil {
		return failed(err)
	}
	os.Remove(outTar)
	cp, err := measure(c.runs, trial{run: func() error { _, err := sh("cp %s %s", q(img), q(outTar)); return err }, teardown: func() error { return os.Remove(outTar) }})
	if err != nil {
		return failed(err)
	}
	tarc, err := measure(c.runs, trial{run: func() error { _, err := sh("tar -cf %s -C %s .", q(outTar), q(c.nativeDebian())); return err }, teardown: func() error { return os.Remove(outTar) }})
	if err != nil {
		return failed(err)
	}
	// umoci repack of the same edit on an unpacked bundle.
	work := c.scratch("umoci-repack")
	umoci, err := measure(c.slow, trial{
		setup: func() error {
			if err := resetDir(work); err != nil {
				return err
			}
			_, err := sh("cp -a %s %s/layout && umoci unpack --image %s/layout:bookworm %s/bundle && echo 'edited by the benchmark' > %s/bundle/rootfs/etc/motd",
				q(c.debianLayout()), q(work), q(work), q(work), q(work))
			return err
		},
		run: func() error {
			_, err := sh("umoci repack --image %s/layout:bookworm %s/bundle", q(work), q(work))
			return err
		},
		teardown: func() error { return resetDir(work) },
	})
	if err != nil {
		return failed(err)
	}
	_ = os.RemoveAll(work)
	r := result{imgmount: fmt.Sprintf("thin %s (on the %s image: %s); full %s; squash %s", fmtDur(thin), fmtBytes(float64(c.sizes().bigFile)), fmtDur(thinBig), fmtDur(full), fmtDur(squash))}
	r.alts = []string{
		fmt.Sprintf("umoci repack of the same edit, ×%d %s (thin %s)", c.slow, fmtDur(umoci), ratio(thin.Seconds(), umoci.Seconds())),
		fmt.Sprintf("cp of the tarball %s (full %s)", fmtDur(cp), ratio(full.Seconds(), cp.Seconds())),
		fmt.Sprintf("tar -c of the extracted rootfs %s (squash %s)", fmtDur(tarc), ratio(squash.Seconds(), tarc.Seconds())),
	}
	sizeIndep := thinBig.Seconds() <= 2*thin.Seconds()+0.05
	r.met = strings.Join([]string{
		"thin: " + verdict(sizeIndep, fmt.Sprintf("%s; %s on the bigger image", fmtDur(thin), fmtDur(thinBig))),
		"full: " + verdict(full.Seconds() <= 1.2*cp.Seconds(), ratio(full.Seconds(), cp.Seconds())+" of cp"),
		"squash: " + verdict(squash.Seconds() <= 1.5*tarc.Seconds(), ratio(squash.Seconds(), tarc.Seconds())+" of tar -c"),
	}, "<br>")
	return r
}

// --- row 11: writable mount ------------------------------------------------------------------

func rowWrite(c *config) result { return writeRow(c, c.sizes().untarSource, true) }

// rowWriteRuntime is the full set's second writable row, on a smaller tree
// (the quick set's write row already is this one).
func rowWriteRuntime(c *config) result { return writeRow(c, goRuntimeSrc, false) }

// goTree names a directory of the Go tree the way the table does: Go's
// `src/runtime`.
func goTree(dir string) string {
	if rel, ok := strings.CutPrefix(dir, "/usr/local/go/"); ok {
		return "Go's `" + rel + "`"
	}
	return "`" + dir + "`"
}

// writeRow times `tar -xf` of a tar of the directory dir into the
// writable mount, against fuse-overlayfs and kernel overlayfs over the
// extracted layers. The target is fuse-overlayfs's time; with aimKernel
// the ratio to kernel overlayfs is reported against issue 13's aim (1.5×).
func writeRow(c *config, dir string, aimKernel bool) result {
	if !c.supports("--upper") {
		return result{imgmount: "n/a (not implemented)", met: "n/a (not implemented)"}
	}
	src := c.untarTar(dir)
	img := c.debianDocker()
	mnt, cache, upper, work := c.scratch("mnt-rw"), c.scratch("cache-rw"), c.scratch("upper-rw"), c.scratch("work-rw")
	untar := func(dir string) error {
		_, err := sh("mkdir -p %s/tmp/untar && tar -xf %s -C %s/tmp/untar", q(dir), q(src), q(dir))
		return err
	}
	if err := resetDir(cache); err != nil {
		return failed(err)
	}
	im, err := measure(c.runs, trial{
		setup: func() error {
			if err := errs(resetDir(mnt), resetDir(upper)); err != nil {
				return err
			}
			return c.mount(img, mnt, cache, "--upper", upper)
		},
		run:      func() error { return untar(mnt) },
		teardown: func() error { return c.umount(mnt) },
	})
	if err != nil {
		return failed(err)
	}
	// Lower directories for the overlays: each layer extracted on its own.
	var lowers []string
	layers, err := dockerLayers(img)
	if err != nil {
		return failed(err)
	}
	for i := range layers {
		d := filepath.Join(c.out, "debian-layers", "l"+strconv.Itoa(i))
		if !exists(d) {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return failed(err)
			}
			if _, err := sh("tar -x --recursive-unlink --exclude='.wh.*' -f %s -C %s", q(c.debianLayerTar(i)), q(d)); err != nil && !strings.Contains(err.Error(), "Unexpected EOF") {
				return failed(err)
			}
		}
		lowers = append([]string{d}, lowers...) // top first
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lowers, ":"), upper, work)
	overlayTrial := func(mountCmd string) trial {
		return trial{
			setup: func() error {
				if err := errs(resetDir(mnt), resetDir(upper), resetDir(work)); err != nil {
					return err
				}
				_, err := sh("%s", mountCmd)
				return err
			},
			run:      func() error { return untar(mnt) },
			teardown: func() error { return unmount(mnt) },
		}
	}
	fo, err := measure(c.slow, overlayTrial(fmt.Sprintf("fuse-overlayfs -o %s %s", q(opts), q(mnt))))
	if err != nil {
		return failed(err)
	}
	ko, err := measure(c.slow, overlayTrial(fmt.Sprintf("mount -t overlay overlay -o %s %s", q(opts), q(mnt))))
	if err != nil {
		return failed(err)
	}
	for _, d := range []string{mnt, upper, work} {
		_ = resetDir(d)
	}
	fi, _ := os.Stat(src)
	r := result{imgmount: fmtDur(im)}
	r.alts = []string{
		fmt.Sprintf("fuse-overlayfs over the extracted layers, ×%d %s (%s)", c.slow, fmtDur(fo), ratio(im.Seconds(), fo.Seconds())),
		fmt.Sprintf("kernel overlayfs over the extracted layers, ×%d %s (%s)", c.slow, fmtDur(ko), ratio(im.Seconds(), ko.Seconds())),
	}
	r.met = verdict(im <= fo, ratio(im.Seconds(), fo.Seconds())+" of fuse-overlayfs's time")
	if aimKernel {
		r.met += fmt.Sprintf("<br>aim ≤ 1.5× kernel overlayfs: %s", ratio(im.Seconds(), ko.Seconds()))
	}
	if fi != nil {
		r.notes = append(r.notes, fmt.Sprintf("`tar -xf` of %s (%s, a tar of %s) into /tmp/untar of the mounted Debian image; no sync", filepath.Base(src), fmtBytes(float64(fi.Size())), dir))
	}
	return r
}

// ratarmountArgv runs $RATARMOUNT (a command line, e.g. "python3 x.py") in
// the foreground on tarball; the mountpoint is appended by the caller.
func ratarmountArgv(c *config, tarball string) []string {
	return ratarmountArgvOpts(c, tarball)
}

// fioIOPS runs fio randread (4 KiB, psync, one job, secs seconds) on p.
func fioIOPS(p string, secs int) (float64, error) {
	out, err := sh("fio --name=randread --filename=%s --readonly --rw=randread --bs=4k --ioengine=psync --numjobs=1 --invalidate=0 --time_based --runtime=%d --output-format=json", q(p), secs)
	if err != nil {
		return 0, err
	}
	var res struct {
		Jobs []struct {
			Read struct{ IOPS float64 } `json:"read"`
		} `json:"jobs"`
	}
	i := strings.Index(out, "{")
	if i < 0 {
		return 0, fmt.Errorf("fio printed no JSON: %s", tail(out, 200))
	}
	if err := json.Unmarshal([]byte(out[i:]), &res); err != nil || len(res.Jobs) == 0 {
		return 0, fmt.Errorf("fio output: %v", err)
	}
	return res.Jobs[0].Read.IOPS, nil
}
