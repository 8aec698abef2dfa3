package ublk

import (
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/internal/uring"
)

// stopTag is the user data of the queue's poll on its stop eventfd; tags
// are below maxQueueDepth.
const stopTag = 1 << 32

// queue is one hardware queue of a device: its ring, the request
// descriptors the kernel maps, one buffer per tag and the eventfd that
// stops it.
type queue struct {
	id       uint16
	depth    int
	bufBytes int
	charFd   int
	ring     *uring.Ring
	descMap  []byte
	descs    []ioDesc
	bufs     []byte
	stopFd   int
	h        *handler
	logf     func(string, ...any)
	// w serves the requests of a Source that may block; nil: the queue's
	// thread serves them itself.
	w *workers
	// userCopy: the device has flagUserCopy; the commands carry no buffer
	// and requests are served by handler.serveUserCopy.
	userCopy bool
	// inMemory: the Source is in memory (Caps.InMemory): the workers, if
	// any, only take large requests.
	inMemory bool
	// observe is Options.Observe; starts holds when each tag's request
	// was taken, when it is set.
	observe func(request.Request)
	starts  []time.Time
}

// newQueue maps queue id's descriptors from /dev/ublkcN (charFd) and its
// buffers; run sets up its ring.
func newQueue(id uint16, depth, bufBytes, charFd int, h *handler, logf func(string, ...any)) (*queue, error) {
	q := &queue{id: id, depth: depth, bufBytes: bufBytes, charFd: charFd, h: h, logf: logf, stopFd: -1}
	page := unix.Getpagesize()
	size := (depth*int(unsafe.Sizeof(ioDesc{})) + page - 1) / page * page
	off := int64(id) * maxQueueDepth * int64(unsafe.Sizeof(ioDesc{}))
	var err error
	if q.descMap, err = unix.Mmap(charFd, off, size, unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return nil, fmt.Errorf("ublk: queue %d: mapping its request descriptors: %w", id, err)
	}
	q.descs = unsafe.Slice((*ioDesc)(unsafe.Pointer(&q.descMap[0])), depth)
	if q.bufs, err = unix.Mmap(-1, 0, depth*bufBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS); err != nil {
		q.close()
		return nil, fmt.Errorf("ublk: queue %d: mapping %d buffers: %w", id, depth, err)
	}
	if q.stopFd, err = unix.Eventfd(0, unix.EFD_CLOEXEC); err != nil {
		q.close()
		return nil, fmt.Errorf("ublk: queue %d: eventfd: %w", id, err)
	}
	return q, nil
}

// ringFlags make the queue's thread the ring's only submitter and let
// completions wait until it asks for them, instead of interrupting it.
const ringFlags = uring.SetupCoopTaskrun | uring.SetupSingleIssuer | uring.SetupDeferTaskrun

// newRing sets up the queue's ring on the calling thread (its only
// submitter), with room for a command per tag and the poll.
func (q *queue) newRing() error {
	entries := uint32(1)
	for entries < uint32(q.depth+1) {
		entries <<= 1
	}
	r, err := uring.New(entries, ringFlags)
	if err != nil {
		return fmt.Errorf("ublk: queue %d: %w", q.id, err)
	}
	q.ring = r
	return nil
}

// close releases what newQueue set up; the kernel cancels the commands
// still pending on the ring.
func (q *queue) close() {
	if q.ring != nil {
		q.ring.Close()
		q.ring = nil
	}
	if q.descMap != nil {
		unix.Munmap(q.descMap)
		q.descMap, q.descs = nil, nil
	}
	if q.bufs != nil {
		unix.Munmap(q.bufs)
		q.bufs = nil
	}
	if q.stopFd >= 0 {
		unix.Close(q.stopFd)
		q.stopFd = -1
	}
}

