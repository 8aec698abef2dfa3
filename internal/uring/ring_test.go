package uring

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestLayout checks the entry sizes the kernel expects of SQE128 and CQE32
// rings, and where the command bytes start.
func TestLayout(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"SQE size", unsafe.Sizeof(SQE{}), 128},
		{"SQE.UserData offset", unsafe.Offsetof(SQE{}.UserData), 32},
		{"SQE.Cmd offset", unsafe.Offsetof(SQE{}.Cmd), 48},
		{"CQE size", unsafe.Sizeof(CQE{}), 32},
		{"params size", unsafe.Sizeof(params{}), 120},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

func newRing(t *testing.T, entries uint32) *Ring {
	t.Helper()
	r, err := New(entries, 0)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestNopRoundTrip submits batches of NOPs, more in total than the ring
// holds, and checks each completion comes back once with its user data.
func TestNopRoundTrip(t *testing.T) {
	r := newRing(t, 8)
	next := uint64(0)
	seen := map[uint64]bool{}
	for round := 0; round < 5; round++ {
		n := 0
		for e := r.GetSQE(); e != nil; e = r.GetSQE() {
			e.Opcode, e.UserData = OpNop, next
			next++
			n++
		}
		if n != 8 {
			t.Fatalf("round %d: got %d free entries, want 8", round, n)
		}
		if _, err := r.Submit(uint32(n)); err != nil {
			t.Fatal(err)
		}
		if got := r.Ready(); got != 8 {
			t.Fatalf("round %d: Ready() = %d, want 8", round, got)
		}
		for c := r.PeekCQE(); c != nil; c = r.PeekCQE() {
			if c.Res != 0 || seen[c.UserData] {
				t.Fatalf("completion %+v: res or duplicate", *c)
			}
			seen[c.UserData] = true
			r.Seen()
		}
	}
	if len(seen) != 40 {
		t.Fatalf("%d completions, want 40", len(seen))
	}
}

// TestPollWakes checks that a POLL_ADD on an eventfd completes once the
// eventfd is written, the wake-up a ublk queue uses to stop.
func TestPollWakes(t *testing.T) {
	r := newRing(t, 4)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	e := r.GetSQE()
	e.Opcode, e.Fd, e.OpFlags, e.UserData = OpPollAdd, int32(efd), unix.POLLIN, 7
	if _, err := r.Submit(0); err != nil {
		t.Fatal(err)
	}
	if c := r.PeekCQE(); c != nil {
		t.Fatalf("completion before the write: %+v", *c)
	}
	unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	if _, err := r.Submit(1); err != nil {
		t.Fatal(err)
	}
	c := r.PeekCQE()
	if c == nil || c.UserData != 7 || c.Res&unix.POLLIN == 0 {
		t.Fatalf("completion %v, want user data 7 with POLLIN", c)
	}
}

// TestSteadyStateAllocs checks that a submit and reap cycle allocates
// nothing.
func TestSteadyStateAllocs(t *testing.T) {
	r := newRing(t, 4)
	allocs := testing.AllocsPerRun(1000, func() {
		e := r.GetSQE()
		e.Opcode = OpNop
		r.Submit(1)
		for c := r.PeekCQE(); c != nil; c = r.PeekCQE() {
			r.Seen()
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per cycle, want 0", allocs)
	}
}
