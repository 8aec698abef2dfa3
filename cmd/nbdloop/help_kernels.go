package main

// kernelsHelp is the man page's KERNELS section: what differs between the
// Linux NBD drivers that nbdloop is tested on, as its users see it.
const kernelsHelp = `KERNELS:
nbdloop is tested on Debian 12's Linux 6.1 and Debian 13's Linux 6.12 (make
check runs every kernel test on both). Their nbd drivers differ in ways a
user of a device can see:

Errors. Neither passes the server's error to applications: a refused write
(EPERM: a read-only partition, the probe guard), a full exec: program
(ENOSPC) or any other error fails the read or write with EIO, on 6.1 and
6.12 alike. The kernel log says "Other side returned error (N)" with the
NBD error N, and the device's log says why.

Write zeroes. 6.12 sends BLKZEROOUT, fallocate's zero ranges and the zeroing
of mkfs as NBD_CMD_WRITE_ZEROES (queue/write_zeroes_max_bytes 4 GiB): no zeros
cross the socket, and nbdloop punches holes where the kernel allows it and
the source can; 6.1 never sends it (write_zeroes_max_bytes 0) and writes
buffers of zeros instead. Discards
are split at 4 GiB on 6.12, at 2 TiB on 6.1.

Queue. 6.12 reports nbd devices as rotational (queue/rotational 1), 6.1
does not; programs that choose their layout by it (btrfs, the I/O
schedulers) may choose differently. 6.12's block layer adds
/sys/block/nbdN/partscan.

Restarts. On both, a request that a killed server took with it is sent
again to the restarted server when the kernel's request timer finds it (up
to 30 s later; the kernel log says "Connection timed out, retrying (2/2
alive)"), and a mounted file system carries on: a program that waited for
that request is held until then, and one whose fsync needs it too. The two
drivers time out, resend and take new sockets with the same code.

The same on both: the netlink requests and answers nbdloop uses (CONNECT,
DISCONNECT, RECONFIGURE with the backend identifier, STATUS), the pid and
backend files, partition handling (max_part, at most 255 partitions, nodes
made on the first open after CONNECT). ublk (/dev/ublkbN) needs ublk_drv
(Linux 6.0 and later; Debian 13 has it).`
