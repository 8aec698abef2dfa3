package main

import (
	"github.com/nbdloop/nbdloop/attach"
	"github.com/nbdloop/nbdloop/filters"
)

// The help texts of attach: --help, the man page and errors quote them.

// sourceHelp is the SOURCE syntax, shared by --help, the man page and errors.
const sourceHelp = `SOURCE is one of:
  PATH            a file or block device; its format is detected from its
                  contents (magic bytes), not from its name; raw is the fallback;
                  xz, gzip and zstd images are served uncompressed and
                  read-only (-r is implied); qcow2 (v2, v3: backing files,
                  compressed and zero clusters, extended L2) and VMDK
                  (monolithic and split, sparse and flat, streamOptimized
                  read-only, delta disks over their parent) are read and
                  written in place, so qemu-img check stays clean; their
                  backing files and parents are never written; images with
                  snapshots, dirty or corrupt qcow2 and compressed VMDK attach
                  read-only (with a note); encryption and external data files
                  are refused; --offset and --sizelimit do not apply to them
  file:PATH       the same, for paths that contain a colon
  memory:SIZE     a sparse RAM disk of SIZE bytes, up to 2^63-1 (8E); pages are
                  allocated on first write and freed by trim; SIZE is rounded
                  down to the block size
  exec:PATH       a device served by the program PATH (any executable), run
                  once per request the way nbdkit's sh plugin runs it (PATH
                  pread HANDLE COUNT OFFSET, ...), so nbdkit sh scripts work
                  unchanged; options follow the path after commas:
                  exec:PATH,persistent starts PATH once and sends it one
                  request per line on stdin; timeout=DURATION bounds each
                  request (default 30s; a program that takes longer is
                  killed, with all it started, setsid or not, and the
                  request fails with EIO); the program gets PATH, HOME, LANG,
                  LC_ALL and $tmpdir, plus each variable an env=NAME item
                  names, none of the rest; KEY=VALUE items go
                  to the program (config KEY VALUE, or arguments when
                  persistent); no commas in PATH or values
  https://HOST/PATH, http://HOST/PATH
                  an object on a web server, read with HTTP range requests
                  (never downloaded whole) and served read-only: raw, or xz,
                  gzip, zstd, qcow2 or VMDK detected as for a PATH; a qcow2
                  image's backing files, and a VMDK descriptor's extents and
                  parent, are read by URL too, named relative to the image's
                  URL and beneath its directory on the same server; fetched
                  blocks are cached within --cache-size (a quarter of it under
                  a compressed, qcow2 or VMDK format, shared by every file it
                  names), over at most 4 connections; sequential reads are
                  fetched ahead in requests of up to 8 MiB, streamed into the
                  cache; on plain http (no proxy, no --cache-dir) a raw
                  image's reads of 512 KiB to 1 MiB that the cache has none
                  of go straight from the server's answer to the device,
                  spliced, not copied nor cached (a copy, dd iflag=direct
                  bs=1M), on connections of their own (at most 4 more); with
                  --cache-dir DIR on disk too (a file per URL in
                  DIR, all of them within --cache-size, each block checked
                  when read back and fetched again if it fails; kept for the
                  same version only, and served from there when the server
                  does not answer); failed requests (5xx, timeouts, resets)
                  are retried for up to 30 s (3/4 of --timeout if shorter),
                  then the read fails with EIO; the object is pinned by its
                  ETag (or Last-Modified date): if it is replaced on the
                  server, reads of what is not cached fail with EIO (logged)
                  rather than mix two versions, and a restart refuses it (a
                  qcow2 image's backing files are pinned likewise, but only
                  until a restart); the server must serve byte ranges;
                  redirects (at most 5) are followed; user:password@ in the
                  URL is refused (it would be kept in the state record and
                  shown by list)
  s3://BUCKET/KEY an object in an S3 bucket (AWS S3, or another store:
                  SeaweedFS, Ceph's RADOS gateway, MinIO, Garage), read with
                  ranged GetObject requests and served as a URL's object is:
                  the same formats, cache, connections, readahead and
                  retries, pinned by its ETag with If-Match (a deleted object
                  counts as replaced); a qcow2 image's backing files are keys
                  next to it in the bucket; configured the AWS way, as the
                  aws CLI is: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
                  AWS_SESSION_TOKEN, AWS_PROFILE (or --s3-profile) naming a
                  profile of ~/.aws/config and ~/.aws/credentials (SSO and
                  roles too), AWS_REGION (default us-east-1), and for other
                  stores AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3, the
                  profile's endpoint_url or --s3-endpoint URL, addressed
                  path-style (URL/BUCKET/KEY); the server process keeps
                  attach's environment; no credentials are kept in the
                  state record
  s3://BUCKET/PREFIX/
                  (ending in a slash) a read-write disk stored in an S3
                  bucket, made by nbdloop create: one object per chunk
                  under PREFIX/chunks/, chunks never written are not stored
                  and read as zeros, trim and write-zeroes of whole chunks
                  delete them; writes are cached within --cache-size and
                  uploaded in parallel, and a flush (fsync) returns once
                  every write before it is stored: a crash of the machine
                  loses the writes since the last flush, nothing else; one
                  writer at a time: a read-write attach takes the disk's
                  lease (PREFIX/lease, written with a conditional request,
                  naming the host, pid and device, renewed every 10 s,
                  expiring after 30 s), and a second one anywhere is
                  refused naming the holder; -r attaches take no lease, from
                  any number of machines; a writer that loses its lease
                  (another took it) fails every request with EIO; requests
                  the store cannot serve for 30 s (3/4 of --timeout if
                  shorter) fail with EIO, their writes kept and retried; the
                  S3 client is configured as the AWS CLI's (AWS_* variables,
                  ~/.aws/config and credentials, AWS_PROFILE or
                  --s3-profile; AWS_ENDPOINT_URL or --s3-endpoint for other
                  stores, addressed path-style)
  nbd://...       nbd://HOST[:PORT]/EXPORT: the export EXPORT of a remote NBD
                  server (nbdkit, qemu-nbd, nbd-server, nbdloop serve) over
                  TCP, port 10809 by default; an empty EXPORT is the server's
                  default export; read-only when the server says so; a lost
                  connection is retried (0.1 s doubling to 5 s) and the
                  requests sent again, for up to --dead-timeout, after which
                  they fail with EIO until the server is back; a server back
                  with another size is refused
  nbd+unix://...  nbd+unix:///EXPORT?socket=PATH: the same over the Unix
                  socket PATH (the NBD URI syntax)
  nbds://...      nbds://HOST[:PORT]/EXPORT, nbds+unix:///EXPORT?socket=PATH:
                  the same over TLS (NBD_OPT_STARTTLS before any other
                  option, TLS 1.2 at least; a server without TLS is refused,
                  never used in plain text), with the query parameters
                  tls-certificates=DIR (ca-cert.pem, and client-cert.pem with
                  client-key.pem, mode 600, for servers that check clients;
                  by default the directory nbdloop serve reads:
                  /etc/nbdloop/pki for root, $XDG_CONFIG_HOME/nbdloop/pki
                  (~/.config/nbdloop/pki) for others; without a ca-cert.pem
                  the system's CAs check the server), tls-hostname=NAME (the name the server's
                  certificate must carry, by default HOST; over a Unix socket
                  without it, any certificate ca-cert.pem signs is taken, and
                  without a ca-cert.pem it must be given) and
                  tls-verify-peer=false (check nothing: any server is taken)
SIZE takes the suffixes K, M, G, T, P, E (powers of 1024; also KiB, MiB, ...)
and KB, MB, GB, ... (powers of 1000). Other URLs (ftp://, ...) are refused.`

