package attach

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// A server process on the same host as its block device can deadlock the
// machine: to free memory the kernel may write dirty pages to /dev/nbdN, and
// if serving that write needs memory, the server waits on the reclaim that
// waits on it. The server process guards against this three ways:
//
//   - PR_SET_IO_FLUSHER (Linux 5.6+, the kernel's own answer for userspace
//     block servers): allocations of a flagged task never recurse into I/O
//     reclaim. The flag is per thread and inherited across clone and execve,
//     so it is set on a locked thread that then forks the server process:
//     every thread the server's Go runtime ever creates inherits it.
//     Setting it in the server itself would cover only the thread that
//     happened to run the prctl.
//   - oom_score_adj -1000: the OOM killer must not pick the process that
//     the system needs in order to write back memory.
//   - mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT) for file-backed sources,
//     so the server's own code and buffers are never paged out to swap
//     (which could be on the device it serves). MCL_ONFAULT locks pages only
//     as they are touched; without it MCL_FUTURE would populate every
//     address range the Go runtime reserves. RAM disks (memory:) are not
//     locked: their data is the heap, and locked pages can neither be
//     returned to the kernel after a trim (madvise fails on them) nor
//     swapped, so a large RAM disk could pin all memory.

// startWithIOFlusher starts cmd from an OS thread flagged with
// PR_SET_IO_FLUSHER, so the child and all its threads inherit the flag. The
// thread is never unlocked, so the Go runtime discards it afterwards instead
// of reusing a flagged thread for unrelated work. It returns whether the flag
// was set (it needs CAP_SYS_RESOURCE and Linux 5.6).
func startWithIOFlusher(cmd *exec.Cmd) (flagged bool, err error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		flagged = unix.Prctl(unix.PR_SET_IO_FLUSHER, 1, 0, 0, 0) == nil
		err = cmd.Start()
	}()
	<-done
	return flagged, err
}

// protect applies the in-process protections and returns notes for the
// server log.
func protect(lock bool) []string {
	var notes []string
	if v, err := unix.PrctlRetInt(unix.PR_GET_IO_FLUSHER, 0, 0, 0, 0); err != nil || v != 1 {
		notes = append(notes, fmt.Sprintf("warning: PR_SET_IO_FLUSHER is not set (%v): memory pressure may deadlock writes to the device", err))
	}
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte("-1000\n"), 0); err != nil {
		notes = append(notes, fmt.Sprintf("warning: setting oom_score_adj: %v", err))
	}
	if lock {
		if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT); err != nil {
			notes = append(notes, fmt.Sprintf("warning: mlockall: %v", err))
		}
	}
	return notes
}
