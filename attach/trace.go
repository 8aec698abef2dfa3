package attach

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Tracing says what attach does, step by step, for `attach --verbose`:
// the caller's steps (pinning the files, starting the supervisor or the
// server) through the function WithTrace puts in the context, as
// net/http/httptrace does, and the server's and supervisor's own steps
// (probing the format, CONNECT, settling) on the stderr they share with
// the caller, which a traced Attach hands them with debugEnv set.

// debugEnv, when set, makes a server or supervisor process write its
// steps to its stderr (and a detached one keep the caller's stderr until
// it logs to the device's log file).
const debugEnv = "NBDLOOP_DEBUG"

// Tracef is a function that takes one line of a trace, without newline.
type Tracef func(format string, args ...any)

type traceKey struct{}

// WithTrace returns ctx with trace, which Attach and Foreground call once
// for each step they take.
func WithTrace(ctx context.Context, trace Tracef) context.Context {
	return context.WithValue(ctx, traceKey{}, trace)
}

// traceOf returns the trace function of ctx, or nil.
func traceOf(ctx context.Context) Tracef {
	t, _ := ctx.Value(traceKey{}).(Tracef)
	return t
}

// tracef calls trace unless it is nil.
func (trace Tracef) tracef(format string, args ...any) {
	if trace != nil {
		trace(format, args...)
	}
}

// debugTrace is the trace of a server or supervisor process: lines on
// its stderr, named after the process, when debugEnv is set; else nil.
func debugTrace(who string) Tracef {
	if os.Getenv(debugEnv) == "" {
		return nil
	}
	prefix := fmt.Sprintf("nbdloop: %s %d: ", who, os.Getpid())
	return func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, prefix+format+"\n", args...)
	}
}

// tracePinned says what pinning made of cfg's paths: the files, by path,
// device and inode.
func tracePinned(trace Tracef, cfg Config) {
	if len(cfg.Files) == 0 {
		trace.tracef("pinning: no files to pin (%s)", cfg.Source)
	}
	for _, f := range cfg.Files {
		what := "file"
		if f.Program {
			what = "program"
		}
		trace.tracef("pinning: %s %s (device %d:%d, inode %d)", what, f.Path, unix.Major(f.Dev), unix.Minor(f.Dev), f.Ino)
	}
}
