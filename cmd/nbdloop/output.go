package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
)

// safeOutput is a file that a command writes in full before anyone sees
// it: the bytes go to a temporary file in the output's directory, which
// commit syncs and moves into place (rename with --force, link otherwise,
// so an output that appeared meanwhile is never replaced). An error, abort
// or a SIGINT, SIGTERM or SIGHUP before commit removes the temporary file:
// no partial output is ever left, and a re-run starts clean (xz and zstd
// remove their partial output the same way).
type safeOutput struct {
	path, tmp string
	force     bool
	f         *os.File

	mu   sync.Mutex // done and the removal of tmp
	done bool
	sigs chan os.Signal
}

func newSafeOutput(path string, force bool) (*safeOutput, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	// The signals are caught before the temporary file exists, so that no
	// signal can end the process between its creation and its removal.
	o := &safeOutput{path: path, force: force, sigs: make(chan os.Signal, 1)}
	signal.Notify(o.sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go o.onSignal(o.sigs)
	o.mu.Lock()
	defer o.mu.Unlock()
	f, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err == nil {
		o.f, o.tmp = f, f.Name()
		if err = f.Chmod(0o644); err != nil {
			f.Close()
			os.Remove(o.tmp)
		}
	}
	if err != nil {
		o.done = true // nothing to remove
		o.stopSignals()
		return nil, fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	return o, nil
}

// onSignal removes the temporary file and ends the process as the signal
// would have (status 128+N); it returns when sigs is closed.
func (o *safeOutput) onSignal(sigs <-chan os.Signal) {
	sig, ok := <-sigs
	if !ok {
		return
	}
	o.mu.Lock() // never released: the process ends here
	if !o.done && o.tmp != "" {
		os.Remove(o.tmp)
	}
	fmt.Fprintf(os.Stderr, "\nnbdloop: %s: interrupted (%v): nothing written\n", o.path, sig)
	os.Exit(128 + int(sig.(syscall.Signal)))
}

// commit syncs the temporary file and puts it at the output's path.
func (o *safeOutput) commit() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	err := o.f.Sync()
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if o.force {
			err = os.Rename(o.tmp, o.path)
		} else if err = os.Link(o.tmp, o.path); errors.Is(err, fs.ErrExist) {
			err = fmt.Errorf("already exists (remove it, or add --force)")
		}
	}
	if err == nil {
		// The directory entry, too, must survive a crash.
		if d, derr := os.Open(filepath.Dir(o.path)); derr == nil {
			d.Sync()
			d.Close()
		}
	}
	if !o.force || err != nil {
		os.Remove(o.tmp)
	}
	o.done = err == nil
	o.stopSignals()
	return unwrapPath(err)
}

// abort removes the temporary file unless commit succeeded.
func (o *safeOutput) abort() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.done {
		o.f.Close()
		os.Remove(o.tmp)
	}
	o.stopSignals()
}

func (o *safeOutput) stopSignals() {
	if o.sigs != nil {
		signal.Stop(o.sigs)
		close(o.sigs)
		o.sigs = nil
	}
}

// sameFile reports whether a and b are the same file (device and inode,
// symbolic links followed): an output that is an input is refused.
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false
	}
	return os.SameFile(fa, fb)
}
