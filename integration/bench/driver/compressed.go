package main

// The compressed-image rows (issue 11): gzip and zstd layers served in
// place, measured against one decompression pass, umoci, ratarmount (with
// indexed_gzip) and imgmount's own uncompressed figures, in the same run.
// Each row reports its ratios and whether the target is met; a missed
// target never fails the run.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/imgmount/imgmount/integration/bench"
)

// Issue 11's targets.
const (
	spanCacheDefault = 128 << 20 // imgmount's default --span-cache
	cacheShareMax    = 0.05      // bytes added to the cache dir / uncompressed size
	warmMax          = 50 * time.Millisecond
)

// --- images ---------------------------------------------------------------------

func (c *config) debianDockerGzip() string { return filepath.Join(c.data, "debian-docker.tar.gz") }

// debianZstdFrames is the Debian image with its layers in zstd frames of
// bench.FrameSize, made from the gzip oci-archive.
func (c *config) debianZstdFrames() string {
	return filepath.Join(c.out, "debian-oci-zstd-frames.tar")
}

// bigText is the {big} file of hex text, uncompressed (a docker-archive)
// and in a gzip layer (an oci-archive).
func (c *config) bigText(comp bench.Compression) string {
	n := c.sizes().bigFile >> 20
	if comp == "" {
		return filepath.Join(c.out, fmt.Sprintf("bigtext-%dm.tar", n))
	}
	return filepath.Join(c.out, fmt.Sprintf("bigtext-%dm-oci-%s.tar", n, comp))
}

func ensureZstdFrames(c *config) error {
	src, dst := c.debianOCIGzip(), c.debianZstdFrames()
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	recipe := fmt.Sprintf("zstd-frames v1 %d %d %d", bench.FrameSize, fi.Size(), fi.ModTime().UnixNano())
	t := time.Now()
	built, err := bench.EnsureOCIArchive(dst, recipe, func() error { return bench.RecompressOCIArchive(src, dst, bench.ZstdFrames) })
	if err != nil {
		return fmt.Errorf("zstd multi-frame image %s: %w", dst, err)
	}
	if built {
		fmt.Printf("built %s (%.1fs)\n", dst, time.Since(t).Seconds())
	}
	return nil
}

func ensureBigText(c *config) error {
	size := c.sizes().bigFile
	layers := []bench.LayerFunc{bench.TextFileLayer(size)}
	t := time.Now()
	built, err := bench.EnsureArchive(c.bigText(""), fmt.Sprintf("bigtext v1 %d", size), "bench/bigtext:latest", layers)
	if err != nil {
		return fmt.Errorf("synthetic image %s: %w", c.bigText(""), err)
	}
	p := c.bigText(bench.Gzip)
	built2, err := bench.EnsureOCIArchive(p, fmt.Sprintf("bigtext gzip v1 %d", size), func() error {
		return bench.WriteOCIArchive(p, "latest", bench.Gzip, layers)
	})
	if err != nil {
		return fmt.Errorf("synthetic image %s: %w", p, err)
	}
	if built || built2 {
		fmt.Printf("built %s and %s (%.1fs)\n", c.bigText(""), p, time.Since(t).Seconds())
	}
	return nil
}

// gzipLayout is the gzip oci-archive untarred to a layout (umoci reads
// layouts only; gzip -dc and ratarmount read its blobs), kept between runs,
// and its layer blobs, base first.
func gzipLayout(c *config) (string, []string, error) {
	layout := filepath.Join(c.out, "debian-oci-gzip-layout")
	if !exists(filepath.Join(layout, "index.json")) || !newer(layout, c.debianOCIGzip()) {
		if err := resetDir(layout); err != nil {
			return "", nil, err
		}
		if _, err := sh("tar -xf %s -C %s", q(c.debianOCIGzip()), q(layout)); err != nil {
			return "", nil, err
		}
	}
	blobs, err := ociLayerBlobs(layout)
	return layout, blobs, err
}

