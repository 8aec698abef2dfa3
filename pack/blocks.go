package pack

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
)

// compressed is one block, read and compressed by a worker, or the error
// that stopped it.
type compressed struct {
	out []byte
	err error
	in  int64
}

// pipeline compresses the blocks of one Pack on several goroutines and
// hands them back in order.
type pipeline struct {
	src       io.ReaderAt
	size      int64
	blockSize int64
	codec     blockCodec
	results   []chan compressed // block i's outcome comes on results[i]
	slots     chan struct{}     // a token per block handed out and not yet written
	next      chan int          // the blocks to read, in order
	stop      chan struct{}     // closed when writing stopped early
}

// writeBlocks cuts the size bytes of src into blocks of opts.BlockSize,
// compresses them on opts.Workers goroutines, and writes them to dst in
// order, adding each to codec and to res and reporting it to
// opts.Progress.
func writeBlocks(dst io.Writer, src io.ReaderAt, size int64, opts Options, codec blockCodec, res *Result) error {
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	n := int((size + opts.BlockSize - 1) / opts.BlockSize)
	p := &pipeline{src: src, size: size, blockSize: opts.BlockSize, codec: codec,
		results: make([]chan compressed, n),
		// Blocks are handed out in order; at most 2 per worker are in flight
		// (read, compressed, or waiting to be written), which bounds memory.
		slots: make(chan struct{}, 2*workers),
		next:  make(chan int),
		stop:  make(chan struct{}),
	}
	for i := range p.results {
		p.results[i] = make(chan compressed, 1)
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.work()
		}()
	}
	go p.feed(n)
	err := p.writeInOrder(dst, opts.Progress, res)
	if err != nil {
		// The feeder stops handing out blocks and closes next; the
		// workers finish the block in hand (results are buffered) and exit.
		close(p.stop)
	}
	wg.Wait()
	return err
}

// work reads and compresses the blocks handed out on next, each into its
// results channel, until next closes.
func (p *pipeline) work() {
	buf := make([]byte, p.blockSize)
	for i := range p.next {
		off := int64(i) * p.blockSize
		b := buf[:min(p.blockSize, p.size-off)]
		var c compressed
		if _, err := p.src.ReadAt(b, off); err != nil && !(errors.Is(err, io.EOF) && off+int64(len(b)) == p.size) {
			c.err = fmt.Errorf("reading bytes %d..%d: %w", off, off+int64(len(b)), err)
		} else {
			c.out, c.err = p.codec.block(b)
			c.in = int64(len(b))
		}
		p.results[i] <- c
	}
}

// feed hands out the blocks 0..n-1 on next, each once a slot is free,
// until all are handed out or stop closes; then it closes next.
func (p *pipeline) feed(n int) {
	defer close(p.next)
	for i := 0; i < n; i++ {
		select {
		case p.slots <- struct{}{}:
		case <-p.stop:
			return
		}
		select {
		case p.next <- i:
		case <-p.stop:
			return
		}
	}
}

// writeInOrder writes each block to dst as its turn comes, freeing its
// slot, adds it to the codec and res and reports it to progress (when
// set). It stops at the first error, a block's or dst's.
func (p *pipeline) writeInOrder(dst io.Writer, progress func(in, out int64), res *Result) error {
	for i := range p.results {
		c := <-p.results[i]
		<-p.slots
		if c.err != nil {
			return c.err
		}
		if _, err := dst.Write(c.out); err != nil {
			return err
		}
		p.codec.add(c.in, int64(len(c.out)), c.out)
		res.In += c.in
		res.Out += int64(len(c.out))
		res.Blocks++
		if progress != nil {
			progress(res.In, res.Out)
		}
	}
	return nil
}
