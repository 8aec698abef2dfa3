// Package pack compresses a disk image into a random-access-friendly file:
// `nbdloop pack IMAGE -o OUT.xz` or `-o OUT.zst`.
//
// The image is cut into blocks of Options.BlockSize uncompressed bytes,
// compressed in parallel on all cores (Options.Workers) and written in
// order, so that nbdloop (or nbdkit's xz filter) can decode any block on
// its own:
//
//   - xz: one stream of LZMA2 blocks whose headers carry both sizes (as
//     multi-threaded xz writes them, so xz -T0 also decompresses it in
//     parallel), a CRC64 check per block, then the index. Compressed with
//     github.com/ulikunitz/xz/lzma (its hash-table matcher);
//     Options.Level 0..9 picks the dictionary size of xz's presets, capped
//     at the block size, and nothing else: levels whose dictionaries are
//     capped to the same size give the same output, and no level matches
//     xz(1)'s of the same number. ulikunitz/xz compresses at a few MiB/s
//     per core, several times slower than xz(1).
//   - zstd: the seekable format: one frame per block (with its content
//     size and checksum) and a seek table in a final skippable frame, which
//     ordinary zstd tools skip. Compressed with
//     github.com/klauspost/compress/zstd at Options.Level (zstd's 1..22
//     scale, mapped to the encoder's four speeds).
//
// Both outputs decompress with the standard xz and zstd tools.
package pack

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
)

// Formats.
const (
	XZ   = "xz"
	Zstd = "zstd"
)

// Default block sizes, chosen from measurements on a 128 MiB sample of
// binaries (see the package's benchmark and formats.md): xz blocks of
// 4 MiB cost 2.5% in size over one block and decode in about 0.14 s, so a
// random 4 KiB read that misses the cache waits that long; 16 MiB would
// save 2% more but take 0.4 s per miss. zstd frames of 1 MiB decode in
// about 1.3 ms and cost about 4% over one frame.
const (
	DefaultXZBlockSize   = 4 << 20
	DefaultZstdBlockSize = 1 << 20
	DefaultXZLevel       = 6
	DefaultZstdLevel     = 3
)

// Options tune Pack.
type Options struct {
	Format    string // XZ or Zstd
	BlockSize int64  // uncompressed bytes per block (0: the format's default)
	Level     int    // compression level (-1: the format's default)
	Workers   int    // compressing goroutines (0: GOMAXPROCS)
	// Progress, when set, is called after each block is written with the
	// uncompressed and compressed bytes so far; calls are serialized.
	Progress func(in, out int64)
}

// Result sums up a finished Pack.
type Result struct {
	In, Out int64
	Blocks  int
}

// blockCodec compresses one block into its on-disk form, and writes the
// container around the blocks.
type blockCodec interface {
	header() []byte
	block(p []byte) ([]byte, error) // safe for concurrent use
	trailer() []byte                // after every block was added with add
	add(in, out int64, data []byte)
}

// Pack compresses the size bytes of src into dst (see the package doc).
func Pack(dst io.Writer, src io.ReaderAt, size int64, opts Options) (Result, error) {
	var codec blockCodec
	var err error
	switch opts.Format {
	case XZ:
		if opts.BlockSize <= 0 {
			opts.BlockSize = DefaultXZBlockSize
		}
		if opts.Level < 0 {
			opts.Level = DefaultXZLevel
		}
		codec, err = newXZCodec(opts)
	case Zstd:
		if opts.BlockSize <= 0 {
			opts.BlockSize = DefaultZstdBlockSize
		}
		if opts.Level < 0 {
			opts.Level = DefaultZstdLevel
		}
		codec, err = newZstdCodec(opts)
	default:
		return Result{}, fmt.Errorf("unknown format %q (use xz or zstd)", opts.Format)
	}
	if err != nil {
		return Result{}, err
	}
	if opts.BlockSize > 1<<30 || (opts.Format == Zstd && opts.BlockSize > 1<<31-1) {
		return Result{}, fmt.Errorf("block size %d is larger than 1 GiB", opts.BlockSize)
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	res := Result{}
	if _, err := dst.Write(codec.header()); err != nil {
		return res, err
	}
	res.Out += int64(len(codec.header()))

	n := int((size + opts.BlockSize - 1) / opts.BlockSize)
	type job struct {
		out []byte
		err error
		in  int64
	}
	results := make([]chan job, n)
	for i := range results {
		results[i] = make(chan job, 1)
	}
	// Blocks are handed out in order; at most 2 per worker are in flight
	// (read, compressed, or waiting to be written), which bounds memory.
	slots := make(chan struct{}, 2*workers)
	next := make(chan int)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, opts.BlockSize)
			for i := range next {
				off := int64(i) * opts.BlockSize
				p := buf[:min(opts.BlockSize, size-off)]
				var j job
				if _, err := src.ReadAt(p, off); err != nil && !(errors.Is(err, io.EOF) && off+int64(len(p)) == size) {
					j.err = fmt.Errorf("reading bytes %d..%d: %w", off, off+int64(len(p)), err)
				} else {
					j.out, j.err = codec.block(p)
					j.in = int64(len(p))
				}
				results[i] <- j
			}
		}()
	}
	go func() {
		defer close(next)
		for i := 0; i < n; i++ {
			select {
			case slots <- struct{}{}:
			case <-stop:
				return
			}
			select {
			case next <- i:
			case <-stop:
				return
			}
		}
	}()
	var werr error
	for i := 0; i < n; i++ {
		j := <-results[i]
		<-slots
		if j.err != nil {
			werr = j.err
			break
		}
		if _, err := dst.Write(j.out); err != nil {
			werr = err
			break
		}
		codec.add(j.in, int64(len(j.out)), j.out)
		res.In += j.in
		res.Out += int64(len(j.out))
		res.Blocks++
		if opts.Progress != nil {
			opts.Progress(res.In, res.Out)
		}
	}
	if werr != nil {
		// The feeder stops handing out blocks and closes next; the
		// workers finish the block in hand (results are buffered) and exit.
		close(stop)
		wg.Wait()
		return res, werr
	}
	wg.Wait()
	tr := codec.trailer()
	if _, err := dst.Write(tr); err != nil {
		return res, err
	}
	res.Out += int64(len(tr))
	return res, nil
}
