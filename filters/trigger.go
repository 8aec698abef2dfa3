package filters

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// How often a trigger file's existence is checked besides inotify: slowly
// while its directory is watched (inotify does not see changes made by
// another NFS client, nor the renaming of a directory above), often while
// it cannot be (the directory does not exist, or inotify is out of
// watches). Polling often all the time costs a filter in front of a RAM
// disk about a third of its random-read rate; the watch costs nothing
// measurable (docs/performance.md, section filters).
const (
	triggerSlowPoll = time.Second
	triggerFastPoll = 10 * time.Millisecond
)

// trigger follows whether a file exists, so that the request path pays one
// atomic load. A goroutine watches the file's directory with inotify and
// checks the file again on each change there, which makes a new or removed
// file take effect at once on local file systems, and polls as well (see
// triggerSlowPoll). Existence is stat's: a symbolic link counts when its
// target exists, and a change of the target is seen by the poll. A nil
// trigger is always on.
type trigger struct {
	path       string
	slow, fast time.Duration
	on         atomic.Bool
	stop       chan struct{}
	done       chan struct{}
	once       sync.Once

	mu     sync.Mutex // guards watch and closed, between the goroutine and close
	watch  *os.File   // the inotify descriptor, nil while not watching
	closed bool
}

func newTrigger(path string) *trigger {
	if path == "" {
		return nil
	}
	return startTrigger(path, triggerSlowPoll, triggerFastPoll)
}

func startTrigger(path string, slow, fast time.Duration) *trigger {
	t := &trigger{path: path, slow: slow, fast: fast, stop: make(chan struct{}), done: make(chan struct{})}
	t.startWatch()
	t.check() // after the watch is set: a change in between is not lost
	go t.run()
	return t
}

func (t *trigger) check() {
	_, err := os.Stat(t.path)
	t.on.Store(err == nil)
}

// active reports whether the file existed at the last check.
func (t *trigger) active() bool { return t == nil || t.on.Load() }

// startWatch watches the file's directory, if it can and is not already.
func (t *trigger) startWatch() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.watch != nil || t.closed {
		return
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return
	}
	const mask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
		unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(t.path), mask); err != nil {
		unix.Close(fd)
		return
	}
	// Non-blocking: the runtime's poller waits for it, and Read takes
	// deadlines.
	t.watch = os.NewFile(uintptr(fd), "inotify")
}

// stopWatch closes the watch, which ends a Read waiting on it.
func (t *trigger) stopWatch() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.watch != nil {
		t.watch.Close()
		t.watch = nil
	}
}

func (t *trigger) run() {
	defer close(t.done)
	defer t.stopWatch()
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	timer := time.NewTimer(t.fast)
	defer timer.Stop()
	for {
		t.mu.Lock()
		w := t.watch
		t.mu.Unlock()
		if w == nil {
			timer.Reset(t.fast)
			select {
			case <-t.stop:
				return
			case <-timer.C:
			}
			t.startWatch()
			t.check()
			continue
		}
		w.SetReadDeadline(time.Now().Add(t.slow))
		n, err := w.Read(buf)
		select {
		case <-t.stop:
			return
		default:
		}
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
		case err != nil:
			t.stopWatch() // polled often until the watch can be made again
		case watchGone(buf[:n]):
			t.stopWatch()
			t.startWatch()
		}
		t.check()
	}
}

// watchGone reports whether the events say that the watched directory went
// away (deleted, renamed, unmounted), or that events were lost.
func watchGone(events []byte) bool {
	for len(events) >= unix.SizeofInotifyEvent {
		mask := binary.NativeEndian.Uint32(events[4:8])
		if mask&(unix.IN_IGNORED|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_UNMOUNT|unix.IN_Q_OVERFLOW) != 0 {
			return true
		}
		events = events[min(len(events), unix.SizeofInotifyEvent+int(binary.NativeEndian.Uint32(events[12:16]))):]
	}
	return false
}

func (t *trigger) close() {
	if t == nil {
		return
	}
	t.once.Do(func() {
		close(t.stop)
		t.mu.Lock()
		t.closed = true
		t.mu.Unlock()
		t.stopWatch()
		<-t.done
	})
}