// compositeHelp describes the devices made of several SOURCEs and the
// partition view, for --help and the man page.
const compositeHelp = `COMPOSITE DEVICES: several files as one device, or one partition of an image.

  --concat        one device whose bytes are the SOURCEs one after the other;
                  writes, trims and flushes go to the right files, split at
                  their boundaries. Files of any size: a total that is not a
                  multiple of the block size is padded with zeros, which read
                  as zeros and refuse data (EIO), and attach says so. The
                  files must be all writable or all read-only (or give -r).
  --partitions    a partitioned disk with one partition per SOURCE, in order,
                  like nbdkit's partitioning plugin: a GPT (--table gpt, the
                  default: protective MBR, primary and backup headers, 128
                  entries or more) or an MBR (--table mbr; with more than 4
                  files, 1-3 are primary, 4 is an extended partition and the
                  rest are logical partitions 5, 6, ...). Partitions start at
                  multiples of --align (default 1M) and are named after the
                  files. Their type is detected from the content (swap ->
                  swap; ext2/3/4, xfs, btrfs and unknown -> linux; FAT ->
                  msdata, or esp with --esp; NTFS, exFAT -> msdata; LVM, LUKS,
                  MD RAID) unless --type N=TYPE or FILE=TYPE says otherwise.
                  The disk and partition GUIDs derive from the files' paths,
                  so they are the same at every attach (PARTUUID= works). The
                  tables are served from memory: writes that would change them
                  fail with EIO (rewriting the same bytes succeeds). A file
                  that cannot be opened for writing makes its partition read-
                  only (writes fail with EPERM). Linux shows at most 255
                  partitions of a disk; and when the nbd driver was loaded
                  with max_part=0 it looks for them only when asked, with -P
                  (or load it with modprobe nbd max_part=16, or boot with
                  nbd.max_part=16). attach warns in both cases.
  --partition     (N) only partition N of SOURCE, found in its MBR or GPT
                  (logical partitions count from 5, as with /dev/sdaN); the
                  rest of the image is not served, so the kernel does not scan
                  its partition table.`