// uncompressedSize is the sum of the sizes of the Debian image's layer
// tars (what its gzip layers decompress to).
func uncompressedLayers(c *config) (int64, error) {
	layers, err := dockerLayers(c.debianDocker())
	if err != nil {
		return 0, err
	}
	var n int64
	for i := range layers {
		fi, err := os.Stat(c.debianLayerTar(i))
		if err != nil {
			return 0, err
		}
		n += fi.Size()
	}
	return n, nil
}

// --- measurements ------------------------------------------------------------------

// memo runs f once per key and run of the driver: rows that need the same
// figure (the issue 4 and issue 11 gzip rows) share one measurement.
func memo[T any](c *config, key string, f func() (T, error)) (T, error) {
	type entry struct {
		v   T
		err error
	}
	if c.memo == nil {
		c.memo = map[string]any{}
	}
	if e, ok := c.memo[key]; ok {
		return e.(entry).v, e.(entry).err
	}
	v, err := f()
	c.memo[key] = entry{v, err}
	return v, err
}

// duBytes is `du -sb DIR`: the bytes under dir, directories included.
func duBytes(dir string) (int64, error) {
	out, err := sh("du -sb %s", q(dir))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(out)
	if len(f) == 0 {
		return 0, fmt.Errorf("du -sb %s: no output", dir)
	}
	return strconv.ParseInt(f[0], 10, 64)
}

type coldMount struct {
	d          time.Duration
	cacheBytes int64 // bytes under the fresh cache dir once the mount is ready
}

// imgmountColdCache mounts img cold (page cache dropped, an empty cache
// dir) c.runs times: the median time to a listed root, and what the mount
// left in its cache dir (the largest of the runs).
func imgmountColdCache(c *config, img string) (coldMount, error) {
	return memo(c, "cold:"+img, func() (coldMount, error) {
		mnt, cache := c.scratch("mnt"), c.scratch("cache-cold")
		if err := resetDir(mnt); err != nil {
			return coldMount{}, err
		}
		var max int64
		d, err := measure(c.runs, trial{
			setup: func() error { return errs(resetDir(cache), dropCaches()) },
			run:   func() error { return errs(c.mount(img, mnt, cache), browse(mnt)) },
			teardown: func() error {
				n, err := duBytes(cache)
				if n > max {
					max = n
				}
				return errs(c.umount(mnt), err)
			},
		})
		_ = os.RemoveAll(cache)
		if err != nil {
			return coldMount{}, err
		}
		empty, err := emptyDirBytes(c)
		return coldMount{d: d, cacheBytes: max - empty}, err
	})
}

// emptyDirBytes is what du -sb counts for an empty directory, taken off
// the cache figures.
func emptyDirBytes(c *config) (int64, error) {
	d := c.scratch("empty")
	if err := resetDir(d); err != nil {
		return 0, err
	}
	defer os.RemoveAll(d)
	return duBytes(d)
}

// umociGzip is umoci unpack of the gzip layout, cold, c.slow runs.
func umociGzip(c *config) (time.Duration, error) {
	return memo(c, "umoci-gzip", func() (time.Duration, error) {
		layout, _, err := gzipLayout(c)
		if err != nil {
			return 0, err
		}
		dest := c.scratch("gzip-dest")
		d, err := measure(c.slow, trial{
			setup: func() error { return errs(resetDir(dest), dropCaches()) },
			run: func() error {
				_, err := sh("umoci unpack --image %s:bookworm %s/bundle", q(layout), q(dest))
				return err
			},
		})
		_ = resetDir(dest)
		return d, err
	})
}

// gunzipPass is one `gzip -dc` pass over files, to /dev/null, cold.
func gunzipPass(c *config, files []string) (time.Duration, error) {
	var qs []string
	for _, f := range files {
		qs = append(qs, q(f))
	}
	return memo(c, "gunzip:"+strings.Join(files, ","), func() (time.Duration, error) {
		return measure(c.runs, trial{
			setup: dropCaches,
			run: func() error {
				_, err := sh("gzip -dc %s > /dev/null", strings.Join(qs, " "))
				return err
			},
		})
	})
}

