// Package remote serves an export of a remote NBD server as a
// sources.Source: nbdloop's own server, the kernel's peer, forwards each
// request over an nbd.Client, so that filters, copy-on-write overlays and
// partitions apply to a remote disk as to a local one. Its Extents are the
// server's block status, where the server offers it with extended
// headers (nbd.Client.Extents).
//
// The Source keeps one connection to the server. When it is lost (the
// server restarted, the network broke, the server answered NBD_ESHUTDOWN),
// the Source reconnects in the background, waiting between attempts from
// MinBackoff doubling up to MaxBackoff, and every request that was in
// flight or arrives meanwhile waits and is sent again on the new
// connection. Requests wait for at most RetryWindow from the moment the
// connection was lost; after that they fail with EIO (and new ones fail at
// once) until the server is back. A server that comes back with another
// size, or read-only where it was writable, is not taken: the Source
// keeps trying.
//
// Sending a request again is safe for NBD's requests (reads, writes of
// the same bytes, trims, zeroes, flushes), but a write the old server had
// acknowledged and not yet made durable may have died with it: as with
// any NBD client that reconnects, only writes followed by a successful
// flush are known to be on the server's storage.
package remote
