package sources_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/sources"
	"golang.org/x/sys/unix"
)

// TestFileFlushSyncsOnlyAfterChanges counts the fdatasync calls of Flush
// and Close: one per flush that follows a modifying call, none otherwise.
func TestFileFlushSyncsOnlyAfterChanges(t *testing.T) {
	type op func(t *testing.T, f *sources.File)
	write := func(t *testing.T, f *sources.File) {
		if _, err := f.WriteAt([]byte{1, 2, 3}, 100); err != nil {
			t.Fatalf("WriteAt = %v", err)
		}
	}
	failedWrite := func(t *testing.T, f *sources.File) {
		if _, err := f.WriteAt([]byte{1}, 1<<20); err == nil {
			t.Fatalf("WriteAt past the end succeeded")
		}
	}
	read := func(t *testing.T, f *sources.File) {
		if _, err := f.ReadAt(make([]byte, 10), 0); err != nil {
			t.Fatalf("ReadAt = %v", err)
		}
	}
	trim := func(t *testing.T, f *sources.File) {
		if err := f.Trim(0, 4096); err != nil {
			t.Fatalf("Trim = %v", err)
		}
	}
	zero := func(t *testing.T, f *sources.File) {
		if err := f.Zero(4096, 4096, false); err != nil {
			t.Fatalf("Zero = %v", err)
		}
	}
	flush := func(t *testing.T, f *sources.File) {
		if err := f.Flush(); err != nil {
			t.Fatalf("Flush = %v", err)
		}
	}
	tests := []struct {
		name     string
		readOnly bool
		ops      []op
		want     int64 // fdatasync calls, Close included
	}{
		{"open and close", false, nil, 0},
		{"read only", false, []op{read, flush}, 0},
		{"flush without writes", false, []op{flush, flush}, 0},
		{"write then close", false, []op{write}, 1},
		{"write flush close", false, []op{write, flush}, 1},
		{"write flush flush", false, []op{write, flush, flush}, 1},
		{"two writes one flush", false, []op{write, write, flush}, 1},
		{"write flush write close", false, []op{write, flush, write}, 2},
		{"out of range write", false, []op{failedWrite, flush}, 0},
		{"trim", false, []op{trim, flush}, 1},
		{"zero", false, []op{zero, flush}, 1},
		{"read-only file", true, []op{read, flush}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, _ := writeTemp(t, 16384)
			f, err := sources.OpenFile(path, sources.FileOptions{ReadOnly: tt.readOnly})
			if err != nil {
				t.Fatal(err)
			}
			var syncs atomic.Int64
			sources.SetDatasync(f, func(fd int) error { syncs.Add(1); return unix.Fdatasync(fd) })
			for _, op := range tt.ops {
				op(t, f)
			}
			if err := f.Close(); err != nil {
				t.Fatalf("Close = %v", err)
			}
			if got := syncs.Load(); got != tt.want {
				t.Errorf("fdatasync calls = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestFileFlushCoversCompletedWrites has writers that each write a new
// value to their own block and then Flush, while other writers flush. The
// fake fdatasync reads the file when it starts, and what it read counts as
// durable once it returns. After each Flush, the writer's last value must
// be durable, even when the Flush itself had nothing left to sync because
// another one, still running, took the write.
func TestFileFlushCoversCompletedWrites(t *testing.T) {
	const writers, rounds, block = 4, 100, 4096
	path, _ := writeTemp(t, writers*block)
	f, err := sources.OpenFile(path, sources.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var mu sync.Mutex
	durable := make([]byte, writers) // the highest value made durable, per writer
	sources.SetDatasync(f, func(fd int) error {
		snap := make([]byte, writers*block)
		if _, err := unix.Pread(fd, snap, 0); err != nil {
			return err
		}
		time.Sleep(50 * time.Microsecond) // let other flushes queue up
		mu.Lock()
		for i := range writers {
			durable[i] = max(durable[i], snap[i*block])
		}
		mu.Unlock()
		return nil
	})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			buf := make([]byte, 512)
			for v := 1; v <= rounds; v++ {
				for i := range buf {
					buf[i] = byte(v)
				}
				if _, err := f.WriteAt(buf, int64(w*block)); err != nil {
					t.Errorf("WriteAt = %v", err)
					return
				}
				if v%2 == 0 {
					// Give another writer's Flush time to take this write.
					time.Sleep(20 * time.Microsecond)
				}
				if err := f.Flush(); err != nil {
					t.Errorf("Flush = %v", err)
					return
				}
				mu.Lock()
				got := durable[w]
				mu.Unlock()
				if got < byte(v) {
					t.Errorf("writer %d: after Flush, value %d is durable, want %d", w, got, v)
					return
				}
			}
		})
	}
	wg.Wait()
}
