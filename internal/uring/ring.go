package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Setup flags a caller may add to New's (include/uapi/linux/io_uring.h).
const (
	// SetupCoopTaskrun: completions are not announced by interrupting the
	// ring's task; it finds them when it next enters the kernel.
	SetupCoopTaskrun = 1 << 8
	// SetupSingleIssuer: only the thread that creates the ring submits.
	SetupSingleIssuer = 1 << 12
	// SetupDeferTaskrun (with SetupSingleIssuer): completion work runs
	// only when the ring's thread waits for completions.
	SetupDeferTaskrun = 1 << 13
)

// Opcodes and flags of io_uring used here (include/uapi/linux/io_uring.h).
const (
	OpNop      = 0
	OpPollAdd  = 6
	OpURingCmd = 46

	setupSQE128 = 1 << 10
	setupCQE32  = 1 << 11

	featSingleMmap = 1 << 0

	enterGetEvents = 1 << 0

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000
)

// SQE is a 128-byte submission entry. For IORING_OP_URING_CMD, Off holds
// the command number (cmd_op) in its low 32 bits and Cmd the command's
// own bytes.
type SQE struct {
	Opcode      uint8
	Flags       uint8
	IOPrio      uint16
	Fd          int32
	Off         uint64
	Addr        uint64
	Len         uint32
	OpFlags     uint32
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	FileIndex   int32
	Cmd         [80]byte
}

// CQE is a 32-byte completion entry.
type CQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
	Big      [2]uint64
}

// params is struct io_uring_params.
type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqOffsets
	cqOff                                                                  cqOffsets
}

type sqOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

// Ring is one io_uring instance with its rings mapped.
type Ring struct {
	fd             int
	sqMap, cqMap   []byte
	sqeMap         []byte
	sqHead, sqTail *uint32
	sqMask         uint32
	sqEntries      uint32
	sqes           []SQE
	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []CQE
	local          uint32 // the SQ tail as filled, published by Submit
}

// ErrUnsupported is returned by New when the kernel has no io_uring or has
// it disabled (kernel.io_uring_disabled).
var ErrUnsupported = errors.New("io_uring is not available")

