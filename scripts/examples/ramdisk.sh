#!/bin/sh
# ramdisk.sh: a RAM disk written as a shell script, the block device of the
# FOSDEM 2019 talk "Better loop mounts with NBD". Every request runs this
# script once (nbdkit's sh plugin convention: SCRIPT METHOD ARGS...), and dd
# moves the bytes between the kernel and a file in $tmpdir, which is on tmpfs
# on most systems: a RAM disk.
#
#   sudo nbdloop attach exec:scripts/examples/ramdisk.sh              # 64M
#   sudo nbdloop attach exec:scripts/examples/ramdisk.sh,size=1G
#   sudo nbdloop attach exec:scripts/examples/ramdisk.sh,file=disk.img
#   nbdkit sh scripts/examples/ramdisk.sh size=1G                     # the same, under nbdkit
#
# Options (nbdkit config keys): size=SIZE, the size of a new, empty disk (dd
# and truncate suffixes: 512K, 64M, 1G); file=PATH, serve an existing file
# instead (its size is the disk's). Exit status: 0 ok, 1 error (an errno
# name first on stderr), 2 method not provided, 3 false.
#
# The methods touch disjoint byte ranges with independent dd processes, so
# the script declares the parallel thread model.

disk=$tmpdir/disk

case "$1" in
    config)
        case "$2" in
            size) echo "$3" > "$tmpdir/size" ;;
            file)
                if [ ! -f "$3" ]; then
                    echo "EINVAL file=$3: not a regular file" >&2
                    exit 1
                fi
                ln -sf "$(realpath "$3")" "$disk"
                ;;
            *)
                echo "EINVAL unknown option $2 (use size= or file=)" >&2
                exit 1
                ;;
        esac
        ;;
    config_complete)
        if [ ! -e "$disk" ]; then
            size=64M
            [ -f "$tmpdir/size" ] && size=$(cat "$tmpdir/size")
            truncate -s "$size" "$disk" || exit 1
        fi
        ;;
    thread_model)
        echo parallel
        ;;
    get_size)
        stat -L -c %s "$disk" || exit 1
        ;;
    pread)
        # $3 is the count and $4 the offset, both in bytes.
        dd if="$disk" iflag=skip_bytes,count_bytes skip="$4" count="$3" bs=1M status=none || exit 1
        ;;
    pwrite)
        dd of="$disk" oflag=seek_bytes conv=notrunc seek="$4" bs=1M status=none || exit 1
        ;;
    can_write | can_trim | can_zero)
        exit 0
        ;;
    can_multi_conn)
        # No cache: every connection sees every completed write at once, so
        # nbdkit may accept several connections (nbd-client -C N).
        exit 0
        ;;
    trim)
        # Advisory: where holes cannot be punched the bytes simply stay.
        fallocate -p -o "$4" -l "$3" "$disk" 2>/dev/null || true
        ;;
    zero)
        # Punching a hole zeroes too, where the caller allows it (tmpfs has
        # no FALLOC_FL_ZERO_RANGE); ENOTSUP makes the caller write zeros.
        case ",$5," in
            *,may_trim,*) fallocate -p -o "$4" -l "$3" "$disk" 2>/dev/null ;;
            *) fallocate -z -o "$4" -l "$3" "$disk" 2>/dev/null ;;
        esac || { echo ENOTSUP >&2; exit 1; }
        ;;
    *)
        exit 2
        ;;
esac
exit 0
