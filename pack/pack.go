package pack

import (
	"fmt"
	"io"
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
	codec, err := newCodec(&opts)
	if err != nil {
		return Result{}, err
	}
	res := Result{}
	if _, err := dst.Write(codec.header()); err != nil {
		return res, err
	}
	res.Out += int64(len(codec.header()))
	if err := writeBlocks(dst, src, size, opts, codec, &res); err != nil {
		return res, err
	}
	tr := codec.trailer()
	if _, err := dst.Write(tr); err != nil {
		return res, err
	}
	res.Out += int64(len(tr))
	return res, nil
}

// newCodec fills in the defaults of opts' format and returns its codec.
func newCodec(opts *Options) (blockCodec, error) {
	var codec blockCodec
	var err error
	switch opts.Format {
	case XZ:
		opts.setDefaults(DefaultXZBlockSize, DefaultXZLevel)
		codec, err = newXZCodec(*opts)
	case Zstd:
		opts.setDefaults(DefaultZstdBlockSize, DefaultZstdLevel)
		codec, err = newZstdCodec(*opts)
	default:
		return nil, fmt.Errorf("unknown format %q (use xz or zstd)", opts.Format)
	}
	if err != nil {
		return nil, err
	}
	if opts.BlockSize > 1<<30 || (opts.Format == Zstd && opts.BlockSize > 1<<31-1) {
		return nil, fmt.Errorf("block size %d is larger than 1 GiB", opts.BlockSize)
	}
	return codec, nil
}

// setDefaults sets a block size of 0 or less to blockSize and a level
// below 0 to level.
func (o *Options) setDefaults(blockSize int64, level int) {
	if o.BlockSize <= 0 {
		o.BlockSize = blockSize
	}
	if o.Level < 0 {
		o.Level = level
	}
}
