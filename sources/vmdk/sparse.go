package vmdk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/nbdloop/nbdloop/sources"
	"golang.org/x/sys/unix"
)

// sparse is one hosted sparse extent (KDMV): a grain directory of grain
// tables of grain table entries (GTEs), each GTE the sector of a grain of
// data in the file, 0 for a grain not allocated (read from the parent, or
// zeros) and, with flagZeroGrain, 1 for a grain that reads as zeros.
//
// Locking: mu is held for reading by lookups, reads and writes to grains
// that are already allocated, and for writing by whatever changes the
// metadata (allocating grains and grain tables, marking grains zeroed), so
// a reader never sees a GTE before its grain's data is in the file. cmu
// guards the grain table cache, whose misses readers fill concurrently.
type sparse struct {
	f          file
	name       string
	h          header
	writable   bool
	grainBytes int64
	size       int64 // capacity in bytes
	grains     int64 // grains in the capacity
	perGT      int64 // GTEs per grain table
	// gd and rgd hold the directory entries for the part of the extent in
	// use (the descriptor may give it less than its capacity); rgd only
	// when the extent is written.
	gd, rgd    []uint32
	gdOff      int64 // bytes
	rgdOff     int64 // bytes, 0: no redundant directory
	zeroGrain  bool
	compressed bool
	markers    bool

	mu       sync.RWMutex
	fileSize int64 // bytes; grows as grains are allocated (mu held for writing)
	next     int64 // sector of the next grain to allocate

	cmu   sync.Mutex
	cache *gtCache

	stream *streamCache // compressed extents only

	budget  *sources.Budget
	charged atomic.Int64 // taken from budget, given back by close
}

// extentOverhead is what an open extent costs besides its tables: its
// structures, file and cache indexes.
const extentOverhead = 1 << 10

// inflaterSize is the memory of one zlib reader (its 32 KiB window and
// Huffman tables), rounded up.
const inflaterSize = 64 << 10

// sparseOptions are the parameters of openSparse.
type sparseOptions struct {
	writable    bool
	need        int64 // bytes of the extent in use; 0: its capacity
	cacheBytes  int64 // grain table cache (at least one table is kept)
	streamBytes int64 // inflated grain cache (at least one grain)
	budget      *sources.Budget
}

// openSparse reads the header (or the footer, for GD_AT_END) and the grain
// directories of the sparse extent in f, of size bytes, charging what it
// keeps to o.budget. The extent is writable if o.writable and its format
// allows it.
func openSparse(f file, size int64, name string, o sparseOptions) (_ *sparse, err error) {
	h, err := readSparseHeader(f, name, size)
	if err != nil {
		return nil, err
	}
	e := &sparse{
		f: f, name: name, h: h,
		writable:   o.writable && !h.compressed() && h.gdOffset != gdAtEnd && h.version != 3,
		grainBytes: int64(h.grainSize) * sectorSize,
		size:       int64(h.capacity) * sectorSize,
		perGT:      int64(h.numGTEs),
		zeroGrain:  h.flags&flagZeroGrain != 0,
		compressed: h.compressed(),
		markers:    h.flags&flagMarkers != 0,
		fileSize:   size,
		budget:     o.budget,
	}
	defer func() {
		if err != nil {
			e.budget.Release(e.charged.Swap(0))
		}
	}()
	if err := e.charge(extentOverhead, "extent "+name); err != nil {
		return nil, err
	}
	e.grains = (e.size + e.grainBytes - 1) / e.grainBytes
	if err := e.loadDirectories(o.need); err != nil {
		return nil, err
	}
	// New grains go at the end of the file, rounded up to a grain as qemu
	// does, so that grains stay aligned.
	gs := int64(h.grainSize)
	e.next = (size + sectorSize - 1) / sectorSize
	e.next = (e.next + gs - 1) / gs * gs
	if err := e.makeCaches(o); err != nil {
		return nil, err
	}
	return e, nil
}

// readSparseHeader reads the header of the sparse extent f of size bytes
// at name, or its footer when the header puts the grain directory at the
// end.
func readSparseHeader(f io.ReaderAt, name string, size int64) (header, error) {
	buf := make([]byte, headerSize)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return header{}, fmt.Errorf("%s: reading the sparse extent header: %w", name, noEOF(err))
	}
	h, err := parseHeader(buf)
	if err != nil {
		return header{}, fmt.Errorf("%s: %w", name, err)
	}
	if h.gdOffset == gdAtEnd {
		if h, err = readFooter(f, size); err != nil {
			return header{}, fmt.Errorf("%s: %w", name, err)
		}
	}
	return h, nil
}

// loadDirectories reads the grain directory, and the redundant one when
// the extent is writable and has one, for the first need bytes of the
// extent (0: all of it), charging the budget for them.
func (e *sparse) loadDirectories(need int64) (err error) {
	used := e.size
	if need > 0 {
		used = min(used, need)
	}
	span := e.perGT * e.grainBytes // at most 2^29
	n := (used + span - 1) / span  // at most gdEntries
	if err := e.charge(n*4, fmt.Sprintf("the grain directory of %s (%d entries)", e.name, n)); err != nil {
		return err
	}
	if e.gd, e.gdOff, err = readDirectory(e.f, e.h.gdOffset, n, e.fileSize); err != nil {
		return fmt.Errorf("%s: grain directory: %w", e.name, err)
	}
	if e.writable && e.h.flags&flagRGD != 0 && e.h.rgdOffset != 0 {
		if err := e.charge(n*4, fmt.Sprintf("the redundant grain directory of %s (%d entries)", e.name, n)); err != nil {
			return err
		}
		if e.rgd, e.rgdOff, err = readDirectory(e.f, e.h.rgdOffset, n, e.fileSize); err != nil {
			return fmt.Errorf("%s: redundant grain directory: %w", e.name, err)
		}
	}
	return nil
}