// restartHelp is the man page's section on supervision and durability.
const restartHelp = `WHAT SURVIVES WHAT:
  attach starts a small supervisor process, which starts the server and
  restarts it when it dies without a detach (kill -9, a crash, the kernel
  dropping every connection): the new server serves the same source with the
  same options and hands new sockets to the kernel with NBD_CMD_RECONFIGURE,
  matched by the device's backend identifier. Meanwhile the kernel holds new
  I/O for --dead-timeout (30 s), so a mounted file system carries on; a
  request that was inside the dead server is sent again when the kernel's
  request timer finds it (up to 30 s later). A server that dies again within
  10 s of starting is retried after 0, 0.1, 0.2, 0.4 and 0.8 s; after 5 such
  deaths the supervisor gives up and list shows the device dead, with the
  reason (list --json). nbdloop restart tries again, also after the
  supervisor itself was killed. --no-restart and --foreground run no
  supervisor.

  A server crash loses nothing that was written: files and block devices
  have every completed write in the kernel's page cache; a memory: device
  keeps its bytes in a memfd held by the supervisor; compressed images are
  read-only. A crash of the supervisor alone changes nothing until the server
  dies too: nbdloop restart takes over a live server, and its memfd
  (pidfd_getfd). If both die, a RAM disk's contents are lost (restart refuses
  it without --force). A reboot or power loss keeps what files and block
  devices had flushed: FLUSH (and FUA, which is a write plus a flush) is
  answered only after fdatasync has returned. VMDK images write each new
  grain before the tables that point to it, and the tables as they change,
  so a server crash loses nothing; after a power loss they are as of the
  last flush. qcow2 images keep new cluster mappings in the server until a
  flush (then data, L2 and L1 tables reach the disk in that order, so a
  crash can leak clusters but never corrupt the image): a crashed server
  takes unflushed writes with it, so a qcow2 device is not restarted. An
  exec: program is started again (its open method again too): a script that
  keeps its data only in its $tmpdir comes back empty, one backed by a file
  does not. The cow filter's overlay and the
  memory: parts of --concat and --partitions live inside the server: such
  devices are not restarted (they stay dead, with that reason). The log filter
  appends to its file after a restart; the stats filter starts counting anew.`

// untrustedHelp is the man page's UNTRUSTED IMAGES section: what nbdloop
// confines and bounds when it opens an image that came from elsewhere, and
// the flags that open it up.
const untrustedHelp = `UNTRUSTED IMAGES:
nbdloop runs as root and treats every byte of an image as hostile.

Probing. The format of a file is probed from its first 4 KiB on every open,
restarts included. A file probed as raw stays raw: a write, write-zeroes or
trim that would make those bytes probe as VMDK, qcow2, xz, gzip or zstd
fails with EPERM (applications see EIO: see KERNELS) and the
device's log says so, so a guest cannot turn its disk into an image that
names host files (qemu restricts block 0 of probed-raw images the same
way). A restart that finds another format than the device was attached
with refuses, with the reason in list. --format FORMAT opens the file as
FORMAT without probing; --format raw lets the guest write any first sector.

Files an image names. qcow2 backing files, VMDK extents and parents must
resolve, symbolic links included, beneath the directory of the image named
on the command line; anything else is refused with the path and the flag
that allows it: --allow-path DIR (repeatable) for further directories,
--allow-devices for block devices. FIFOs, sockets and character devices are
never opened. An image attached read-only opens nothing for writing, and
backing files and parents are always read-only.

Memory and disk. The tables an image keeps in memory (qcow2 L1 and refcount
tables and caches, VMDK grain directories and tables, the indexes of xz,
zstd and gzip files), of all its files together, are charged to one budget
per device, --metadata-limit (default 256M): an image that needs more is
refused at open with the figures. The decode cache charges each compressed
block its real dictionary and buffer size. A compressed file of one big
block is decoded into a temporary file bounded by --spill-limit (default 64G)
and by the free space of its directory less 1G (or a tenth of the file
system): a file whose size is known and larger is refused at attach, a
decode that runs past the bound fails its reads with EIO, and nothing is
decoded in full while attaching.

The gzip index cache (~/.cache/nbdloop/gzip-index) is checked by content
(a SHA-256 of each indexed segment, checked again at each decode) and by
the file's identity before use; its directory is private (0700), never
reached through a symbolic link, and pruned (entries unused for 90 days,
then the least recently used beyond 1 GiB).`