// stop wakes the queue's loop, which then returns.
func (q *queue) stop() {
	unix.Write(q.stopFd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
}

// buf is tag's buffer.
func (q *queue) buf(tag int) []byte {
	return q.bufs[tag*q.bufBytes : (tag+1)*q.bufBytes : (tag+1)*q.bufBytes]
}

// push queues command nr for tag with result res. The ring has room for a
// command per tag, so it is full only when the kernel has not consumed a
// submission yet; then what is queued is submitted first.
func (q *queue) push(nr uint32, tag int, res int32) {
	e := q.ring.GetSQE()
	for e == nil {
		q.ring.Submit(0)
		e = q.ring.GetSQE()
	}
	e.Opcode, e.Fd, e.Off, e.UserData = uring.OpURingCmd, int32(q.charFd), uint64(ioOp(nr)), uint64(tag)
	var addr uint64 // user copy: none (the kernel refuses one)
	if !q.userCopy {
		addr = uint64(uintptr(unsafe.Pointer(&q.bufs[tag*q.bufBytes])))
	}
	ioCmd{queueID: q.id, tag: uint16(tag), result: res, addr: addr}.encode(e.Cmd[:])
}

// serve carries out tag's request and returns its result.
func (q *queue) serve(tag int) int32 {
	var res int32
	if q.userCopy {
		res = q.h.serveUserCopy(&q.descs[tag], q.buf(tag), q.charFd, userCopyPos(q.id, uint16(tag), 0))
	} else {
		res = q.h.serve(&q.descs[tag], q.buf(tag))
	}
	if q.observe != nil {
		if r, ok := observed(q.id, &q.descs[tag], q.starts[tag], res); ok {
			q.observe(r)
		}
	}
	return res
}

// run serves the queue on the calling goroutine, locked to its thread for
// good (ublk takes a queue's commands from one task; the thread ends with
// the goroutine). It sends ready the outcome of fetching every tag, then
// serves until stopped or until the kernel aborts every fetch (the device
// is gone).
func (q *queue) run(ready chan<- error) error {
	runtime.LockOSThread()
	if err := q.newRing(); err != nil {
		ready <- err
		return err
	}
	e := q.ring.GetSQE()
	e.Opcode, e.Fd, e.OpFlags, e.UserData = uring.OpPollAdd, int32(q.stopFd), unix.POLLIN, stopTag
	for tag := 0; tag < q.depth; tag++ {
		q.push(ioFetchReq, tag, 0)
	}
	if _, err := q.ring.Submit(0); err != nil {
		err = fmt.Errorf("ublk: queue %d: fetching requests: %w", q.id, err)
		ready <- err
		return err
	}
	q.inMemory = q.h.src.Caps().InMemory
	if !q.inMemory || q.userCopy {
		n := 1 // the handler serializes a Source that is not Parallel
		switch {
		case q.h.mu != nil:
		case q.inMemory: // copies only: one per CPU
			n = runtime.NumCPU()
		default:
			n = min(q.depth, 32)
		}
		w, err := newWorkers(q, n)
		if err != nil {
			ready <- err
			return err
		}
		q.w = w
		defer w.stop()
		q.pollWake()
	}
	ready <- nil
	return q.loop()
}

// handOverBytes is the smallest request of a Source in memory that the
// queue hands to its workers: a copy long enough to be worth a thread's
// wake-up.
const handOverBytes = 256 << 10

// handOver reports whether tag's request, one of batch completions, goes
// to the workers: while others wait or the workers are busy, any request
// of a Source that may block, and the large ones of a Source in memory
// (served with user copy: the kernel's copies then run on several CPUs).
func (q *queue) handOver(tag int, batch uint32) bool {
	if batch <= 1 && q.w.busy == 0 {
		return false
	}
	return !q.inMemory || int64(q.descs[tag].nrSectors)<<9 >= handOverBytes
}

// pollWake asks the ring for a completion when the workers have finished
// requests.
func (q *queue) pollWake() {
	e := q.ring.GetSQE()
	for e == nil {
		q.ring.Submit(0)
		e = q.ring.GetSQE()
	}
	e.Opcode, e.Fd, e.OpFlags, e.UserData = uring.OpPollAdd, int32(q.w.wakeFd), unix.POLLIN, wakeTag
}

// loop waits for completions, serves each request (or hands it to the
// workers, and commits what they finished when woken) and commits it with
// the next fetch, submitting the commits of a batch together.
func (q *queue) loop() error {
	active := q.depth
	for active > 0 {
		if _, err := q.ring.Submit(1); err != nil {
			return fmt.Errorf("ublk: queue %d: %w", q.id, err)
		}
		batch := q.ring.Ready()
		for c := q.ring.PeekCQE(); c != nil; c = q.ring.PeekCQE() {
			tag, res := c.UserData, c.Res
			q.ring.Seen()
			if tag == stopTag {
				return nil
			}
			if tag == wakeTag {
				q.w.commitDone()
				q.pollWake()
				continue
			}
			if res < 0 || tag >= uint64(q.depth) {
				// resAbort: the device is going away; anything else is
				// a command the kernel refused. Either way the tag is
				// done.
				if res != resAbort {
					q.logf("ublk: queue %d: tag %d: the kernel answered %d", q.id, tag, res)
				}
				active--
				continue
			}
			if q.observe != nil {
				q.starts[tag] = time.Now()
			}
			if q.w != nil && q.handOver(int(tag), batch) {
				q.w.busy++
				q.w.work <- uint16(tag)
				continue
			}
			t := int(tag)
			q.push(ioCommitAndFetch, t, q.serve(t))
		}
	}
	return nil
}