// ratarReady is ratarmount's time to a listed root on tarball: cold (page
// cache dropped, no index: it builds one) or with the index a first mount
// saved; opts go before the tarball. It reports "" and the reason when ratarmount cannot be run.
func ratarReady(c *config, tarball string, cold bool, opts ...string) (time.Duration, string, error) {
	if c.ratar == "" {
		return 0, "ratarmount: not installed ($RATARMOUNT unset and no ~/.cache/imgmount-dev/ratarmount.sh)", nil
	}
	index := ratarIndex(c, tarball)
	if err := os.MkdirAll(filepath.Dir(index), 0o755); err != nil {
		return 0, "", err
	}
	argv := ratarmountArgvOpts(c, tarball, append([]string{"--index-file", index}, opts...)...)
	mnt := c.scratch("mnt-ratarmount")
	if err := resetDir(mnt); err != nil {
		return 0, "", err
	}
	var p *bg
	up := func() error {
		var err error
		if p, err = startBG(argv[0], append(append([]string{}, argv[1:]...), mnt)...); err != nil {
			return err
		}
		if err := waitMounted(mnt, 5*time.Minute); err != nil {
			return fmt.Errorf("%w: %s", err, tail(p.out.String(), 300))
		}
		return browse(mnt)
	}
	down := func() error { return errs(unmount(mnt), p.stop()) }
	if !cold && !exists(index) {
		if err := up(); err != nil {
			_ = down()
			return 0, "", err
		}
		if err := down(); err != nil {
			return 0, "", err
		}
	}
	d, err := measure(c.slow, trial{
		setup: func() error {
			if cold {
				_ = os.Remove(index)
				return dropCaches()
			}
			return nil
		},
		run:      up,
		teardown: down,
	})
	return d, "", err
}

// ratarIndex is where ratarmount keeps its index of tarball.
func ratarIndex(c *config, tarball string) string {
	return filepath.Join(c.scratch("ratar-index"), filepath.Base(tarball)+".index.sqlite")
}

// ratarmountArgvOpts is ratarmountArgv with options before the tarball.
func ratarmountArgvOpts(c *config, tarball string, opts ...string) []string {
	argv := []string{"bash", "-c", "exec " + c.ratar + ` "$@"`, "ratarmount", "-f"}
	return append(append(argv, opts...), tarball)
}

// readAllFresh is the read of every file of img's union, on a fresh mount
// (saved index, so no decompression pass) before each run.
func readAllFresh(c *config, img, cacheName string) (time.Duration, error) {
	return memo(c, "readall:"+img, func() (time.Duration, error) {
		mnt, cache := c.scratch("mnt"), c.scratch(cacheName)
		if err := errs(resetDir(mnt), resetDir(cache)); err != nil {
			return 0, err
		}
		if err := errs(c.mount(img, mnt, cache), browse(mnt)); err != nil { // saves the index
			return 0, err
		}
		if err := c.umount(mnt); err != nil {
			return 0, err
		}
		return measure(c.runs, trial{
			setup:    func() error { return c.mount(img, mnt, cache) },
			run:      func() error { _, err := readAll(mnt); return err },
			teardown: func() error { return c.umount(mnt) },
		})
	})
}

// shareOf formats n bytes as a share of total.
func shareOf(n, total int64) string {
	if total <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(total))
}

func cacheCell(n, total int64, what string) string {
	return fmt.Sprintf("cache dir +%s (%s of the %s uncompressed %s)", fmtBytes(float64(n)), shareOf(n, total), fmtBytes(float64(total)), what)
}

// --- the rows -------------------------------------------------------------------------

