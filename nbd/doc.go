// Package nbd implements the transmission phase of the Network Block Device
// protocol as the Linux kernel's NBD client speaks it: 28-byte requests,
// 16-byte simple replies, READ, WRITE, FLUSH, TRIM, WRITE_ZEROES and DISC.
//
// A Server serves one sources.Source over any number of connections. nbdloop
// hands the kernel one end of an AF_UNIX socketpair per connection and calls
// Serve on the other end, so there is no handshake: the kernel starts sending
// requests as soon as NBD_CMD_CONNECT has been processed.
//
// Errors from the Source become NBD error replies (ErrorCode is the one place
// that maps them); only a peer that breaks the protocol (bad magic, a payload
// over MaxPayload) loses its connection.
package nbd
