package attach

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/nbdloop/nbdloop/filters"
	"github.com/nbdloop/nbdloop/nbd"
	"github.com/nbdloop/nbdloop/sources/script"
)

// DefaultPort is the NBD port (IANA), where `nbdloop serve` listens when
// no port is given.
const DefaultPort = "10809"

// NetExport is one export of `nbdloop serve`: the name clients ask for and
// what it serves, as an attach request (SOURCE and attach's source flags;
// the device flags do not apply).
type NetExport struct {
	Name   string
	Config Config
}

// NetConfig is an `nbdloop serve` request.
type NetConfig struct {
	// Exports are served by name. The default export (the empty name) is
	// the one named "", or else the first.
	Exports []NetExport
	// Listen is a TCP address, HOST:PORT (ListenAddress), or "" for none.
	Listen string
	// Unix is the path of a Unix socket to listen on, or "" for none.
	Unix string
	// SocketActivation listens on the sockets passed by socket activation
	// (SocketActivated) instead of Listen and Unix, which must be empty.
	// It applies to the foreground serve only (NetServe).
	SocketActivation bool
	// HandshakeTimeout bounds each client's handshake (0: the nbd
	// package's default).
	HandshakeTimeout time.Duration
	// MaxClients bounds the clients connected at once; one more is
	// closed before the greeting, with a log line. 0 is no bound.
	MaxClients int
	// IdleTimeout disconnects a client, with a log line, that has sent
	// and been sent nothing for that long after its handshake. 0 is
	// none.
	IdleTimeout time.Duration
	// TLS is whether clients may (on) or must (require) use TLS
	// (NBD_OPT_STARTTLS); DefaultTLSMode chooses it when the user did not.
	TLS nbd.TLSMode
	// TLSCertificates is the directory of the server's certificate, in
	// nbdkit's layout: server-cert.pem, server-key.pem (mode 0600) and,
	// with TLSVerifyPeer, ca-cert.pem. "" is DefaultTLSCertificates().
	TLSCertificates string
	// TLSVerifyPeer refuses clients without a certificate signed by
	// ca-cert.pem.
	TLSVerifyPeer bool
	// Clients, when set, is told of every client that chooses an export
	// and of its end (nbd.ListenOptions.Clients); the background server
	// publishes the counts with it. It is not part of the request a
	// background serve passes on.
	Clients func(e *nbd.Export, delta int) `json:"-"`
}

// ListenAddress completes a --listen value: [ADDR]:PORT as given, and an
// address without a port (HOST, [IPv6], or nothing) gets DefaultPort.
func ListenAddress(s string) string {
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s
	}
	host := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	return net.JoinHostPort(host, DefaultPort)
}