// rowGzCold: cold mount of the gzip oci-archive, and what it writes to
// the cache dir.
func rowGzCold(c *config) result {
	img := c.debianOCIGzip()
	cold, err := imgmountColdCache(c, img)
	if err != nil {
		return failed(err)
	}
	_, blobs, err := gzipLayout(c)
	if err != nil {
		return failed(err)
	}
	total, err := uncompressedLayers(c)
	if err != nil {
		return failed(err)
	}
	gz, err := gunzipPass(c, blobs)
	if err != nil {
		return failed(err)
	}
	um, err := umociGzip(c)
	if err != nil {
		return failed(err)
	}
	im := cold.d.Seconds()
	r := result{imgmount: fmt.Sprintf("%s; %s", fmtDur(cold.d), cacheCell(cold.cacheBytes, total, "layers"))}
	r.alts = []string{
		fmt.Sprintf("gzip -dc of the %d layers to /dev/null %s (%s)", len(blobs), fmtDur(gz), ratio(im, gz.Seconds())),
		fmt.Sprintf("umoci unpack (of the archive already untarred to a layout), ×%d %s (%s)", c.slow, fmtDur(um), ratio(im, um.Seconds())),
	}
	l0 := blobs[0]
	rd, why, err := ratarReady(c, l0, true)
	switch {
	case why != "":
		r.alts = append(r.alts, why)
	case err != nil:
		r.alts = append(r.alts, "ratarmount: failed ("+tail(err.Error(), 200)+")")
	default:
		r.alts = append(r.alts, fmt.Sprintf("ratarmount on layer 0's .tar.gz, first mount (builds its index), ×%d %s (%s)", c.slow, fmtDur(rd), ratio(im, rd.Seconds())))
	}
	r.met = strings.Join([]string{
		"time: " + verdict(im <= gz.Seconds(), ratio(im, gz.Seconds())+" of gzip -dc"),
		"cache: " + verdict(float64(cold.cacheBytes) <= cacheShareMax*float64(total), shareOf(cold.cacheBytes, total)+" of uncompressed"),
	}, "<br>")
	r.notes = append(r.notes, fmt.Sprintf("cold = page cache dropped and an empty `--cache-dir` before every run; cache dir = bytes under it once the mount is ready (`du -sb`, less an empty directory's), against the %s the 4 layers decompress to; gzip -dc is one decompression pass, writing nothing; %s", fmtBytes(float64(total)), spanNote(c)))
	return r
}

// spanNote says how this binary serves compressed layers.
func spanNote(c *config) string {
	if c.supports("--span-cache") {
		return "inflated spans are kept in memory up to `--span-cache` (default 128 MiB)"
	}
	return "this binary's --help has no `--span-cache` yet (its default is to be 128 MiB)"
}

func rowGzWarm(c *config) result {
	img := c.debianOCIGzip()
	im, err := imgmountReady(c, img, false)
	if err != nil {
		return failed(err)
	}
	r := result{imgmount: fmtDur(im)}
	_, blobs, err := gzipLayout(c)
	if err != nil {
		return failed(err)
	}
	rd, why, err := ratarReady(c, blobs[0], false)
	switch {
	case why != "":
		r.alts = append(r.alts, why)
	case err != nil:
		r.alts = append(r.alts, "ratarmount: failed ("+tail(err.Error(), 200)+")")
	default:
		r.alts = append(r.alts, fmt.Sprintf("ratarmount on layer 0's .tar.gz with its saved index, ×%d %s (%s)", c.slow, fmtDur(rd), ratio(im.Seconds(), rd.Seconds())))
	}
	r.met = verdict(im <= warmMax, fmtDur(im))
	return r
}

