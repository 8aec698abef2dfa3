// Package nbdtest starts NBD servers that nbdloop did not write (nbdkit,
// qemu-nbd, nbd-server from Debian), or any server that stays in the
// foreground (nbdloop serve), for tests, each on a Unix socket, and kills
// them when the test ends. A server can be killed and started again
// on the same socket, to test clients that reconnect. A missing server
// fails the test through tooltest.Require. It is imported only from
// _test.go files.
package nbdtest
