package vmdk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
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
	f          *os.File
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
// directories of the sparse extent in f, charging what it keeps to
// o.budget. The extent is writable if o.writable and its format allows it.
func openSparse(f *os.File, name string, o sparseOptions) (_ *sparse, err error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading the sparse extent's size: %w", err)
	}
	size := fi.Size()
	buf := make([]byte, headerSize)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return nil, fmt.Errorf("%s: reading the sparse extent header: %w", name, noEOF(err))
	}
	h, err := parseHeader(buf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if h.gdOffset == gdAtEnd {
		if h, err = readFooter(f, size); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
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
	need := e.size
	if o.need > 0 {
		need = min(need, o.need)
	}
	span := e.perGT * e.grainBytes // at most 2^29
	n := (need + span - 1) / span  // at most gdEntries
	if err := e.charge(n*4, fmt.Sprintf("the grain directory of %s (%d entries)", name, n)); err != nil {
		return nil, err
	}
	if e.gd, e.gdOff, err = readDirectory(f, h.gdOffset, n, size); err != nil {
		return nil, fmt.Errorf("%s: grain directory: %w", name, err)
	}
	if e.writable && h.flags&flagRGD != 0 && h.rgdOffset != 0 {
		if err := e.charge(n*4, fmt.Sprintf("the redundant grain directory of %s (%d entries)", name, n)); err != nil {
			return nil, err
		}
		if e.rgd, e.rgdOff, err = readDirectory(f, h.rgdOffset, n, size); err != nil {
			return nil, fmt.Errorf("%s: redundant grain directory: %w", name, err)
		}
	}
	// New grains go at the end of the file, rounded up to a grain as qemu
	// does, so that grains stay aligned.
	gs := int64(h.grainSize)
	e.next = (size + sectorSize - 1) / sectorSize
	e.next = (e.next + gs - 1) / gs * gs
	tableBytes := e.perGT * 4
	if err := e.charge(tableBytes, "a grain table of "+name); err != nil {
		return nil, err
	}
	e.cache = newGTCache(int(min(o.cacheBytes/tableBytes, maxGDEntries)), int(tableBytes), e.chargeSlot)
	if e.compressed {
		if err := e.charge(3*e.grainBytes+inflaterSize, "a compressed grain of "+name+" and its inflater"); err != nil {
			return nil, err
		}
		e.stream = newStreamCache(e.grainBytes, o.streamBytes, e.chargeSlot)
	}
	return e, nil
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
func readFooter(f *os.File, size int64) (header, error) {
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
func readDirectory(f *os.File, sector uint64, n, fileSize int64) ([]uint32, int64, error) {
	if sector == 0 || sector > uint64(fileSize)/sectorSize || n > (fileSize-int64(sector)*sectorSize)/4 {
		return nil, 0, fmt.Errorf("%d entries at sector %d lie outside the %d-byte file: %w", n, sector, fileSize, syscall.EIO)
	}
	off := int64(sector) * sectorSize
	d := make([]uint32, n)
	var b [16 << 10]byte
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

// gtes copies into dst the GTEs of consecutive grains from grain, stopping
// at the end of its grain table or of the extent; it returns how many. The
// caller holds mu.
func (e *sparse) gtes(grain int64, dst []uint32) (int, error) {
	gdIdx := grain / e.perGT
	first := grain % e.perGT
	n := int(min(int64(len(dst)), e.perGT-first, e.grains-grain))
	if gdIdx >= int64(len(e.gd)) {
		return 0, e.corrupt(fmt.Sprintf("grain %d lies past the grain directory", grain))
	}
	if e.gd[gdIdx] == 0 {
		clear(dst[:n])
		return n, nil
	}
	e.cmu.Lock()
	defer e.cmu.Unlock()
	t, err := e.table(uint32(gdIdx))
	if err != nil {
		return 0, err
	}
	for i := range n {
		dst[i] = binary.LittleEndian.Uint32(t[(first+int64(i))*4:])
	}
	return n, nil
}

// Grain states, from a GTE.
const (
	grainUnalloc = iota // read the parent, or zeros
	grainZero           // reads as zeros, the parent is not consulted
	grainData
)

func (e *sparse) state(gte uint32) int {
	switch {
	case gte == 0:
		return grainUnalloc
	case gte == gteZeroed && e.zeroGrain:
		return grainZero
	}
	return grainData
}

// readAt fills p from the extent at off (relative to the extent).
// parent reads the grains that are not allocated, at extent offsets.
func (e *sparse) readAt(p []byte, off int64, parent func(p []byte, off int64) error) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	var buf [64]uint32
	for len(p) > 0 {
		grain := off / e.grainBytes
		n, err := e.gtes(grain, buf[:])
		if err != nil {
			return err
		}
		// Coalesce grains of the same state (and, for data, contiguous in
		// the file) into one request.
		i := 0
		for i < n && len(p) > 0 {
			st := e.state(buf[i])
			within := off - (grain+int64(i))*e.grainBytes
			j := i + 1
			for j < n && e.state(buf[j]) == st && (st != grainData || (!e.compressed && buf[j] == buf[j-1]+uint32(e.h.grainSize))) {
				j++
			}
			run := min(int64(len(p)), int64(j-i)*e.grainBytes-within)
			switch {
			case st == grainUnalloc && parent == nil:
				clear(p[:run])
			case st == grainUnalloc:
				if err := parent(p[:run], off); err != nil {
					return err
				}
			case st == grainZero:
				clear(p[:run])
			case e.compressed:
				run = min(run, e.grainBytes-within)
				if err := e.readCompressed(p[:run], uint64(buf[i]), grain+int64(i), within); err != nil {
					return err
				}
				j = i + 1
			default:
				if err := e.readData(p[:run], int64(buf[i])*sectorSize+within); err != nil {
					return err
				}
			}
			p, off = p[run:], off+run
			i = j
		}
	}
	return nil
}

// readData reads grain bytes at file offset pos. Bytes past the end of the
// file read as zeros (a last grain may be cut short), but the grain must
// start inside the file.
func (e *sparse) readData(p []byte, pos int64) error {
	if pos >= e.fileSize {
		return e.corrupt(fmt.Sprintf("a grain at byte %d lies past the end of the file", pos))
	}
	n, err := e.f.ReadAt(p, pos)
	if err != nil && !(errors.Is(err, io.EOF) && pos+int64(n) >= e.fileSize) {
		return fmt.Errorf("%s: reading a grain: %w", e.name, err)
	}
	clear(p[n:])
	return nil
}

// writable reports whether a data GTE may be written to: it must point
// past the header and metadata (overhead), so that a hostile image cannot
// turn guest writes into writes over its own tables.
func (e *sparse) dataGTE(gte uint32) error {
	if uint64(gte) < e.h.overhead || uint64(gte) < 1 || int64(gte)*sectorSize >= e.fileSize {
		return e.corrupt(fmt.Sprintf("grain table entry %d points into the metadata or past the end of the file", gte))
	}
	return nil
}

// writeAt writes p at off (relative to the extent). parent supplies the
// rest of a grain that is allocated by a partial write.
func (e *sparse) writeAt(p []byte, off int64, parent func(p []byte, off int64) error) error {
	if !e.writable {
		return fmt.Errorf("%s: %w", e.name, errExtentReadOnly)
	}
	e.mu.RLock()
	done, err := e.writeAllocated(p, off)
	e.mu.RUnlock()
	if err != nil || done == int64(len(p)) {
		return err
	}
	p, off = p[done:], off+done
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.writeAllocating(p, off, off+int64(len(p)), parent, modeData)
}

// writeAllocated writes the leading part of p that falls on allocated
// grains and returns its length. The caller holds mu for reading.
func (e *sparse) writeAllocated(p []byte, off int64) (int64, error) {
	var buf [64]uint32
	var done int64
	for done < int64(len(p)) {
		grain := (off + done) / e.grainBytes
		n, err := e.gtes(grain, buf[:])
		if err != nil {
			return done, err
		}
		for i := range n {
			if done == int64(len(p)) {
				break
			}
			if e.state(buf[i]) != grainData {
				return done, nil
			}
			if err := e.dataGTE(buf[i]); err != nil {
				return done, err
			}
			at := off + done
			within := at - (grain+int64(i))*e.grainBytes
			run := min(int64(len(p))-done, e.grainBytes-within)
			if _, err := e.f.WriteAt(p[done:done+run], int64(buf[i])*sectorSize+within); err != nil {
				return done, fmt.Errorf("%s: writing a grain: %w", e.name, err)
			}
			done += run
		}
	}
	return done, nil
}

// Write modes of writeAllocating.
const (
	modeData     = iota // write p
	modeZero            // make the range read as zeros, freeing whole grains where possible
	modeZeroKeep        // the same, but allocated grains stay allocated (NBD_CMD_FLAG_NO_HOLE)
)

// maxChunk bounds the new grains buffered by one writeChunk call (a power
// of 2, so a multiple of every grain size).
const maxChunk = 32 << 20

// writeAllocating writes p (or zeros, see the modes) to [off, end),
// allocating grains as needed, one grain table's span at a time. The caller
// holds mu for writing.
func (e *sparse) writeAllocating(p []byte, off, end int64, parent func(p []byte, off int64) error, mode int) error {
	span := e.perGT * e.grainBytes
	for off < end {
		chunkEnd := min(end, (off/span+1)*span, off-off%e.grainBytes+maxChunk)
		var q []byte
		if mode == modeData {
			q, p = p[:chunkEnd-off], p[chunkEnd-off:]
		}
		if err := e.writeChunk(q, off, chunkEnd, parent, mode); err != nil {
			return err
		}
		off = chunkEnd
	}
	return nil
}

// writeChunk handles [off, end), which lies inside one grain table: it
// writes to allocated grains in place, then writes the new grains in one
// request at the end of the file, and only then the grain tables that point
// to them, the redundant one first. Zero modes: whole grains become
// zeroed-grain GTEs where the header allows it (modeZero), grains that
// already read as zeros are left alone, and the others are written with
// zeros.
func (e *sparse) writeChunk(p []byte, off, end int64, parent func(p []byte, off int64) error, mode int) error {
	gdIdx := uint32(off / (e.perGT * e.grainBytes))
	if int(gdIdx) >= len(e.gd) {
		return e.corrupt(fmt.Sprintf("byte %d lies past the grain directory", off))
	}
	tbl := make([]uint32, e.perGT)
	if e.gd[gdIdx] != 0 {
		e.cmu.Lock()
		t, err := e.table(gdIdx)
		if err == nil {
			for i := range tbl {
				tbl[i] = binary.LittleEndian.Uint32(t[i*4:])
			}
		}
		e.cmu.Unlock()
		if err != nil {
			return err
		}
	}
	first := off / e.grainBytes
	last := (end - 1) / e.grainBytes
	base := first - first%e.perGT // grain number of tbl[0]
	zero := mode != modeData
	hasParent := parent != nil

	// Pass 1: count the grains to allocate.
	var nNew int64
	for g := first; g <= last; g++ {
		if e.needsGrain(tbl[g-base], zero, e.whole(g, off, end), hasParent) {
			nNew++
		}
	}
	if nNew > 0 && e.next+nNew*int64(e.h.grainSize)+2*int64(e.h.gtSectors()) > maxExtentSectors {
		return fmt.Errorf("%s: the sparse extent file would grow past 2 TiB: %w", e.name, syscall.ENOSPC)
	}
	newData := make([]byte, nNew*e.grainBytes)
	var zeros []byte
	newSector := e.next
	k := int64(0)
	lo0, hi0 := len(tbl), -1 // the span of changed GTEs
	for g := first; g <= last; g++ {
		gstart := g * e.grainBytes
		lo, hi := max(off, gstart), min(end, gstart+e.grainBytes)
		whole := e.whole(g, off, end)
		i := int(g - base)
		gte := tbl[i]
		if !e.needsGrain(gte, zero, whole, hasParent) {
			st := e.state(gte)
			switch {
			case zero && whole && e.zeroGrain && (mode == modeZero || st != grainData):
				if st != grainZero {
					tbl[i] = gteZeroed
					lo0, hi0 = min(lo0, i), max(hi0, i)
				}
			case zero && st != grainData:
				// Already reads as zeros.
			default:
				if err := e.dataGTE(gte); err != nil {
					return err
				}
				var src []byte
				if zero {
					if zeros == nil {
						zeros = make([]byte, e.grainBytes)
					}
					src = zeros[:hi-lo]
				} else {
					src = p[lo-off : hi-off]
				}
				if _, err := e.f.WriteAt(src, int64(gte)*sectorSize+lo-gstart); err != nil {
					return fmt.Errorf("%s: writing a grain: %w", e.name, err)
				}
			}
			continue
		}
		g0 := newData[k*e.grainBytes : (k+1)*e.grainBytes]
		if !whole && e.state(gte) == grainUnalloc && hasParent {
			// Copy on write: the rest of the grain comes from the
			// parent (within the extent's capacity; the tail past it
			// stays zero).
			if err := parent(g0[:min(e.grainBytes, e.size-gstart)], gstart); err != nil {
				return err
			}
		}
		if zero {
			clear(g0[lo-gstart : hi-gstart])
		} else {
			copy(g0[lo-gstart:], p[lo-off:hi-off])
		}
		tbl[i] = uint32(newSector + k*int64(e.h.grainSize))
		lo0, hi0 = min(lo0, i), max(hi0, i)
		k++
	}
	if hi0 < 0 {
		return nil
	}
	if len(newData) > 0 {
		if _, err := e.f.WriteAt(newData, newSector*sectorSize); err != nil {
			return fmt.Errorf("%s: writing new grains: %w", e.name, err)
		}
		e.next += nNew * int64(e.h.grainSize)
		e.fileSize = max(e.fileSize, e.next*sectorSize)
	}
	return e.writeTable(gdIdx, tbl, lo0, hi0+1)
}

// whole reports whether [off, end) covers grain g entirely (up to the
// extent's end, for a last grain cut short by the capacity).
func (e *sparse) whole(g, off, end int64) bool {
	gstart := g * e.grainBytes
	return off <= gstart && end >= min(gstart+e.grainBytes, e.size)
}

// needsGrain reports whether a write to a grain whose GTE is gte needs a
// new grain: it is not allocated, and the write is data or zeros that would
// otherwise not read back as zeros (a partial zero of a grain whose parent
// shows through, or any zero of one without zeroed-grain GTEs).
func (e *sparse) needsGrain(gte uint32, zero, whole, hasParent bool) bool {
	st := e.state(gte)
	if st == grainData {
		return false
	}
	if !zero {
		return true
	}
	if st == grainZero || !hasParent {
		return false
	}
	return !(whole && e.zeroGrain)
}

// writeTable writes GTEs [lo, hi) of grain table gdIdx, redundant copy
// first, allocating both tables at the end of the file when the directory
// has none yet (then the directories are written after the tables).
func (e *sparse) writeTable(gdIdx uint32, tbl []uint32, lo, hi int) error {
	raw := make([]byte, len(tbl)*4)
	for i, v := range tbl {
		binary.LittleEndian.PutUint32(raw[i*4:], v)
	}
	if e.gd[gdIdx] == 0 {
		if err := e.newTables(gdIdx, raw); err != nil {
			return err
		}
	} else {
		span := raw[lo*4 : hi*4]
		if e.rgd != nil && e.rgd[gdIdx] != 0 {
			if _, err := e.f.WriteAt(span, int64(e.rgd[gdIdx])*sectorSize+int64(lo)*4); err != nil {
				return fmt.Errorf("%s: writing a redundant grain table: %w", e.name, err)
			}
		}
		if _, err := e.f.WriteAt(span, int64(e.gd[gdIdx])*sectorSize+int64(lo)*4); err != nil {
			return fmt.Errorf("%s: writing a grain table: %w", e.name, err)
		}
	}
	e.cmu.Lock()
	e.storeTable(gdIdx, raw)
	e.cmu.Unlock()
	return nil
}

// newTables appends a grain table (and its redundant copy) holding raw,
// then points the directories at them.
func (e *sparse) newTables(gdIdx uint32, raw []byte) error {
	gts := int64(e.h.gtSectors())
	var rgt int64
	if e.rgd != nil {
		rgt = e.next
		e.next += gts
	}
	gt := e.next
	e.next += gts
	// Keep grains aligned after the tables.
	gs := int64(e.h.grainSize)
	e.next = (e.next + gs - 1) / gs * gs
	tbl := make([]byte, gts*sectorSize)
	copy(tbl, raw)
	if rgt != 0 {
		if _, err := e.f.WriteAt(tbl, rgt*sectorSize); err != nil {
			return fmt.Errorf("%s: writing a new redundant grain table: %w", e.name, err)
		}
	}
	if _, err := e.f.WriteAt(tbl, gt*sectorSize); err != nil {
		return fmt.Errorf("%s: writing a new grain table: %w", e.name, err)
	}
	e.fileSize = max(e.fileSize, (gt+gts)*sectorSize)
	var ent [4]byte
	if rgt != 0 {
		binary.LittleEndian.PutUint32(ent[:], uint32(rgt))
		if _, err := e.f.WriteAt(ent[:], e.rgdOff+int64(gdIdx)*4); err != nil {
			return fmt.Errorf("%s: writing the redundant grain directory: %w", e.name, err)
		}
		e.rgd[gdIdx] = uint32(rgt)
	}
	binary.LittleEndian.PutUint32(ent[:], uint32(gt))
	if _, err := e.f.WriteAt(ent[:], e.gdOff+int64(gdIdx)*4); err != nil {
		return fmt.Errorf("%s: writing the grain directory: %w", e.name, err)
	}
	e.gd[gdIdx] = uint32(gt)
	return nil
}

// zero makes [off, off+n) read as zeros (see writeChunk); without
// mayTrim, allocated grains stay allocated.
func (e *sparse) zero(off, n int64, mayTrim bool, parent func(p []byte, off int64) error) error {
	if !e.writable {
		return fmt.Errorf("%s: %w", e.name, errExtentReadOnly)
	}
	mode := modeZero
	if !mayTrim {
		mode = modeZeroKeep
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.writeAllocating(nil, off, off+n, parent, mode)
}

func (e *sparse) flush() error {
	if !e.writable {
		return nil
	}
	if err := unix.Fdatasync(int(e.f.Fd())); err != nil {
		return fmt.Errorf("%s: fdatasync: %w", e.name, err)
	}
	return nil
}