// nothingLostHelp is the man page's LOCKS AND RESTARTS section: what keeps
// a command from destroying data.
const nothingLostHelp = `LOCKS AND RESTARTS:
Image locks. attach locks the files it serves the way qemu does (open file
description locks on bytes 100 and up, 200 and up), so nbdloop, qemu,
qemu-nbd and qemu-img see each other: a writable device excludes other
writers and readers of its files, a read-only device excludes writers, and
read-only devices share. A conflict is refused with the holder named
(/dev/nbdN, or another program). The locks are held by the server process
and taken again by a restarted one before it serves. --no-lock takes none.

Restarts serve the same files. attach records its SOURCE, parts, filter
files and exec: program by absolute path, with each served file's device
and inode. A server started later (by the supervisor after a crash, or by
nbdloop restart from any directory) refuses a path that now leads to
another file, and list shows why. Signals to servers and supervisors go
through pidfds, after checking the start time recorded with the pid, so a
recycled pid is never signalled.
An nbd:// SOURCE names no local file: nothing is locked or pinned (a
relative socket= path or tls-certificates= directory is made absolute),
and a restarted server connects to the remote export again, refusing it
if its size has changed.

exec: programs run with PATH, HOME, LANG, LC_ALL, $tmpdir and the
variables env=NAME items name, nothing else of the environment attach was
run in; whatever a program starts, in its process group or not (setsid),
is killed when a call times out and at detach.

Outputs. The log filter appends to its file (never truncates), creates it
0600 with its first line (a failed attach creates nothing), and refuses a
symbolic link. pack writes to a temporary file beside its output and
renames it into place; it refuses an output that is its input, and an
error or a signal leaves no partial output. /run/nbdloop is 0700, its
files 0600.`

// completionHelp is the description of nbdloop completion.
const completionHelp = `Prints a completion script for bash, zsh or fish. The script is generated
from nbdloop's own definitions, so it offers every command and flag of this
version (with its usage, in zsh and fish) and their values: --format,
--block-size, --table, --filter (filters, their keys and values, file names
after log:file= and the other PATH keys), list -O's columns, the existing
/dev/nbdN for --device, the attached devices for the DEVICE of detach,
restart, stats and top, files and the memory:, exec: and file: prefixes for
SOURCE, and files for the operands and -o of pack and draw. The fixed lists
are in the script: a TAB runs no program but nbdloop list -n -O NAME, for
the attached devices. Regenerate the script after an upgrade.

Install the scripts where the shells look for them:
  # nbdloop completion bash > /usr/share/bash-completion/completions/nbdloop
  # nbdloop completion zsh > /usr/share/zsh/vendor-completions/_nbdloop
  # nbdloop completion fish > /usr/share/fish/vendor_completions.d/nbdloop.fish
or load one into the running shell:
  $ source <(nbdloop completion bash)      (zsh: the same, after compinit)
  $ nbdloop completion fish | source`