// makeCaches makes the grain table cache and, for a compressed extent, the
// inflated grain cache, charging the budget for their first slots.
func (e *sparse) makeCaches(o sparseOptions) error {
	tableBytes := e.perGT * 4
	if err := e.charge(tableBytes, "a grain table of "+e.name); err != nil {
		return err
	}
	e.cache = newGTCache(int(min(o.cacheBytes/tableBytes, maxGDEntries)), int(tableBytes), e.chargeSlot)
	if e.compressed {
		if err := e.charge(3*e.grainBytes+inflaterSize, "a compressed grain of "+e.name+" and its inflater"); err != nil {
			return err
		}
		e.stream = newStreamCache(e.grainBytes, o.streamBytes, e.chargeSlot)
	}
	return nil
}

// charge takes n bytes from the budget for what.
func (e *sparse) charge(n int64, what string) error {
	if err := e.budget.Charge(n, what); err != nil {
		return err
	}
	e.charged.Add(n)
	return nil
}

// chargeSlot takes n bytes for one more cache slot, if the budget has
// them; caches that get false reuse the slots they have.
func (e *sparse) chargeSlot(n int64) bool {
	if e.budget.Charge(n, "a cache slot") != nil {
		return false
	}
	e.charged.Add(n)
	return true
}

// close closes the file and gives the memory back to the budget.
func (e *sparse) close() error {
	e.budget.Release(e.charged.Swap(0))
	return e.f.Close()
}

// readFooter reads the copy of the header at the end of a GD_AT_END
// extent: a footer marker, the footer (a header whose gdOffset is real) and
// an end-of-stream marker, in the last three sectors.
func readFooter(f io.ReaderAt, size int64) (header, error) {
	if size < 4*sectorSize {
		return header{}, errors.New("grain directory at the end, but the file is too short for a footer")
	}
	b := make([]byte, 3*sectorSize)
	if _, err := f.ReadAt(b, size-3*sectorSize); err != nil {
		return header{}, fmt.Errorf("reading the footer: %w", noEOF(err))
	}
	le := binary.LittleEndian
	if le.Uint32(b[8:]) != 0 || le.Uint32(b[12:]) != markerFooter {
		return header{}, errors.New("grain directory at the end, but no footer marker 1536 bytes before the end of the file")
	}
	h, err := parseHeader(b[sectorSize:])
	if err != nil {
		return header{}, fmt.Errorf("footer: %w", err)
	}
	if h.gdOffset == gdAtEnd {
		return header{}, errors.New("the footer's grain directory offset is GD_AT_END too")
	}
	return h, nil
}

// readDirectory loads a grain directory of n entries at sector.
func readDirectory(f io.ReaderAt, sector uint64, n, fileSize int64) ([]uint32, int64, error) {
	if sector == 0 || sector > uint64(fileSize)/sectorSize || n > (fileSize-int64(sector)*sectorSize)/4 {
		return nil, 0, fmt.Errorf("%d entries at sector %d lie outside the %d-byte file: %w", n, sector, fileSize, syscall.EIO)
	}
	off := int64(sector) * sectorSize
	d := make([]uint32, n)
	// On the heap (f is an interface): no larger than the directory.
	b := make([]byte, min(n*4, 16<<10))
	for i := int64(0); i < n; {
		k := min(n-i, int64(len(b)/4))
		if _, err := f.ReadAt(b[:k*4], off+i*4); err != nil {
			return nil, 0, noEOF(err)
		}
		for j := range k {
			d[i+j] = binary.LittleEndian.Uint32(b[j*4:])
		}
		i += k
	}
	return d, off, nil
}

// descriptor reads the descriptor embedded in the extent, nil if none.
func (e *sparse) descriptor() ([]byte, error) {
	if e.h.descOffset == 0 || e.h.descSize == 0 {
		return nil, nil
	}
	// parseHeader bounds descSize to maxDescriptorSize.
	if e.h.descOffset > uint64(e.fileSize)/sectorSize || int64(e.h.descSize)*sectorSize > e.fileSize-int64(e.h.descOffset)*sectorSize {
		return nil, e.corrupt("the embedded descriptor lies outside the file")
	}
	off, n := int64(e.h.descOffset)*sectorSize, int64(e.h.descSize)*sectorSize
	b := make([]byte, n)
	if _, err := e.f.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("reading the embedded descriptor: %w", noEOF(err))
	}
	return b, nil
}

// noEOF turns the io.EOF of a short ReadAt into an EIO error: inside a
// sparse extent, a short read means a truncated file.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("file is truncated: %w", syscall.EIO)
	}
	return err
}

func (e *sparse) flush() error {
	if !e.writable {
		return nil
	}
	fd, ok := e.f.(interface{ Fd() uintptr })
	if !ok {
		return nil
	}
	if err := unix.Fdatasync(int(fd.Fd())); err != nil {
		return fmt.Errorf("%s: fdatasync: %w", e.name, err)
	}
	return nil
}