// Validate checks the request; errors name the flag and the fix.
func (nc *NetConfig) Validate() error {
	if len(nc.Exports) == 0 {
		return errors.New("nothing to serve: give a SOURCE or --export NAME=SOURCE")
	}
	if nc.SocketActivation && (nc.Listen != "" || nc.Unix != "") {
		return errors.New("--listen and --unix do not apply under socket activation (LISTEN_PID names this process: the sockets are passed; unset LISTEN_PID to listen elsewhere)")
	}
	if nc.Listen == "" && nc.Unix == "" && !nc.SocketActivation {
		return errors.New("nowhere to listen: give --listen or --unix")
	}
	if nc.MaxClients < 0 {
		return fmt.Errorf("--max-connections %d: use a number of clients, or 0 for no limit", nc.MaxClients)
	}
	if err := nc.validateTLS(); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, e := range nc.Exports {
		switch {
		case seen[e.Name] && e.Name == "":
			return errors.New("two default exports: give one SOURCE, the others as --export NAME=SOURCE")
		case seen[e.Name]:
			return fmt.Errorf("--export %s: the name is given twice", e.Name)
		case len(e.Name) > nbd.MaxNameLength:
			return fmt.Errorf("--export: a name of %d bytes is over the protocol's limit of %d", len(e.Name), nbd.MaxNameLength)
		case strings.IndexByte(e.Name, 0) >= 0:
			return errors.New("--export: a name must not contain NUL")
		}
		seen[e.Name] = true
		cfg := e.Config
		if err := cfg.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// NetServe serves nc to network clients in the foreground: it opens every
// export as attach's server opens a SOURCE (image locks, formats, filters),
// listens, calls ready with the addresses it listens on, and serves every
// client until ctx is cancelled (SIGINT, SIGTERM). Then it closes the
// connections, flushes and closes every export and returns nil, or the
// first flush error. With TLS, the certificate is loaded before anything
// is opened. Log lines (one per client, with its address, export and TLS
// or not) go to logger.
func NetServe(ctx context.Context, nc NetConfig, logger *log.Logger, ready func([]net.Addr, []NetExportState)) error {
	if err := nc.Validate(); err != nil {
		return err
	}
	var tlsConfig *tls.Config
	if nc.TLS != nbd.TLSOff {
		var err error
		if tlsConfig, err = serverTLSConfig(nc.tlsDir(), nc.TLSVerifyPeer); err != nil {
			return err
		}
	}
	exports := &netExports{byName: map[string]*nbd.Export{}}
	var runs []*serverRun
	defer func() {
		for _, r := range runs {
			r.cleanUp()
		}
	}()
	for _, e := range nc.Exports {
		r, exp, err := openNetExport(e, logger)
		if err != nil {
			return err
		}
		runs = append(runs, r)
		exports.add(exp)
		for _, w := range r.res.Warnings {
			logger.Printf("export %q: %s", e.Name, w)
		}
	}
	lns, err := netListen(nc)
	if err != nil {
		return err
	}
	var addrs []net.Addr
	for _, ln := range lns {
		addrs = append(addrs, ln.Addr())
	}
	for _, e := range exports.list {
		logger.Printf("export %q: %s (%d bytes, flags %#x)", e.Name, e.Description, e.Size(), e.TransmissionFlags())
	}
	logger.Print(describeTLS(nc))
	served := make([]NetExportState, len(runs))
	for i, r := range runs {
		served[i] = NetExportState{Name: nc.Exports[i].Name, Source: nc.Exports[i].Config.Source, Format: r.opened.Format}
	}
	ready(addrs, served)
	err = nbd.ServeListeners(ctx, lns, exports, nbd.ListenOptions{
		Handshake:   nbd.HandshakeOptions{Timeout: nc.HandshakeTimeout, TLS: nc.TLS, TLSConfig: tlsConfig},
		Logf:        logger.Printf,
		MaxClients:  nc.MaxClients,
		IdleTimeout: nc.IdleTimeout,
		Clients:     nc.Clients,
	})
	for _, r := range runs {
		if ferr := r.src.Flush(); ferr != nil && err == nil {
			err = fmt.Errorf("%s: flush: %w", r.cfg.Source, ferr)
		}
	}
	return err
}

// openNetExport opens e's source and filters the way the attach server
// does, and makes its export. The serverRun holds what to close.
func openNetExport(e NetExport, logger *log.Logger) (*serverRun, *nbd.Export, error) {
	cfg, err := e.Config.pinned()
	if err != nil {
		return nil, nil, err
	}
	r := &serverRun{cfg: cfg, logger: logger}
	fail := func(err error) (*serverRun, *nbd.Export, error) {
		r.cleanUp()
		return nil, nil, exportError(e.Name, err)
	}
	if r.spec, err = ParseSpec(cfg.Source); err != nil {
		return fail(err)
	}
	if !cfg.NoLock {
		if r.locks, err = lockFiles(cfg.Files); err != nil {
			return fail(err)
		}
		r.deferUndo(r.locks.Close)
	}
	if err := r.openSource(); err != nil {
		return fail(err)
	}
	if cfg.ReadOnly && !r.src.Caps().ReadOnly {
		// A cow filter, say, takes writes over a read-only source, and
		// a client may write whatever the flags say: the readonly
		// filter, nearest the clients, refuses them.
		if err := r.refuseWrites(); err != nil {
			return fail(err)
		}
	}
	caps := r.src.Caps()
	exp := &nbd.Export{
		Name:         e.Name,
		Description:  describe(r.opened),
		Server:       nbd.NewServer(r.src, nbd.Options{Logf: logger.Printf, Observe: r.stack.ObserveFunc()}),
		ReadOnly:     caps.ReadOnly || cfg.ReadOnly,
		MinBlockSize: minBlockSize(r.opened, cfg),
	}
	return r, exp, nil
}

// refuseWrites puts the readonly filter over r's source and filters.
func (r *serverRun) refuseWrites() error {
	spec, err := filters.Parse("readonly")
	if err != nil {
		return err
	}
	ro, err := filters.Open(r.src, []filters.Spec{spec}, filters.Env{Logf: r.logger.Printf})
	if err != nil {
		return err
	}
	r.src = ro.Source
	r.deferUndo(func() { ro.Source.Close() })
	return nil
}

func exportError(name string, err error) error {
	if name == "" {
		return err
	}
	return fmt.Errorf("--export %s: %w", name, err)
}

// describe is an export's description for clients: what attach's list
// shows as SOURCE, with the format of an image.
func describe(o *Opened) string {
	switch o.Format {
	case "", "raw", "memory", "exec":
		return o.Desc
	}
	return o.Desc + " (" + o.Format + ")"
}

// minBlockSize is the smallest request an export handles without extra
// work: 512 with O_DIRECT (the source bounces smaller ones through a
// buffer), a program's own minimum, else 1 (every Source takes any offset
// and length).
func minBlockSize(o *Opened, cfg Config) uint32 {
	m := uint32(1)
	if cfg.DirectIO {
		m = 512
	}
	if s, ok := o.Source.(*script.Source); ok {
		m = max(m, uint32(s.BlockSizes().Min))
	}
	return m
}

// netExports are the exports of one `nbdloop serve`, for nbd.Handshake.
type netExports struct {
	byName map[string]*nbd.Export
	list   []*nbd.Export
}

func (x *netExports) add(e *nbd.Export) {
	x.byName[e.Name] = e
	x.list = append(x.list, e)
}

// Export returns the export called name; the empty name is the export
// named "" or else the first.
func (x *netExports) Export(name string) *nbd.Export {
	if e, ok := x.byName[name]; ok {
		return e
	}
	if name == "" && len(x.list) > 0 {
		return x.list[0]
	}
	return nil
}

func (x *netExports) List() []*nbd.Export { return x.list }

// netListen opens nc's listeners, or takes the activated ones. A Unix
// socket left behind by a server that died is replaced; one that a live
// server answers on is not.
func netListen(nc NetConfig) ([]net.Listener, error) {
	if nc.SocketActivation {
		return activatedListeners()
	}
	var lns []net.Listener
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	if nc.Listen != "" {
		ln, err := net.Listen("tcp", nc.Listen)
		if err != nil {
			return nil, fmt.Errorf("--listen %s: %w", nc.Listen, err)
		}
		lns = append(lns, ln)
	}
	if nc.Unix != "" {
		ln, err := listenUnix(nc.Unix)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("--unix %s: %w", nc.Unix, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

func listenUnix(path string) (net.Listener, error) {
	ln, err := net.Listen("unix", path)
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		return ln, err
	}
	if fi, serr := os.Lstat(path); serr != nil || fi.Mode().Type() != fs.ModeSocket {
		return nil, errors.New("the path exists and is not a socket (remove it or choose another path)")
	}
	if c, derr := net.Dial("unix", path); derr == nil {
		c.Close()
		return nil, errors.New("another server listens on this socket")
	}
	if err := os.Remove(path); err != nil {
		return nil, err
	}
	return net.Listen("unix", path)
}