// New sets up a ring with at least entries submission entries (a power of
// two up to 32768; the kernel rounds up), 128-byte submission and 32-byte
// completion entries and the Setup flags in flags, and maps its rings.
func New(entries, flags uint32) (*Ring, error) {
	var p params
	p.flags = setupSQE128 | setupCQE32 | flags
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		if errno == syscall.ENOSYS || errno == syscall.EPERM {
			return nil, fmt.Errorf("io_uring_setup: %w: %w", ErrUnsupported, errno)
		}
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &Ring{fd: int(fd)}
	if err := r.mapRings(&p); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// mapRings maps the rings and the submission entries and points the
// Ring's fields at them.
func (r *Ring) mapRings(p *params) error {
	sqSize := int(p.sqOff.array + p.sqEntries*4)
	cqSize := int(p.cqOff.cqes) + int(p.cqEntries)*int(unsafe.Sizeof(CQE{}))
	single := p.features&featSingleMmap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	r.sqMap, err = unix.Mmap(r.fd, offSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("io_uring: mapping the submission ring: %w", err)
	}
	r.cqMap = r.sqMap
	if !single {
		if r.cqMap, err = unix.Mmap(r.fd, offCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
			return fmt.Errorf("io_uring: mapping the completion ring: %w", err)
		}
	}
	sqeBytes := int(p.sqEntries) * int(unsafe.Sizeof(SQE{}))
	if r.sqeMap, err = unix.Mmap(r.fd, offSQEs, sqeBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return fmt.Errorf("io_uring: mapping the submission entries: %w", err)
	}
	sq, cq := unsafe.Pointer(&r.sqMap[0]), unsafe.Pointer(&r.cqMap[0])
	r.sqHead = (*uint32)(unsafe.Add(sq, p.sqOff.head))
	r.sqTail = (*uint32)(unsafe.Add(sq, p.sqOff.tail))
	r.sqMask = *(*uint32)(unsafe.Add(sq, p.sqOff.ringMask))
	r.sqEntries = p.sqEntries
	array := unsafe.Slice((*uint32)(unsafe.Add(sq, p.sqOff.array)), p.sqEntries)
	for i := range array {
		array[i] = uint32(i) // slot i always holds entry i
	}
	r.sqes = unsafe.Slice((*SQE)(unsafe.Pointer(&r.sqeMap[0])), p.sqEntries)
	r.cqHead = (*uint32)(unsafe.Add(cq, p.cqOff.head))
	r.cqTail = (*uint32)(unsafe.Add(cq, p.cqOff.tail))
	r.cqMask = *(*uint32)(unsafe.Add(cq, p.cqOff.ringMask))
	r.cqes = unsafe.Slice((*CQE)(unsafe.Add(cq, p.cqOff.cqes)), p.cqEntries)
	r.local = atomic.LoadUint32(r.sqTail)
	return nil
}

// Fd is the ring's file descriptor.
func (r *Ring) Fd() int { return r.fd }

// GetSQE returns the next free submission entry, zeroed, or nil when
// every entry is filled and not yet consumed by the kernel.
func (r *Ring) GetSQE() *SQE {
	head := atomic.LoadUint32(r.sqHead)
	if r.local-head >= r.sqEntries {
		return nil
	}
	e := &r.sqes[r.local&r.sqMask]
	*e = SQE{}
	r.local++
	return e
}

// Submit publishes the entries filled since the last Submit and, with
// wait > 0, waits until at least wait completions are ready. It returns
// the number of entries the kernel consumed. An interrupted wait is
// retried.
func (r *Ring) Submit(wait uint32) (int, error) {
	atomic.StoreUint32(r.sqTail, r.local)
	toSubmit := r.local - atomic.LoadUint32(r.sqHead)
	var flags uintptr
	if wait > 0 {
		flags = enterGetEvents
	}
	for {
		n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(toSubmit), uintptr(wait), flags, 0, 0)
		switch errno {
		case 0:
			return int(n), nil
		case syscall.EINTR:
			// Entries consumed before the interruption are not
			// submitted again: count what is left.
			toSubmit = r.local - atomic.LoadUint32(r.sqHead)
			continue
		}
		return 0, fmt.Errorf("io_uring_enter: %w", errno)
	}
}

// PeekCQE returns the oldest completion not yet marked seen, or nil.
func (r *Ring) PeekCQE() *CQE {
	head := atomic.LoadUint32(r.cqHead)
	if head == atomic.LoadUint32(r.cqTail) {
		return nil
	}
	return &r.cqes[head&r.cqMask]
}

// Ready is the number of completions not yet marked seen.
func (r *Ring) Ready() uint32 {
	return atomic.LoadUint32(r.cqTail) - atomic.LoadUint32(r.cqHead)
}

// Seen hands the completion PeekCQE returned back to the kernel; its
// fields must be read before.
func (r *Ring) Seen() {
	atomic.StoreUint32(r.cqHead, atomic.LoadUint32(r.cqHead)+1)
}

// Close unmaps the rings and closes the ring; commands still pending are
// cancelled by the kernel.
func (r *Ring) Close() error {
	if r.sqeMap != nil {
		unix.Munmap(r.sqeMap)
	}
	if r.cqMap != nil && unsafe.SliceData(r.cqMap) != unsafe.SliceData(r.sqMap) {
		unix.Munmap(r.cqMap)
	}
	if r.sqMap != nil {
		unix.Munmap(r.sqMap)
	}
	r.sqeMap, r.cqMap, r.sqMap, r.sqes, r.cqes = nil, nil, nil, nil, nil
	if r.fd < 0 {
		return nil
	}
	err := unix.Close(r.fd)
	r.fd = -1
	return err
}
