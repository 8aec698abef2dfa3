// Package httpsrc serves an object on an HTTP(S) server as a read-only
// sources.Source, read with range requests: `nbdloop attach
// https://host/path/disk.img`. Every format that opens from a Source (raw,
// xz, zstd, gzip) works on top, as do partitions and overlays.
//
// Open (Stat, then Object.Source) asks the server once for the object: a HEAD, or a
// GET of its first byte when HEAD is refused or says too little. That gives
// the size (Content-Length, or the total of Content-Range), the validator
// (a strong ETag, else Last-Modified) and whether the server serves byte
// ranges: one that answers a range request with the whole object is
// refused. A redirect is followed (at most five, to http or https only),
// and the URL it leads to is the one every later request goes to. A URL
// with credentials (user:password@) is refused: it would be kept in the
// device's state record and shown by `nbdloop list`.
//
// Reads: the object is fetched in blocks of Options.BlockSize through a
// cache (see sources/internal/blockcache) whose memory stays within
// Options.CacheSize, shared by every connection of the device; blocks are
// fetched in parallel over at most Options.Connections HTTP/1.1 keep-alive
// connections. The blocks ahead of a sequential reader are fetched in the
// background by runs: one range request for many blocks (Connections
// blocks at first, the window doubling while reads stay in order, up to
// Options.RunSize), streamed into the cache block after block, so that a
// read is served as soon as its block has come; a failure resumes the
// request from the byte where it stopped, and a block's deadline starts
// when the run reaches it. Random reads fetch one block each.
// Object.ReadAt reads without the cache (attach probes the object's format
// before it sizes the cache).
//
// Large reads straight from the server (Source.PipeRead, which the NBD
// server uses for its READ replies): a read of at least two blocks and at
// most MaxDirectRead that the cache has none of (no block cached, none
// being fetched) of an object on a plain http server (not https, not
// through a proxy, without CacheDir) is one range request on a
// connection of its own (at most Options.Connections of them, kept
// alive), whose body is spliced from the socket into pipes that the NBD
// server splices on into the device's socket: a sequential reader of
// large blocks (a copy, a scan, dd with iflag=direct) costs no copy
// through the process's memory, and takes no room in the cache for bytes
// it has passed. Only an answer known to be right is served so (a 206
// for exactly the range, its Content-Length, no ETag but the pinned one,
// no transfer or content coding, a head within 16 KiB); for any other
// answer, a failed or stalled connection (a quarter of the deadline), or
// a body that comes in packets too small for the pipes, the read goes
// through the cache as any other (with its retries, and its word on a
// replaced object). After a failed connection the large reads go through
// the cache for a second; after eight answers in a row that it could not
// serve, for good.
//
// Options.CacheDir keeps the fetched blocks in a file of that directory
// too (sources/internal/blockstore: bounded, checked when read back, the
// directory and the file checked when opened), shared by every
// connection: a later Source of the same URL and version (a restarted
// server, a new attach) reads them from there, Object.ReadAt included.
// The file is keyed by the URL as given and holds one version: an object
// with another pin empties it. When the server does not answer Stat (a
// refused connection, a timeout, a 5xx until the deadline), the version
// the file holds is served, with a warning: its blocks from the file,
// the others asked of the server (with its validator, so that a replaced
// object is refused as ever). An object without a validator is not kept
// on disk.
//
// The object is pinned: every range request carries If-Match with the
// ETag (or If-Unmodified-Since with the date). A server that says the
// object no longer matches (412), or whose answer shows another size, has
// a replaced object: the read fails with EIO, one line is logged, and
// every later read of a block not yet cached fails too, without asking the
// server; bytes of two versions are never served. An object with neither
// validator is served with a warning: only a change of size is detected.
//
// Failures: a request that fails with a 5xx status, a timeout, a reset
// connection or a body that ends early is tried again after a pause (100
// ms, doubling, at most 2 s), from the byte where it stopped, until
// Options.Deadline has passed since the block was first asked for; then
// the read fails with EIO. Other 4xx statuses fail at once. A connection
// that stalls for a quarter of the deadline is dropped and tried again, so
// no read waits much longer than the deadline. A block that failed is asked
// for again by the next read that needs it.
//
// Named resolves the names an image by URL gives other files (a qcow2
// backing file) relative to the image's URL, confined to its directory on
// the same server, and opens them as Sources.
//
// Hostile servers: a status, Content-Range or Content-Length that does not
// match the range asked for, and a body longer than it, fail the read; the
// headers of a response are bounded (64 KiB), and the memory taken is the
// cache's, whatever the server says.
package httpsrc
