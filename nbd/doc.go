// Package nbd implements the server side of the Network Block Device
// protocol: the transmission phase as the Linux kernel's NBD client speaks
// it (28-byte requests, 16-byte simple replies, READ, WRITE, FLUSH, TRIM,
// WRITE_ZEROES and DISC), and the fixed newstyle handshake that network
// clients (qemu, libnbd's tools, nbd-client) go through first.
//
// A Server serves one sources.Source over any number of connections. nbdloop
// hands the kernel one end of an AF_UNIX socketpair per connection and calls
// Serve on the other end, so there is no handshake: the kernel starts sending
// requests as soon as NBD_CMD_CONNECT has been processed.
//
// Network clients connect to a listener that ServeListeners serves:
// Handshake answers their options (NBD_OPT_GO, INFO, EXPORT_NAME, LIST,
// ABORT, STRUCTURED_REPLY, EXTENDED_HEADERS, and LIST/SET_META_CONTEXT
// with the one context base:allocation; every other option is refused
// with NBD_REP_ERR_UNSUP)
// from the Exports it is given, each Export being a name, a description
// and a Server, and the connection then goes to the chosen Export's
// Server as a Session, which carries what was negotiated. A client is
// held to a deadline, a number of options and a size of option data
// during the handshake, and one that breaks the protocol loses only its
// own connection. ServeListeners can bound the clients connected at once
// (those past the bound are closed before the greeting, as nbdkit's limit
// filter does) and close a connection that has been idle for a time
// (limits.go: a watchdog on a count of the connection's system calls, so
// the requests themselves carry no timer).
//
// A client that negotiated structured replies gets them for every
// request (a READ's data in one NBD_REPLY_TYPE_OFFSET_DATA chunk, or, where
// the Source's extents report holes or zeros, in data chunks and
// NBD_REPLY_TYPE_OFFSET_HOLE chunks (read_holes.go); errors in error
// chunks with their text); one that also selected
// base:allocation may send NBD_CMD_BLOCK_STATUS, answered from the
// Source's extents (sources.Extents: holes, zeros and data). A client
// that negotiated extended headers sends 32-byte requests with 64-bit
// lengths (wire_extended.go) and gets every reply, a success without
// data included, as 32-byte extended chunks, block status as
// NBD_REPLY_TYPE_BLOCK_STATUS_EXT; one that did not gets exactly the
// compact headers. The kernel path is the same code with simple replies.
//
// HandshakeConn adds TLS (NBD_OPT_STARTTLS) with a crypto/tls
// configuration: offered (TLSOn) or required before any option that would
// tell a client about the exports (TLSRequire, the protocol's defence
// against downgrades); the transmission phase then runs over the TLS
// connection.
//
// How a connection is served (the measurements behind each choice are in
// docs/performance.md, section nbd):
//   - One goroutine reads requests through a 256 KiB bufio.Reader, so one
//     read(2) takes in every request the kernel has queued.
//   - Sources that may block (files, images) are served by 16 worker
//     goroutines per connection; their replies are written by whichever
//     worker gets the write turn, those that completed meanwhile in the
//     same writev(2).
//   - InMemory sources (RAM disks, files on tmpfs) are served by the reading
//     goroutine itself, in order, up to 128 KiB per request: a hand-off to
//     a worker costs a wake-up and a thread switch, more than the copy.
//     Their replies are held back until the reader is about to block and
//     then go out in one writev(2).
//   - The socket is read and written with raw system calls, the poller
//     doing the waiting, and files in RAM are read and written with raw
//     pread/pwrite: Go's syscall bookkeeping lets sysmon hand a P to
//     another thread whenever a call outlasts its 20 us tick, which under
//     emulation is most calls.
//   - READs over 128 KiB from a file in RAM (memory: devices, files on
//     tmpfs; sources.File.RAMRegion) are answered with the header, then
//     sendfile(2) from the file: the socket takes the file's pages, where
//     pread would copy them into a buffer that writev copies again.
//   - READs over 128 KiB from a source that keeps its bytes in memory of its
//     own (a block cache: objects by URL) are written with writev(2)
//     straight from the slices it lends, pinned until the reply is out,
//     instead of being copied into a reply buffer first.
//   - READs over 128 KiB that a source can put into pipes without their
//     passing through its memory (an object on a plain http server, for
//     large reads its cache has none of: the answer's body is spliced from
//     the connection) are answered with the header, then splice(2) from
//     the pipes: the socket takes their pages.
//   - WRITEs over 128 KiB to a file in RAM (sources.File.RAMWriteRegion)
//     are written by the reading goroutine itself: what it has already
//     taken in of the payload with pwrite, the rest spliced from the
//     socket into a pipe and from the pipe into the file, where reading
//     the payload into a buffer and writing it from there would copy each
//     byte twice.
//   - Request and reply buffers come from size-classed pools: no allocation
//     per request at steady state (see the benchmarks' allocs/op).
//   - A TLS session's socket is read and written with the same raw system
//     calls, reads through a 256 KiB buffer (one read(2) takes in every
//     record the client has sent), and each batch of replies is copied
//     into one write of up to 256 KiB, so that small replies share TLS
//     records instead of costing a record and a system call each. The
//     server's records are full-size from the first byte
//     (attach sets tls.Config.DynamicRecordSizingDisabled), and the
//     records of a batch are written 64 KiB at a time rather than one
//     system call each.
//
// Errors from the Source become NBD error replies (ErrorCode is the one place
// that maps them); only a peer that breaks the protocol (bad magic, a payload
// over MaxPayload) loses its connection, and so does a READ sent with
// sendfile whose file ends before its data (it shrank under the source),
// or from pipes that hold another number of bytes: its success header is
// already out.
//
// The client side (client*.go) connects to any NBD server: Dial or
// DialURI (NBD URIs, ParseURI) runs the fixed newstyle handshake
// (NBD_OPT_GO asking for the block size constraints, NBD_OPT_EXPORT_NAME
// for servers without it), first upgrading to TLS when
// ClientOptions.TLSConfig is set (NBD_OPT_STARTTLS before any other
// option; a server that refuses it is left, never used in plain text:
// ErrTLSRefused) and asking for extended headers (NBD_OPT_EXTENDED_HEADERS)
// unless ClientOptions.CompactHeaders, and a Client then pipelines READ,
// WRITE, FLUSH, TRIM and WRITE_ZEROES from any number of goroutines, with
// simple replies or, with extended headers, extended chunks (a READ's
// data in any number of data and hole chunks), one goroutine matching
// replies to requests by cookie. With extended headers the client also
// selects base:allocation, and Client.Extents asks NBD_CMD_BLOCK_STATUS
// (client_extents.go; NBD_REPLY_TYPE_BLOCK_STATUS_EXT replies). Every
// length and cookie a server sends is checked; a server that breaks the
// protocol loses its connection (ErrConnLost), never the process.
// nbd/remote builds a reconnecting Source on it.
package nbd
