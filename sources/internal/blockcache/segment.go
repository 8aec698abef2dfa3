package blockcache

import "io"

// Segment is one independently decodable piece of the uncompressed image.
// Segments are given in order and are contiguous: each starts where the
// previous one ends, the first at 0.
type Segment struct {
	Off  int64 // uncompressed offset
	Size int64 // uncompressed size, > 0
	// Mem is the memory a decoder of this segment holds besides its output
	// (an LZMA dictionary, a window), charged to the budget while it lives.
	Mem int64
	// Spill marks a segment that is decoded once, in the background, into
	// the spill file (see Options.SpillDir) instead of through the cache.
	Spill bool
}

// Table lists the segments of an image, for formats that keep them in a
// compact form of their own rather than as a []Segment (an index of
// millions of blocks). Segment(i) is called often, under the cache's lock:
// it must be cheap and must not block.
type Table interface {
	Len() int
	Segment(i int) Segment
}

// Slice is a Table over a []Segment.
type Slice []Segment

func (s Slice) Len() int              { return len(s) }
func (s Slice) Segment(i int) Segment { return s[i] }

// MemReader is implemented by decoders that know the memory they hold only
// once opened (the dictionary or window a block's header asks for): the
// cache charges Mem() instead of Segment.Mem from then on. Such a decoder
// should allocate that memory on its first Read, not in the Opener, since
// the cache may make it wait for room in between.
type MemReader interface {
	io.Reader
	Mem() int64
}

// Opener opens a decoder that yields segment i's bytes from its start. The
// decoder must return exactly Segments[i].Size bytes before it reports the
// end; it verifies what it can (checksums) when it reaches the end, and
// reports a mismatch as an error from the Read that returns the last bytes.
// If the returned reader is an io.Closer, it is closed when no longer used.
// Opener is called from many goroutines at once.
type Opener func(i int) (io.Reader, error)
