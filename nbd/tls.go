package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
)

// TLSMode is whether a server offers TLS to its clients (NBD_OPT_STARTTLS)
// and whether it insists on it: the three server modes of the NBD
// protocol's "TLS support" section.
type TLSMode uint8

const (
	// TLSOff refuses NBD_OPT_STARTTLS with NBD_REP_ERR_POLICY (NOTLS).
	TLSOff TLSMode = iota
	// TLSOn lets a client upgrade with NBD_OPT_STARTTLS at any point of
	// the handshake or carry on in plain text (SELECTIVETLS with no
	// TLS-only export).
	TLSOn
	// TLSRequire answers every option but NBD_OPT_STARTTLS and
	// NBD_OPT_ABORT with NBD_REP_ERR_TLS_REQD until the client has
	// upgraded, and drops a client that sends NBD_OPT_EXPORT_NAME before
	// (FORCEDTLS): nothing about the exports is sent in plain text.
	TLSRequire
)

// String is the mode as `nbdloop serve --tls` spells it.
func (m TLSMode) String() string {
	switch m {
	case TLSOff:
		return "off"
	case TLSOn:
		return "on"
	case TLSRequire:
		return "require"
	}
	return "TLSMode(" + strconv.Itoa(int(m)) + ")"
}

// Option replies of NBD_OPT_STARTTLS and of options refused before it.
const (
	repErrPolicy  = 1<<31 + 2 // NBD_REP_ERR_POLICY
	repErrTLSReqd = 1<<31 + 5 // NBD_REP_ERR_TLS_REQD
)

// errTLSNeedsConn is returned by Handshake when opts ask for TLS.
var errTLSNeedsConn = errors.New("nbd: TLS needs a network connection: use HandshakeConn")

// HandshakeConn is Handshake on a network connection, with TLS as opts.TLS
// says: a client may send NBD_OPT_STARTTLS (when opts.TLS is TLSOn or
// TLSRequire), which is acknowledged with NBD_REP_ACK, then c becomes the
// server end of a TLS connection (opts.TLSConfig, within the handshake's
// deadline) and the handshake goes on over it. A second NBD_OPT_STARTTLS
// is refused with NBD_REP_ERR_INVALID. A TLS handshake that fails ends the
// negotiation with an error: the client can no longer go on in plain text.
//
// It returns the export chosen and the connection on which the
// transmission phase follows: c, or the *tls.Conn over c after
// NBD_OPT_STARTTLS; the caller closes c. Errors are Handshake's, and
// those of the TLS handshake.
func HandshakeConn(ctx context.Context, c net.Conn, exports Exports, opts HandshakeOptions) (Session, net.Conn, error) {
	if opts.TLS != TLSOff && opts.TLSConfig == nil {
		return Session{}, c, fmt.Errorf("nbd: TLS %s without a TLS configuration", opts.TLS)
	}
	n := &negotiation{rw: c, exports: exports, tls: tlsState{mode: opts.TLS, config: opts.TLSConfig, raw: c}}
	sess, err := n.handshake(ctx, opts)
	if n.tls.conn != nil {
		return sess, n.tls.conn, err
	}
	return sess, c, err
}

// tlsState is what a negotiation knows of TLS.
type tlsState struct {
	mode   TLSMode
	config *tls.Config
	raw    net.Conn  // the client's connection; nil in Handshake
	conn   *tls.Conn // over raw, once NBD_OPT_STARTTLS succeeded
}

// refuses reports whether opt must be refused because TLS is required and
// the client has not upgraded yet.
func (t *tlsState) refuses(opt uint32) bool {
	return t.mode == TLSRequire && t.conn == nil && opt != optStartTLS && opt != optAbort
}

// refuseBeforeTLS answers an option sent before NBD_OPT_STARTTLS to a
// server that requires TLS: its data is skipped, unread, and it gets
// NBD_REP_ERR_TLS_REQD; NBD_OPT_EXPORT_NAME, which cannot be refused, and
// data over maxOptionDiscard cost the connection.
func (n *negotiation) refuseBeforeTLS(opt, length uint32) error {
	switch {
	case opt == optExportName:
		return fmt.Errorf("%w: NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS, and this server requires TLS", ErrProtocol)
	case length > maxOptionDiscard:
		return fmt.Errorf("%w: %s with %d bytes of data", ErrProtocol, optionName(opt), length)
	}
	if _, err := io.CopyN(io.Discard, n.rw, int64(length)); err != nil {
		return err
	}
	n.out = appendOptError(n.out, opt, repErrTLSReqd, "TLS is required: send NBD_OPT_STARTTLS first")
	_, err := n.rw.Write(n.out)
	return err
}

// startTLS answers NBD_OPT_STARTTLS: refused when it has data, when TLS is
// off, or when TLS is already on; otherwise acknowledged in plain text,
// and the TLS handshake follows on the same connection, which the
// negotiation then reads and writes through.
//
// The spec says the server must keep no negotiation state from before
// NBD_OPT_STARTTLS; the only state so far, NBD_FLAG_C_NO_ZEROES, comes
// with the client's flags, before any option, and stays.
func (n *negotiation) startTLS() error {
	switch {
	case len(n.data) != 0:
		n.out = appendOptError(n.out, optStartTLS, repErrInvalid, "NBD_OPT_STARTTLS takes no data")
	case n.tls.mode == TLSOff:
		n.out = appendOptError(n.out, optStartTLS, repErrPolicy, "TLS is off on this server")
	case n.tls.conn != nil:
		n.out = appendOptError(n.out, optStartTLS, repErrInvalid, "TLS is already on")
	default:
		n.out = appendOptReply(n.out, optStartTLS, repAck)
		if _, err := n.rw.Write(n.out); err != nil {
			return err
		}
		c := tls.Server(newTLSTransport(n.tls.raw), n.tls.config)
		if err := c.Handshake(); err != nil {
			return fmt.Errorf("nbd: TLS handshake: %w", err)
		}
		n.tls.conn = c
		n.rw = c
		// Nothing negotiated in plain text survives the upgrade (the
		// protocol's rule): structured replies and meta contexts are
		// asked for again over TLS.
		n.structured, n.extended, n.metaExport = false, false, nil
		return nil
	}
	_, err := n.rw.Write(n.out)
	return err
}

// DescribeTLS says how c is protected, for a client's log line: "TLS 1.3"
// and the subject of the client's certificate when it gave one, or "no
// TLS".
func DescribeTLS(c net.Conn) string {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return "no TLS"
	}
	st := tc.ConnectionState()
	s := tls.VersionName(st.Version)
	if len(st.PeerCertificates) > 0 {
		s += fmt.Sprintf(", client certificate %q", st.PeerCertificates[0].Subject.String())
	}
	return s
}
