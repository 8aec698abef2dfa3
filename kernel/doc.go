// Package kernel talks to the Linux NBD driver: its generic netlink family
// "nbd" (connect, disconnect, reconfigure, status, link-dead events) and the
// files the driver and the block layer publish under /sys and in
// /proc/self/mountinfo.
//
// # Netlink
//
// Open resolves the family once; the returned Family carries the numbers the
// kernel assigned (family id, multicast group id) and nothing else. Every
// method opens its own NETLINK_GENERIC socket, sends one request, reads its
// answer and closes the socket, so a Family has no hidden connection state
// and is safe for concurrent use.
//
// Each request is built by a pure function (connectMessage,
// disconnectMessage, reconfigureMessage, statusMessage) that returns the
// complete netlink message with sequence number and port id zero; the
// sequence number is stamped into the bytes just before they are sent. The
// unit tests compare those bytes with annotated golden tables and decode
// handcrafted replies, so they need neither root nor the nbd module.
//
// The files follow that split: protocol.go holds the numbers of the family
// and of netlink, encode.go the message builder, requests.go the requests
// and their checks, replies.go the decoding of answers and errors,
// netlink.go the Family and its request/answer exchange, socket.go the real
// netlink socket behind it (tests use a fake), sysfs.go the files below.
//
// Which requests get which answer matters, because waiting for an answer that
// never comes is the classic way to hang here:
//
//   - CONNECT and STATUS are answered with a message of their own (carrying
//     NBD_ATTR_INDEX and NBD_ATTR_DEVICE_LIST), so they are sent without
//     NLM_F_ACK; an extra ACK would trail the reply.
//   - DISCONNECT and RECONFIGURE produce no message at all, so they are sent
//     with NLM_F_ACK and the ACK is the answer.
//   - Failures always come back as NLMSG_ERROR; the kernel errno is returned
//     as a syscall.Errno, wrapped, so errors.Is(err, syscall.EBUSY) and
//     errors.Is(err, syscall.EPERM) work.
//
// The NBD handlers run synchronously inside sendmsg, so the answer is queued
// by the time the send returns; the receive timeout (Family.Timeout) only
// bounds the wait for an answer that is not coming.
//
// Replies are decoded without requiring NLA_F_NESTED: the kernel builds its
// nests with nla_nest_start_noflag. Requests do not set it either, matching
// nbd-client and rbd-nbd; the kernel parses NBD attributes liberally and does
// not care.
//
// # Sysfs
//
// Sysfs reads /sys/block/nbdN and /sys/class/block/NAME below a configurable
// root, and MountPoints reads a mountinfo file, so both can be tested against
// a fake tree. The files are the block layer's own (size, ro, inflight,
// holders/, mq/) plus the two the NBD driver adds while a device is
// configured: pid (the thread that sent CONNECT; see Sysfs.PID) and backend
// (the NBD_ATTR_BACKEND_IDENTIFIER, kernel 5.14+).
package kernel