// serveDescription is serve's help text.
func serveDescription() string {
	return "Serves SOURCE, and each --export, to NBD clients on the network (qemu-img,\n" +
		"qemu-io, nbdinfo, nbdcopy, nbdsh and other clients of the NBD protocol).\n" +
		"SOURCE is anything attach takes (formats, memory:, exec:, --filter),\n" +
		"opened the way attach opens it; SOURCE is the default export (the empty name),\n" +
		"and without it the first --export is. Listens on TCP (--listen; port " + attach.DefaultPort + "\n" +
		"when none is given, on every address when neither --listen nor --unix is) and\n" +
		"on a Unix socket (--unix), serves until SIGINT or SIGTERM, then flushes every\n" +
		"export and exits 0. One line per client goes to stderr: its address, export\n" +
		"and TLS or not. Needs no root.\n\n" +
		"Started by socket activation (a systemd socket unit, systemd-socket-activate,\n" +
		"or libnbd's nbd_connect_systemd_socket_activation, as for nbdkit and qemu-nbd:\n" +
		"LISTEN_PID is serve's pid, LISTEN_FDS counts the listening sockets passed from\n" +
		"descriptor 3 on), serve accepts clients on those sockets instead; --listen,\n" +
		"--unix and --background do not apply, and the variables are not passed on\n" +
		"to exec: programs.\n\n" +
		"Clients negotiate with the fixed newstyle handshake (NBD_OPT_GO, INFO,\n" +
		"EXPORT_NAME, LIST, ABORT, STARTTLS, STRUCTURED_REPLY, LIST/SET_META_CONTEXT with\n" +
		"base:allocation; other options are refused as unsupported) and get the\n" +
		"export's size, flags and block sizes (minimum 1, or 512 with --direct-io;\n" +
		"preferred 4096; maximum 32M). Block status (nbdinfo --map, qemu-img map)\n" +
		"shows the holes of sparse files, memory: exports and qcow2 images, which\n" +
		"nbdcopy and qemu-img convert skip; VMDK and compressed images are all data.\n" +
		"A client that sends garbage or oversized options, or takes longer than\n" +
		"--handshake-timeout to choose an export, loses its connection, not the\n" +
		"server.\n\n" +
		"With --background, serve runs in a supervised process of its own and exits\n" +
		"once that listens, printing a line per address (\"listening on tcp\n" +
		"127.0.0.1:10809\"; --listen :0 shows the port chosen). A server process that\n" +
		"dies is started again by its supervisor, listening on the same addresses\n" +
		"(the same port for :0); one that dies five times in a row within 10 s of\n" +
		"starting is given up, and so is one with a memory: export or a filter that\n" +
		"keeps written data in the process, or a qcow2 image (new cluster mappings\n" +
		"live in the process until a flush): their bytes died with it. nbdloop list\n" +
		"--served shows the background serves; nbdloop serve --stop ADDRESS (an\n" +
		"address or socket path as list --served shows it, or the supervisor's pid)\n" +
		"stops one: its exports are flushed, its record removed. Logs go to\n" +
		"serve-PID.log in the state directory (" + attach.DefaultStateDir + ").\n\n" +
		"At most --max-connections clients are connected at once, counted from\n" +
		"their connect (the handshake included) to their disconnect; over the limit,\n" +
		"a client's connection is closed at once, before the greeting, with a log\n" +
		"line, as nbdkit's limit filter does (qemu-nbd --shared instead leaves it\n" +
		"waiting to be accepted). --idle-timeout disconnects a client, with a log\n" +
		"line, once nothing has gone either way on its connection for that long;\n" +
		"a request that takes longer than that to answer counts as idle too.\n\n" +
		"TLS: clients that ask with NBD_OPT_STARTTLS (nbds:// URIs, qemu's tls-creds)\n" +
		"get TLS 1.2 or later with the certificate in --tls-certificates DIR\n" +
		"(nbdkit's layout: server-cert.pem, server-key.pem, and ca-cert.pem for\n" +
		"--tls-verify-peer; default /etc/nbdloop/pki for root, else\n" +
		"~/.config/nbdloop/pki; server-key.pem must be mode 0600; nbdkit-tls(1) shows\n" +
		"how to make them with certtool). --tls=require refuses every option before\n" +
		"NBD_OPT_STARTTLS with NBD_REP_ERR_TLS_REQD, so a plain-text client learns\n" +
		"nothing about the exports (the NBD protocol's defence against downgrades);\n" +
		"--tls=on lets each client choose; --tls=off refuses STARTTLS. Without --tls,\n" +
		"TLS is on when --tls-certificates is given or the default directory holds\n" +
		"server-cert.pem, and off otherwise, as in nbdkit. --tls-verify-peer refuses\n" +
		"clients without a certificate signed by ca-cert.pem. Each client's log line\n" +
		"says TLS or not, and the subject of its certificate. Over a Unix socket,\n" +
		"qemu needs tls-hostname= to check the server's certificate, and libnbd\n" +
		"checks none. Without TLS, serve on a trusted network or a Unix socket.\n\n" +
		"EXAMPLES:\n" +
		"  $ nbdloop serve --listen 127.0.0.1 disk.img.xz\n" +
		"  $ qemu-img convert -O qcow2 nbd://127.0.0.1 disk.qcow2\n" +
		"  $ nbdloop serve --unix /tmp/nbd.sock --export a=a.img --export b=memory:1G\n" +
		"  $ nbdinfo --list 'nbd+unix:///?socket=/tmp/nbd.sock'\n" +
		"  $ systemd-socket-activate -l 10809 nbdloop serve disk.img\n" +
		"  $ nbdloop serve --tls=require --tls-certificates /etc/nbdloop/pki disk.qcow2\n" +
		"  $ nbdinfo 'nbds://server/?tls-certificates=/etc/pki/libnbd'\n\n" + sourceHelp + "\n\n" + filters.Help()
}
