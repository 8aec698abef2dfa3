#!/usr/bin/env python3
"""file-persistent.py: a file served by one long-running program, nbdloop's
persistent script mode (exec:PATH,persistent). nbdloop starts it once as

    file-persistent.py file=PATH

and sends it one request per line on stdin; it answers on stdout with a
status line (0 ok [VALUE], 1 ERRNO message, 2 not provided, 3 false) followed,
for pread, by the data. Requests (FLAGS is left out when empty):

    get_size | can_write | can_flush | can_trim | can_zero | is_rotational |
    block_size | flush | pread COUNT OFFSET | pwrite COUNT OFFSET [FLAGS] +
    COUNT bytes | trim COUNT OFFSET [FLAGS] | zero COUNT OFFSET [FLAGS]

End of file on stdin means detach. Usage:

    truncate -s 1G disk.img
    sudo nbdloop attach exec:scripts/examples/file-persistent.py,persistent,file=disk.img
"""

import errno
import os
import sys


def main():
    path = None
    for arg in sys.argv[1:]:
        key, _, value = arg.partition("=")
        if key == "file":
            path = value
        else:
            print(f"unknown option {arg!r} (use file=PATH)", file=sys.stderr)
            return 1
    if path is None:
        print("file=PATH is required", file=sys.stderr)
        return 1
    fd = os.open(path, os.O_RDWR)
    size = os.fstat(fd).st_size
    inp, out = sys.stdin.buffer, sys.stdout.buffer

    def reply(line, data=b""):
        out.write(line.encode() + b"\n" + data)
        out.flush()

    while True:
        line = inp.readline()
        if not line:
            return 0  # end of file: detach
        words = line.decode().split()
        method, args = words[0], words[1:]
        try:
            if method == "get_size":
                reply(f"0 {size}")
            elif method in ("can_write", "can_flush", "can_zero"):
                reply("0")
            elif method in ("can_trim", "is_rotational"):
                reply("3")
            elif method == "pread":
                count, offset = int(args[0]), int(args[1])
                data = os.pread(fd, count, offset)
                if len(data) != count:
                    raise OSError(errno.EIO, f"short read at {offset}")
                reply("0", data)
            elif method == "pwrite":
                count, offset = int(args[0]), int(args[1])
                data = inp.read(count)
                if len(data) != count:
                    return 1  # the input ended in the middle of a request
                os.pwrite(fd, data, offset)
                reply("0")
            elif method == "zero":
                count, offset = int(args[0]), int(args[1])
                chunk = bytes(min(count, 1 << 20))
                while count > 0:
                    n = os.pwrite(fd, chunk[:count], offset)
                    count, offset = count - n, offset + n
                reply("0")
            elif method == "flush":
                os.fdatasync(fd)
                reply("0")
            else:
                reply("2")
        except OSError as e:
            name = errno.errorcode.get(e.errno, "EIO")
            reply(f"1 {name} {e.strerror}")


if __name__ == "__main__":
    sys.exit(main())
