// Package attach is the device lifecycle: it turns an attach request (a
// Config: SOURCE and flags) into a source chain served to a kernel
// /dev/nbdN by a background server process, watched by a supervisor, and
// lists, detaches and restarts such devices.
//
// Where each job lives:
//
//   - The SOURCE language and opening sources: spec.go (Spec, SourceKind,
//     OpenOptions, OpenSource), format.go (--format, the probe, where an
//     image's named files may be), probe.go, probe_qcow2.go and
//     probe_vmdk.go (the probe table's formats), guard.go (a probed-raw
//     file stays raw), composite.go (--concat, --partitions, --partition),
//     memory.go (memory:), exec.go (exec:), url.go (http:// and https://).
//   - The attach request: config.go (Config, its defaults and checks),
//     paths.go (paths made absolute and files pinned by device and inode),
//     filters.go (the --filter chain and its statistics file).
//   - The server and supervisor processes: attach.go (Attach, Foreground,
//     the server process's body), daemon.go (re-executing nbdloop as a
//     server or supervisor: the environment, the result pipe, the memfd),
//     serve.go (one server: open, hand the sockets to the kernel, record,
//     serve until detached or handed over), progress.go (the Progress of
//     long work: a gzip file's first pass reported to attach on the report
//     pipe, the background decode of a single-block image logged and
//     recorded for list), device.go (the device becoming
//     usable, CONNECT errors), supervise.go (restarting a dead server), policy.go
//     (the restart policy, a pure function), autoclear.go (--autoclear:
//     disconnect on the last close once claimed), lock.go (image locks),
//     protect.go (memory-reclaim protection), process.go (processes named
//     by pid and start time, signalled through pidfds).
//   - `nbdloop serve`: netserve.go (NetServe: exports opened as attach
//     opens a SOURCE, served to network clients), nettls.go (its
//     certificates), netactivate.go (the sockets of systemd socket
//     activation), netdaemon.go (serve --background: a supervisor and
//     the server it restarts, StopServed), netstate.go (their records,
//     serve-PID.json, and ListServed), netclients.go (the live client
//     counts a background server publishes, serve-PID.clients.json).
//   - --driver ublk (a /dev/ublkbN served by package ublk instead of a
//     /dev/nbdN): driver.go (the choice and its checks), ublk.go (the
//     server's steps), ublk_supervise.go (restarts by user recovery),
//     ublk_state.go (records ublkbN.json), ublk_list.go, ublk_detach.go.
//   - The records: state.go (/run/nbdloop: one record per device, State,
//     which a restarted server takes over and attach and list show as a
//     Device; and one log per device).
//   - The lifecycle on the host: host.go (what serve, list, detach and
//     restart need from the machine: the driver, sysfs, device nodes, the
//     state directory; tests give fakes and run it all without root),
//     list.go, detach.go, restart.go, resize.go (a device taking its
//     file's new size through a restart).
//
// The help texts that describe all this to users live in cmd/nbdloop.
package attach
