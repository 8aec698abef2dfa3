// Package filters wraps a sources.Source in another Source that changes
// what the kernel sees, like nbdkit's filters: error injects errors, delay
// and rate slow requests down, cow makes any source writable without
// changing it, protect and readonly refuse writes, and log and stats record
// every request.
//
// Every filter is a sources.Source that holds the Source it wraps in a
// field named next and implements every method itself (no embedding), so a
// method added to Source stops every filter compiling until each decides
// what it means there. Capabilities are derived from next's field by field
// in the constructor. Closing a filter closes next.
//
// Filters are named on the command line as specs, NAME:KEY=VALUE,... (see
// Parse). Table describes every filter and its options; it is the one
// source of the --help text and man page (Help), bash completion (Complete)
// and the "unknown key" errors. Open builds a chain from specs: the first
// spec is the outermost filter, nearest the kernel, as with nbdkit's
// --filter.
//
// The log and stats filters need what a Source cannot see (the connection,
// the NBD flags, the latency including queueing in the server), so they are
// also Observers: the attach layer hands Stack.ObserveFunc to the NBD
// server, which passes it every request it answers as a request.Request,
// the type the server, the filters and package pictures share (the error
// and delay filters name kinds of request with its Op). They see the
// requests as the kernel sent them, wherever they are in the chain.
//
// Filters that wait or measure time take a Clock from Env, so their tests
// run on a fake clock; trigger files (file=PATH) are followed by a
// goroutine (an inotify watch on their directory, and a poll every second),
// so a filter that is not triggered costs an atomic load per request.
//
// Every filter passes on the extents of the Source it wraps
// (sources.Extenter: holes, zeros, data), which network clients ask for
// with NBD_CMD_BLOCK_STATUS; cow reports the blocks written through it as
// its overlay does.
//
// # Files
//
// The spec language is split by job: spec.go parses and renders specs
// (Spec, Parse); registry.go is the table of filters and their options
// (Def, Option, Table, Lookup); kinds.go the kinds of values an option takes
// and their canonical forms (BYTES is read by internal/bytesize, as SIZE
// is), with the NBD errno names; args.go the typed values a filter's
// constructor reads; help.go the --help text, the man page section and
// bash completion. chain.go builds a chain of filters; each filter has a
// file named after it (readonly shares protect.go).
package filters