// rowTgz: `docker save | gzip`, the whole tarball gzipped.
func rowTgz(c *config) result {
	img := c.debianDockerGzip()
	fi, err := os.Stat(c.debianDocker())
	if err != nil {
		return failed(err)
	}
	total := fi.Size()
	cold, err := imgmountColdCache(c, img)
	if err != nil {
		return failed(err)
	}
	warm, err := imgmountReady(c, img, false)
	if err != nil {
		return failed(err)
	}
	gz, err := gunzipPass(c, []string{img})
	if err != nil {
		return failed(err)
	}
	// umoci reads OCI layouts and skopeo no gzipped docker-archive: the
	// tarball is gunzipped first.
	dest := c.scratch("tgz-dest")
	um, err := measure(c.slow, trial{
		setup: func() error { return errs(resetDir(dest), dropCaches()) },
		run: func() error {
			_, err := sh("gzip -dc %s > %s/image.tar && skopeo copy -q docker-archive:%s/image.tar oci:%s/layout:x && umoci unpack --image %s/layout:x %s/bundle",
				q(img), q(dest), q(dest), q(dest), q(dest), q(dest))
			return err
		},
	})
	_ = resetDir(dest)
	if err != nil {
		return failed(err)
	}
	im := cold.d.Seconds()
	r := result{imgmount: fmt.Sprintf("cold %s; second mount %s; %s", fmtDur(cold.d), fmtDur(warm), cacheCell(cold.cacheBytes, total, "tarball"))}
	r.alts = []string{
		fmt.Sprintf("gzip -dc of the tarball to /dev/null %s (cold %s)", fmtDur(gz), ratio(im, gz.Seconds())),
		fmt.Sprintf("gzip -dc + skopeo copy to OCI + umoci unpack, ×%d %s (cold %s)", c.slow, fmtDur(um), ratio(im, um.Seconds())),
	}
	// Depth 2: the tarball and the layer tars in it, each its own tree.
	rc, why, err := ratarReady(c, img, true, "--recursion-depth", "2")
	if why == "" && err == nil {
		var rw time.Duration
		rw, _, err = ratarReady(c, img, false, "--recursion-depth", "2")
		if err == nil {
			r.alts = append(r.alts, fmt.Sprintf("ratarmount --recursion-depth 2 on the .tar.gz (the layer tars as directories, no union), ×%d: first mount %s (cold %s), with its saved index %s (second mount %s)",
				c.slow, fmtDur(rc), ratio(im, rc.Seconds()), fmtDur(rw), ratio(warm.Seconds(), rw.Seconds())))
		}
	}
	switch {
	case why != "":
		r.alts = append(r.alts, why)
	case err != nil:
		r.alts = append(r.alts, "ratarmount: failed ("+tail(err.Error(), 200)+")")
	}
	r.met = strings.Join([]string{
		"cold: " + verdict(im <= gz.Seconds(), ratio(im, gz.Seconds())+" of gzip -dc"),
		"second: " + verdict(warm <= warmMax, fmtDur(warm)),
		"cache: " + verdict(float64(cold.cacheBytes) <= cacheShareMax*float64(total), shareOf(cold.cacheBytes, total)+" of uncompressed"),
	}, "<br>")
	r.notes = append(r.notes, fmt.Sprintf("`gzip -c` of the %s docker-archive (integration/testdata/debian.sh); ratarmount mounts each layer tar in it as a directory of its own (`-r` would also open every .gz inside the layers; skopeo's `<id>/layer.tar` symlinks it cannot open, and their targets are the top-level `<diff_id>.tar` members it does open)", fmtBytes(float64(total))))
	return r
}

// rowGzReadAll: read every file of the gzip image's union.
func rowGzReadAll(c *config) result {
	gzT, err := readAllFresh(c, c.debianOCIGzip(), "cache-readall-gzip")
	if err != nil {
		return failed(err)
	}
	plain, err := readAllFresh(c, c.debianDocker(), "cache-readall-plain")
	if err != nil {
		return failed(err)
	}
	im := gzT.Seconds()
	r := result{imgmount: fmt.Sprintf("%s (%s the uncompressed image's)", fmtDur(gzT), ratio(im, plain.Seconds()))}
	r.alts = []string{fmt.Sprintf("imgmount, the uncompressed docker-archive %s", fmtDur(plain))}
	_, blobs, err := gzipLayout(c)
	if err != nil {
		return failed(err)
	}
	ratarOK := true // no ratarmount: nothing to be faster than
	if c.ratar == "" {
		r.alts = append(r.alts, "ratarmount: not installed ($RATARMOUNT unset and no ~/.cache/imgmount-dev/ratarmount.sh)")
	} else {
		// Its index saved by the second-mount row (or a first mount
		// here); the run mounts again.
		index := ratarIndex(c, blobs[0])
		var err error
		if !exists(index) {
			_, _, err = ratarReady(c, blobs[0], true)
		}
		if err != nil {
			r.alts = append(r.alts, "ratarmount: failed ("+tail(err.Error(), 200)+")")
		} else {
			d, err := fuseTarTrial(c, "ratarmount", ratarmountArgvOpts(c, blobs[0], "--index-file", index), func(dir string) error { _, err := readAll(dir); return err })
			if err != nil {
				r.alts = append(r.alts, "ratarmount: failed ("+tail(err.Error(), 200)+")")
			} else {
				r.alts = append(r.alts, fmt.Sprintf("ratarmount, layer 0's .tar.gz only (saved index), ×1 %s (%s)", fmtDur(d), ratio(im, d.Seconds())))
				ratarOK = gzT < d
			}
		}
	}
	r.met = verdict(im <= 2*plain.Seconds() && ratarOK, ratio(im, plain.Seconds())+" the uncompressed image's")
	if !ratarOK {
		r.met += ", slower than ratarmount"
	}
	r.notes = append(r.notes, "every regular file read to the end with 1 MiB reads; imgmount is remounted (saved index) before each run, its kernel page cache empty; ratarmount serves only layer 0, most of the image")
	return r
}

