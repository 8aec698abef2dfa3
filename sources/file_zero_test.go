package sources_test

import (
	"bytes"
	"os"
	"syscall"
	"testing"

	"github.com/nbdloop/nbdloop/sources"
)

func TestFileTrimPunchesHole(t *testing.T) {
	const size = 4 << 20
	path, _ := writeTemp(t, size)
	f, err := sources.OpenFile(path, sources.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !f.Caps().Trim {
		t.Skipf("the filesystem of %s cannot punch holes", path)
	}
	// Flush has nothing to sync: the bytes were written around f.
	syncPath(t, path)
	before := blocks(t, path)
	if err := f.Trim(1<<20, 2<<20); err != nil {
		t.Fatalf("Trim = %v", err)
	}
	after := blocks(t, path)
	// 2 MiB is 4096 blocks of 512 bytes; allow for filesystem blocks
	// larger than 4 KiB at the edges.
	if before-after < 3000 {
		t.Errorf("st_blocks went from %d to %d after trimming 2 MiB, want about 4096 fewer", before, after)
	}
	// Zero with mayTrim punches too; without it, the blocks stay.
	if _, err := f.WriteAt(bytes.Repeat([]byte{1}, 2<<20), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	before = blocks(t, path)
	if err := f.Zero(1<<20, 2<<20, false); err != nil {
		t.Fatal(err)
	}
	if got := blocks(t, path); got < before-16 {
		t.Errorf("st_blocks went from %d to %d after Zero without mayTrim, want no fewer", before, got)
	}
	if err := f.Zero(1<<20, 2<<20, true); err != nil {
		t.Fatal(err)
	}
	if got := blocks(t, path); before-got < 3000 {
		t.Errorf("st_blocks went from %d to %d after Zero with mayTrim, want about 4096 fewer", before, got)
	}
}

func blocks(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks
}

// syncPath fsyncs the file at path, so that its blocks are allocated.
func syncPath(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}
