package ublk

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// wakeTag is the user data of a queue's poll on its workers' eventfd.
const wakeTag = stopTag + 1

// workers serve the requests of a queue whose Source may block (one that
// is not InMemory) on goroutines of their own, so that a slow request does
// not hold up the queue's others; for a Source in memory served with user
// copy, the large requests of a batch, so that their copies run on
// several CPUs. A request that arrives alone while the
// workers are idle is served on the queue's thread all the same: a
// hand-over costs two thread wake-ups, more than most requests to a file. The queue's thread hands them tags
// through work; a worker serves the tag, leaves its result in results,
// sends the tag on done and writes the eventfd the queue's ring polls, and
// the queue's thread commits it. Channels of tags and a preset eventfd
// value: nothing is allocated per request.
type workers struct {
	q       *queue
	work    chan uint16
	done    chan uint16
	results []int32
	wakeFd  int
	one     [8]byte // the eventfd increment, 1
	drain   [8]byte
	wg      sync.WaitGroup
	// busy counts the tags handed to the workers and not yet committed
	// (the queue's thread alone uses it).
	busy int
}

// newWorkers starts n workers for q.
func newWorkers(q *queue, n int) (*workers, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("ublk: queue %d: eventfd: %w", q.id, err)
	}
	w := &workers{q: q, work: make(chan uint16, q.depth), done: make(chan uint16, q.depth),
		results: make([]int32, q.depth), wakeFd: fd}
	w.one[0] = 1
	for range n {
		w.wg.Add(1)
		go w.serve()
	}
	return w, nil
}

func (w *workers) serve() {
	defer w.wg.Done()
	for tag := range w.work {
		w.results[tag] = w.q.serve(int(tag))
		w.done <- tag
		unix.Write(w.wakeFd, w.one[:])
	}
}

// commitDone resets the eventfd and queues the commits of every tag the
// workers have finished; a tag finished after the reset writes the
// eventfd again.
func (w *workers) commitDone() {
	unix.Read(w.wakeFd, w.drain[:])
	for {
		select {
		case tag := <-w.done:
			w.busy--
			w.q.push(ioCommitAndFetch, int(tag), w.results[tag])
		default:
			return
		}
	}
}

// stop waits for the workers to finish what they were given and releases
// them.
func (w *workers) stop() {
	close(w.work)
	w.wg.Wait()
	unix.Close(w.wakeFd)
}