// rowGzFio: fio random reads in a big file in a gzip layer.
func rowGzFio(c *config) result {
	if err := ensureBigText(c); err != nil {
		return failed(err)
	}
	// Random reads make the mount push the whole file into the page cache
	// (fusefs/prefetch.go), which for a compressed file means inflating
	// all of it: a first fio run of warm seconds lets that happen and is
	// reported on its own; the row's figure is the run after it.
	secs, warm := 5, 10
	if c.quick {
		secs, warm = 2, 5
	}
	var firsts []float64
	iops := func(img, cacheName string) (float64, error) {
		firsts = firsts[:0]
		mnt, cache := c.scratch("mnt"), c.scratch(cacheName)
		if err := resetDir(mnt); err != nil {
			return 0, err
		}
		if !exists(cache) { // the first mount (index, checks) untimed
			if err := errs(c.mount(img, mnt, cache), c.umount(mnt)); err != nil {
				return 0, err
			}
		}
		var vs []float64
		for i := 0; i < c.slow; i++ {
			if err := c.mount(img, mnt, cache); err != nil {
				return 0, err
			}
			first, err := fioIOPS(filepath.Join(mnt, "data", "big.txt"), warm)
			firsts = append(firsts, first)
			var v float64
			if err == nil {
				v, err = fioIOPS(filepath.Join(mnt, "data", "big.txt"), secs)
			}
			if uerr := c.umount(mnt); err == nil {
				err = uerr
			}
			if err != nil {
				return 0, err
			}
			vs = append(vs, v)
		}
		return medianF(vs), nil
	}
	n := c.sizes().bigFile >> 20
	gz, err := iops(c.bigText(bench.Gzip), fmt.Sprintf("cache-bigtext-gzip-%dm", n))
	if err != nil {
		return failed(err)
	}
	gzFirst := medianF(firsts)
	plain, err := iops(c.bigText(""), fmt.Sprintf("cache-bigtext-%dm", n))
	if err != nil {
		return failed(err)
	}
	plainFirst := medianF(firsts)
	r := result{
		imgmount: fmt.Sprintf("%.0f IOPS after the first %d s (%.0f IOPS during them)", gz, warm, gzFirst),
		alts:     []string{fmt.Sprintf("imgmount, the same file in an uncompressed layer %.0f IOPS after the first %d s (%.0f during them) (gzip %s)", plain, warm, plainFirst, ratio(gz, plain))},
	}
	r.met = verdict(gz >= 0.25*plain, ratio(gz, plain)+" of uncompressed")
	fi, _ := os.Stat(c.bigText(bench.Gzip))
	var sz string
	if fi != nil {
		sz = fmt.Sprintf(" (the archive is %s)", fmtBytes(float64(fi.Size())))
	}
	r.notes = append(r.notes, fmt.Sprintf("data/big.txt, %s of random hex digits in lines of 64, which gzip compresses to about half%s, so that every deflate block is Huffman-coded (random bytes would be stored blocks); fio as in the uncompressed row (randread, 4 KiB, psync): a first run of %d s, in which the mount pushes the whole file into the page cache (inflating it), then the measured run of %d s; a fresh mount with a saved index each time, %d runs", fmtBytes(float64(c.sizes().bigFile)), sz, warm, secs, c.slow))
	return r
}

