package fusefs

import (
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/imgmount/imgmount/tarindex"
)

// Every READ the kernel sends is a round trip through this process, and on
// the two-core virtual machine the benchmarks run on a round trip costs
// 30–80 µs, most of it waking threads on the two sides, not work. Content never changes
// under a read-only mount, so it can be handed to the kernel before it is
// asked for (FUSE_NOTIFY_STORE): the reads that follow are served from the
// page cache like those of a local filesystem. Two patterns pay for that:
//
//   - A tool reading file after file (tar, grep -r, a backup, a checksum
//     run) reads one small file of a directory and then the others: the
//     first READ in a directory pushes the directory's other small files,
//     those the kernel knows (looked up or listed). `ls` and `find` read no
//     content and push nothing.
//   - Random reads in a big file (a database, fio) each cost a round trip
//     for 4 KiB; the kernel's readahead does not help them. Once reads
//     jump around, the whole file is pushed, up to an eighth of RAM.
//
// Sequential reads of a big file are left to the kernel's readahead
// (tuneReadahead): pushing ahead of them only competes with it.
//
// Pushes run on one background goroutine; a push that fails (the kernel
// forgot the inode, or the mount is going away) costs nothing: the kernel
// then asks with a READ as it would have anyway.
const (
	smallFile      = 1 << 20  // pushed with its directory's siblings
	dirPushBudget  = 32 << 20 // most bytes pushed for one directory
	pushChunk      = 4 << 20  // one notification
	randomJump     = 4 << 20  // a READ this far from the last one is a jump, not readahead reordering
	jumpsForRandom = 4        // jumps before a file counts as read at random (a zip reader's few seeks do not)
	queueLen       = 64
	maxPushStreams = 4        // inflating streams at most for one file of a compressed layer
	minPushPart    = 64 << 20 // a stream's part at least
)

type prefetcher struct {
	jobs     chan func()
	done     chan struct{}
	maxWhole int64 // biggest file pushed whole on random reads
	scratch  []byte
}

func newPrefetcher() *prefetcher {
	p := &prefetcher{jobs: make(chan func(), queueLen), done: make(chan struct{}), maxWhole: 1 << 30}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil && si.Totalram > 0 {
		p.maxWhole = int64(uint64(si.Totalram) * uint64(si.Unit) / 8)
	}
	go func() {
		for {
			select {
			case job := <-p.jobs:
				job()
			case <-p.done:
				return
			}
		}
	}()
	return p
}

// stop ends the worker once the mount is gone.
func (p *prefetcher) stop() { close(p.done) }

// enqueue runs job on the worker, or reports false if it cannot now (the
// queue is full, or the mount is gone).
func (p *prefetcher) enqueue(job func()) bool {
	select {
	case <-p.done:
		return false
	case p.jobs <- job:
		return true
	default:
		return false
	}
}

// buffer is the worker's scratch space for content with no mapping to
// slice (compressed layers served in place): pushes run one at a time, and
// the kernel copies what it is given before WriteCache returns.
func (p *prefetcher) buffer(size int) []byte {
	if cap(p.scratch) < size {
		p.scratch = make([]byte, max(size, pushChunk))
	}
	return p.scratch[:size]
}

// fileAccess is what the prefetcher tracks of a big file's reads.
type fileAccess struct {
	lastEnd atomic.Int64
	jumps   atomic.Int32
}

// read is called after n served off+size of its content from the layer.
func (p *prefetcher) read(n *node, off int64, size int) {
	if n.n.Entry.Size <= smallFile {
		n.pushed.Store(true) // read, so no push needed
		if _, parent := n.Parent(); parent != nil {
			if dir, ok := parent.Operations().(*node); ok {
				p.siblings(dir)
			}
		}
		return
	}
	if n.pushed.Load() || n.n.Entry.Size > p.maxWhole {
		return
	}
	a := n.access.Load()
	if a == nil {
		n.access.CompareAndSwap(nil, &fileAccess{})
		a = n.access.Load()
	}
	last := a.lastEnd.Swap(off + int64(size))
	if d := off - last; d < randomJump && d > -randomJump {
		return
	}
	if a.jumps.Add(1) < jumpsForRandom || !n.pushed.CompareAndSwap(false, true) {
		return
	}
	if !p.enqueue(func() { p.pushWhole(n) }) {
		n.pushed.Store(false)
	}
}

// siblings pushes the small regular files of dir the kernel knows, once.
func (p *prefetcher) siblings(dir *node) {
	if !dir.pushed.CompareAndSwap(false, true) {
		return
	}
	if !p.enqueue(func() { p.pushSiblings(dir) }) {
		dir.pushed.Store(false)
	}
}

func (p *prefetcher) pushSiblings(dir *node) {
	budget := int64(dirPushBudget)
	for _, c := range dir.n.Children() { // in name order, as walkers read
		e := c.Entry
		if e == nil || e.Type != tarindex.TypeReg || e.Size == 0 || e.Size > smallFile || e.Size > budget {
			continue
		}
		child := dir.GetChild(c.Name)
		if child == nil {
			continue
		}
		cn, ok := child.Operations().(*node)
		if !ok || !cn.pushed.CompareAndSwap(false, true) {
			continue
		}
		if e.Sparse != nil {
			continue // holes: READ assembles them
		}
		data, err := dir.fsys.tree.Bytes(c, 0, int(e.Size), p.buffer(int(e.Size)))
		if err != nil {
			continue // READ reports it
		}
		budget -= e.Size
		if child.WriteCache(0, data) != 0 {
			cn.pushed.Store(false)
		}
	}
}

// pushWhole pushes all of a big file's content, chunk by chunk.
func (p *prefetcher) pushWhole(n *node) {
	e := n.n.Entry
	size := e.Size
	if c, ok := n.fsys.tree.Layers[n.n.Layer].Content.(*tarindex.Compressed); ok && e.Sparse == nil {
		// Inflated front to back, past the span cache: chunks read
		// through it would decode the spans at their edges twice and
		// push out the spans the reads being served now need.
		// Inflating is all the push costs (0.3 to 0.7 GB/s a core),
		// and the reads it is for are slow until it is done, so the
		// file is cut in parts, one stream per core: each starts at
		// the checkpoint before its part.
		var stop atomic.Bool
		push := func(from, to int64, buf []byte) {
			r, err := c.NewReader(e.Offset + from)
			if err != nil {
				return // READ reports it
			}
			defer r.Close()
			for off := from; off < to && !stop.Load(); off += pushChunk {
				data := buf[:min(pushChunk, to-off)]
				if _, err := io.ReadFull(r, data); err != nil || n.WriteCache(off, data) != 0 {
					stop.Store(true)
					return
				}
			}
		}
		parts := int64(min(runtime.GOMAXPROCS(0), maxPushStreams))
		parts = max(min(parts, size/minPushPart), 1)
		step := (size/parts + pushChunk - 1) / pushChunk * pushChunk
		var wg sync.WaitGroup
		for from := step; from < size; from += step {
			wg.Go(func() { push(from, min(from+step, size), make([]byte, pushChunk)) })
		}
		push(0, min(step, size), p.buffer(pushChunk))
		wg.Wait()
		return
	}
	for off := int64(0); off < size; off += pushChunk {
		data, err := n.fsys.tree.Bytes(n.n, off, pushChunk, p.buffer(pushChunk))
		if err != nil || len(data) == 0 {
			return
		}
		tarindex.Populate(data)
		if n.WriteCache(off, data) != 0 {
			return
		}
	}
}
