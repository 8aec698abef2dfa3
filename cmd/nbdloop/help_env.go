package main

// The ENVIRONMENT and FILES sections of the root --help and the man page.

const environmentHelp = `ENVIRONMENT:
  NBDLOOP_STATE_DIR  the directory of the state records and logs instead
                     of /run/nbdloop (for tests; every nbdloop command that
                     looks at devices must be given the same)
  NBDLOOP_DEBUG      when set, the background supervisor and server of
                     attach write to attach's stderr until the device is
                     attached (they log to the device's log after that)
  XDG_CACHE_HOME     where the index of a gzip image is kept:
                     $XDG_CACHE_HOME/nbdloop, else ~/.cache/nbdloop, of the
                     user who runs attach
  TMPDIR             where a compressed image of one big block is decoded
                     to, and where pack copies a pipe on its standard input
                     (default /var/tmp, not /tmp, which is often a small
                     tmpfs); --spill-limit bounds the former
  SOURCE_DATE_EPOCH  the date of the man page that nbdloop man writes
                     (seconds since 1970), for reproducible builds`

const filesHelp = `FILES:
  /run/nbdloop/nbdN.json        the state record of /dev/nbdN: the attach
                                request, the server and supervisor, how far
                                a background decode is (list reads it)
  /run/nbdloop/nbdN.log         the log of /dev/nbdN's server and supervisor
  /run/nbdloop/nbdN.stats.json  the statistics of --filter stats (nbdloop
                                stats, top)
  ~/.cache/nbdloop/gzip-index/  the checkpoint indexes of gzip images (see
                                XDG_CACHE_HOME), so that only the first
                                attach of an image inflates it; at most 1
                                GiB, unused ones removed after 90 days
  $TMPDIR                       the temporary files that compressed images
                                of one big block are decoded into; unlinked
                                at once, so they never show in the
                                directory, and gone when the server exits
  /etc/nbdloop/nbdtab           the devices that the nbdloop systemd unit
                                attaches at boot and detaches at shutdown,
                                one a line`
