// Package script serves a block device whose bytes come from an external
// program: `nbdloop attach exec:./disk.sh`. Any executable works (sh,
// bash, python3, a compiled binary), in one of two modes.
//
// # nbdkit mode (exec:PATH)
//
// The calling convention of nbdkit's sh plugin (nbdkit-sh-plugin(3)), so
// that scripts written for `nbdkit sh` run unchanged: the program is run
// once per call as
//
//	PATH METHOD ARGS...
//
// with $tmpdir set to a fresh directory that lives as long as the device
// (removed at detach). At open the methods are called in nbdkit's order:
// load, config KEY VALUE (one per KEY=VALUE option, in order),
// config_complete, thread_model, get_ready, after_fork, preconnect READONLY,
// open READONLY EXPORTNAME TLS (READONLY is "true" or "false", EXPORTNAME
// "", TLS "false"), whose stdout minus one trailing newline is the HANDLE,
// then get_size, can_write, can_flush, can_trim, can_zero, is_rotational and
// block_size, each with the HANDLE. Requests then call
//
//	PATH pread HANDLE COUNT OFFSET          data on stdout, exactly COUNT bytes
//	PATH pwrite HANDLE COUNT OFFSET FLAGS   data on stdin
//	PATH flush HANDLE
//	PATH trim HANDLE COUNT OFFSET FLAGS
//	PATH zero HANDLE COUNT OFFSET FLAGS     FLAGS "" or "may_trim"
//
// and detach calls flush (when can_flush), close HANDLE and unload. Exit
// status 0 is success; 2 means the method is not provided; 3 means false
// (for can_* and is_rotational); 1 and every other status is an error, and
// the first word of stderr, when it is an errno name such as EIO or ENOSPC
// (case ignored), is the error returned to the kernel (anything else is
// EIO); the rest of stderr's first line is the message. As in nbdkit, the
// can_* methods must exit 0 for pwrite, flush, trim and zero to be called;
// a missing can_* is false. A zero that is missing, or fails with ENOTSUP or
// EOPNOTSUPP, or a script without can_zero, is done by writing zeros with
// pwrite. A missing flush or trim succeeds without doing anything. The
// device is read-only when can_write is false or attach -r was given.
//
// The sizes get_size and block_size print are read as attach reads SIZE
// (bytesize.Parse): digits with nbdkit's b, k, m, g, t, p or e suffixes
// (powers of 1024, also as KiB, MiB, ...) mean what they mean to nbdkit,
// and KB, MB, ... are powers of 1000.
//
// Calls run one at a time unless thread_model prints "parallel", in which
// case several copies of the program may run at once (Caps.Parallel).
//
// Options: KEY=VALUE items after the path, `exec:PATH,KEY=VALUE,...`, are
// passed as `config KEY VALUE` calls, like `nbdkit sh PATH KEY=VALUE`; a
// bare VALUE uses the key that the magic_config_key method prints.
// env=NAME (repeatable) passes the variable NAME of nbdloop's environment
// to the program: it gets only PATH, HOME, LANG, LC_ALL, $tmpdir and those,
// never the rest of the environment of whoever ran attach.
// timeout=DURATION (Go syntax, 10s, 2m, or bare seconds; default
// DefaultTimeout, at most 24h) bounds every call.
//
// # Persistent mode (exec:PATH,persistent)
//
// The program is started once, as `PATH ARG...` where the ARGs are the
// KEY=VALUE (and bare) options as written, with $tmpdir set as above, and
// serves requests on its stdin and stdout, one at a time (requests are
// serialized, never pipelined), so that a request costs a pipe round trip
// instead of a fork. Each request is one line of space-separated words: the
// nbdkit method name and its arguments without the HANDLE (the FLAGS word
// is left out when it is empty):
//
//	get_size | can_write | can_flush | can_trim | can_zero |
//	is_rotational | block_size | flush
//	pread COUNT OFFSET
//	pwrite COUNT OFFSET [FLAGS]           followed by COUNT bytes of data
//	trim COUNT OFFSET [FLAGS]
//	zero COUNT OFFSET [FLAGS]
//
// The reply is a status line, the number nbdkit's exit status would be,
// then, for a successful pread only, exactly COUNT bytes of data:
//
//	0 [VALUE]        success; VALUE is what the nbdkit method prints
//	                 (the size for get_size, three sizes for block_size)
//	1 ERRNO [MESSAGE]   error, e.g. "1 ENOSPC disk full"
//	2                method not provided
//	3                false
//
// End of file on stdin means detach: the program should exit. Its stderr
// goes to the server's log, one line at a time.
//
// # Robustness
//
// Programs get only stdin, stdout and stderr: descriptors the server
// inherited are marked close-on-exec at Open. Every call (every request in persistent mode) must finish within the
// timeout; otherwise the program's process group is killed with SIGKILL (each
// program runs in a process group of its own) and the request fails with
// EIO. A pread that prints fewer than COUNT bytes, or more, fails with EIO
// (output is read with a bound: COUNT bytes plus one, or 64 KiB for the
// other methods; stderr is kept up to 4 KiB), and so does a program killed
// by a signal. In persistent mode any violation of the protocol (a status
// line that does not parse or is longer than 4 KiB, output after a reply,
// end of file, timeout) kills the program's process group and fails the
// request with EIO; the next request starts the program again, so a
// persistent program must keep its state somewhere that outlives it (the
// backing file). Caps are asked once, at open, and never again.
//
// Limits: extents, cache, can_fua (FUA is a write followed by flush),
// can_multi_conn (nbdloop's connections share one Source) and export names
// are not used. A server restarted by nbdloop's supervisor runs the open
// sequence again with a new $tmpdir: state kept only in $tmpdir is lost. A program that leaves a background process
// holding its stdout open is waited for until the timeout, as nbdkit would
// wait for it forever. Programs inherit the server's protections
// (PR_SET_IO_FLUSHER, oom_score_adj), since they serve the device too.
//
// Example, a RAM disk in a file served by dd (see scripts/examples/):
//
//	src, err := script.Open("./ramdisk.sh", script.Options{})
package script