// rowZstd: zstd in 1 MiB frames against the same image with gzip.
func rowZstd(c *config) result {
	if err := ensureZstdFrames(c); err != nil {
		return failed(err)
	}
	zImg, gImg := c.debianZstdFrames(), c.debianOCIGzip()
	zCold, err := imgmountColdCache(c, zImg)
	if err != nil {
		return failed(err)
	}
	gCold, err := imgmountColdCache(c, gImg)
	if err != nil {
		return failed(err)
	}
	zRead, err := readAllFresh(c, zImg, "cache-readall-zstd")
	if err != nil {
		return failed(err)
	}
	gRead, err := readAllFresh(c, gImg, "cache-readall-gzip")
	if err != nil {
		return failed(err)
	}
	total, err := uncompressedLayers(c)
	if err != nil {
		return failed(err)
	}
	r := result{imgmount: fmt.Sprintf("cold mount %s (%s); read every file %s", fmtDur(zCold.d), cacheCell(zCold.cacheBytes, total, "layers"), fmtDur(zRead))}
	r.alts = []string{fmt.Sprintf("imgmount, the same image with gzip layers: cold mount %s (zstd %s); read every file %s (zstd %s)",
		fmtDur(gCold.d), ratio(zCold.d.Seconds(), gCold.d.Seconds()), fmtDur(gRead), ratio(zRead.Seconds(), gRead.Seconds()))}
	r.met = strings.Join([]string{
		"cold: " + verdict(zCold.d <= gCold.d, ratio(zCold.d.Seconds(), gCold.d.Seconds())+" of gzip"),
		"read: " + verdict(zRead <= gRead, ratio(zRead.Seconds(), gRead.Seconds())+" of gzip"),
	}, "<br>")
	fi, _ := os.Stat(zImg)
	if fi != nil {
		r.notes = append(r.notes, fmt.Sprintf("the gzip oci-archive's layers recompressed (klauspost zstd, default level) as independent frames of %s of tar each, manifest and index re-pointed, config unchanged (%s); cold and read as in the rows above", fmtBytes(bench.FrameSize), fmtBytes(float64(fi.Size()))))
	}
	return r
}

// rssRead mounts img in the foreground with an empty cache dir and
// returns the serving process's peak RSS once the mount is ready and after
// every file has been read.
func rssRead(c *config, img string) (ready, afterRead int64, err error) {
	mnt, cache := c.scratch("mnt-rss"), c.scratch("cache-rss")
	if err := errs(resetDir(mnt), resetDir(cache)); err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(cache)
	p, _, end, err := serveFG(mnt, c.bin, "-f", "--cache-dir", cache, img)
	if err != nil {
		return 0, 0, err
	}
	defer end()
	if ready, err = p.peakRSS(); err != nil {
		return 0, 0, err
	}
	if _, err := readAll(mnt); err != nil {
		return 0, 0, err
	}
	afterRead, err = p.peakRSS()
	return ready, afterRead, err
}

func rowGzRSS(c *config) result {
	gR, gA, err := rssRead(c, c.debianOCIGzip())
	if err != nil {
		return failed(err)
	}
	pR, pA, err := rssRead(c, c.debianDocker())
	if err != nil {
		return failed(err)
	}
	mib := func(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
	r := result{
		imgmount: fmt.Sprintf("%s once ready, %s after reading every file", mib(gR), mib(gA)),
		alts:     []string{fmt.Sprintf("imgmount, the uncompressed docker-archive: %s once ready, %s after reading every file (gzip %s)", mib(pR), mib(pA), ratio(float64(gA), float64(pA)))},
	}
	limit := 1.1*float64(pA) + spanCacheDefault
	r.met = verdict(float64(gA) <= limit, fmt.Sprintf("%s over the uncompressed case, limit %s", mib(gA-pA), mib(int64(limit)-pA)))
	r.notes = append(r.notes, "VmHWM of the serving process (`imgmount -f`), an empty cache dir each; "+spanNote(c))
	return r
}
