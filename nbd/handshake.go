package nbd

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Export is one export a network client may choose in the handshake.
type Export struct {
	// Name is the export's canonical name, sent back in NBD_INFO_NAME and
	// listed by NBD_OPT_LIST.
	Name string
	// Description is shown to users (NBD_INFO_DESCRIPTION, NBD_OPT_LIST).
	Description string
	// Server serves the export's transmission phase; every connection to
	// the export goes through it.
	Server *Server
	// ReadOnly adds NBD_FLAG_READ_ONLY to the transmission flags. The
	// Server's Source must refuse writes itself: a client may ignore the
	// flag.
	ReadOnly bool
	// MinBlockSize is the minimum block size advertised in
	// NBD_INFO_BLOCK_SIZE, a power of two up to 64 KiB; 0 means 1.
	MinBlockSize uint32
}

// Size is the export's size in bytes.
func (e *Export) Size() uint64 { return e.Server.size }

// TransmissionFlags are the flags sent to a client that chooses e:
// TransmissionFlags of the Source's Caps, NBD_FLAG_READ_ONLY when e is
// read-only, and NBD_FLAG_CAN_MULTI_CONN always, because every connection
// to e is served by the one Server over the one Source, so a flush on any
// connection covers the writes completed on all of them.
func (e *Export) TransmissionFlags() uint16 { return e.flags(false) }

// flags are e's TransmissionFlags, with NBD_FLAG_SEND_DF for a client
// that negotiated structured replies or extended headers: a READ's data
// always goes in one chunk.
func (e *Export) flags(structured bool) uint16 {
	f := TransmissionFlags(e.Server.caps, true)
	if e.ReadOnly {
		f |= FlagReadOnly
	}
	if structured {
		f |= FlagSendDF
	}
	return uint16(f)
}

// blockSizes returns the minimum, preferred and maximum block sizes
// advertised for e.
func (e *Export) blockSizes() (minimum, preferred, maximum uint32) {
	minimum = max(e.MinBlockSize, 1)
	return minimum, max(preferredBlockSize, minimum), MaxPayload
}

// Exports are the exports a handshake offers. Implementations must be
// safe for concurrent use: every client's handshake asks them.
type Exports interface {
	// Export returns the export called name, or nil when there is none.
	// The empty name asks for the default export (NBD protocol: "a
	// default export"), which may be nil too.
	Export(name string) *Export
	// List returns every export, in the order NBD_OPT_LIST reports them.
	List() []*Export
}

// Limits of the handshake, against clients that would hold a connection
// or memory forever.
const (
	// DefaultHandshakeTimeout is how long a client may take from
	// connecting to choosing an export.
	DefaultHandshakeTimeout = 10 * time.Second
	// MaxOptions is how many options a client may send before it chooses
	// an export; the connection is dropped at the next one.
	MaxOptions = 64
	// MaxNameLength is the longest export name (and any string) the
	// protocol allows.
	MaxNameLength = 4096
	// maxOptionData is the most option data read and parsed: a name of
	// MaxNameLength with room for every information request and more.
	maxOptionData = 16 << 10
	// maxOptionDiscard is the most option data skipped for a reply of
	// NBD_REP_ERR_TOO_BIG; a client that announces more is dropped.
	maxOptionDiscard = 1 << 20
)

// HandshakeOptions configure Handshake. The zero value is usable.
type HandshakeOptions struct {
	// Timeout bounds the whole handshake (DefaultHandshakeTimeout when
	// 0). It applies when the connection has SetDeadline, as a net.Conn
	// has.
	Timeout time.Duration
	// TLS says whether clients may (TLSOn) or must (TLSRequire) upgrade
	// the connection with NBD_OPT_STARTTLS; TLSConfig, the server's
	// certificate and client checks, must then be set. Only HandshakeConn
	// serves TLS.
	TLS       TLSMode
	TLSConfig *tls.Config
}

// ErrAborted is returned by Handshake when the client ends the handshake
// with NBD_OPT_ABORT (a soft disconnect, as nbdinfo --list does).
var ErrAborted = errors.New("nbd: the client ended the handshake (NBD_OPT_ABORT)")

// ErrHandshakeTimeout is returned by Handshake when the client has not
// chosen an export within HandshakeOptions.Timeout.
var ErrHandshakeTimeout = errors.New("nbd: the client did not finish the handshake in time")

// deadliner is a connection whose reads and writes can be given a
// deadline (net.Conn).
type deadliner interface {
	SetDeadline(t time.Time) error
}

// Handshake runs the server side of the fixed newstyle negotiation on rw
// and returns the Session: the export the client chose with NBD_OPT_GO or
// NBD_OPT_EXPORT_NAME and what it negotiated; the transmission phase
// follows on rw (Session.Serve). It answers NBD_OPT_INFO, NBD_OPT_LIST,
// NBD_OPT_ABORT, NBD_OPT_STRUCTURED_REPLY, NBD_OPT_EXTENDED_HEADERS (which
// implies structured replies, and after which NBD_OPT_STRUCTURED_REPLY is
// refused with NBD_REP_ERR_EXT_HEADER_REQD and NBD_OPT_EXPORT_NAME ends
// the connection), and NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT with the one context base:allocation (once
// structured replies or extended headers are agreed, as the protocol
// requires),
// NBD_OPT_STARTTLS with NBD_REP_ERR_POLICY (TLS is HandshakeConn's), and
// every other option with NBD_REP_ERR_UNSUP.
//
// It never reads past the option that ends the handshake, so requests a
// client sends right after it are left for the transmission phase.
//
// Errors: ErrAborted after NBD_OPT_ABORT; ErrHandshakeTimeout; an error
// wrapping ErrProtocol when the client breaks the protocol (bad magic,
// unknown client flags, an unknown export or bad name with
// NBD_OPT_EXPORT_NAME, which cannot be refused otherwise, more than
// MaxOptions options, option data over 1 MiB); ctx.Err() when ctx is
// cancelled; or the connection's error (io.EOF when the client hung up).
// The caller then closes rw. With a deadline, Handshake clears it before
// returning. opts.TLS must be TLSOff.
func Handshake(ctx context.Context, rw io.ReadWriter, exports Exports, opts HandshakeOptions) (Session, error) {
	if opts.TLS != TLSOff {
		return Session{}, errTLSNeedsConn
	}
	n := &negotiation{rw: rw, exports: exports}
	return n.handshake(ctx, opts)
}

// handshake runs the negotiation under opts' deadline and ctx.
func (n *negotiation) handshake(ctx context.Context, opts HandshakeOptions) (Session, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultHandshakeTimeout
	}
	if d, ok := n.rw.(deadliner); ok {
		d.SetDeadline(time.Now().Add(opts.Timeout))
		defer d.SetDeadline(time.Time{})
		stop := context.AfterFunc(ctx, func() { d.SetDeadline(time.Unix(1, 0)) })
		defer stop()
	}
	exp, err := n.run()
	switch {
	case err == nil:
		chunks := n.structured || n.extended
		return Session{Export: exp, StructuredReplies: n.structured, ExtendedHeaders: n.extended, BaseAllocation: chunks && n.metaExport == exp}, nil
	case ctx.Err() != nil:
		return Session{}, ctx.Err()
	case errors.Is(err, os.ErrDeadlineExceeded):
		return Session{}, fmt.Errorf("%w (%v)", ErrHandshakeTimeout, opts.Timeout)
	}
	return Session{}, err
}

// negotiation is one client's handshake.
type negotiation struct {
	rw       io.ReadWriter
	exports  Exports
	noZeroes bool
	tls      tlsState
	// structured is set once NBD_OPT_STRUCTURED_REPLY was agreed,
	// extended once NBD_OPT_EXTENDED_HEADERS was (which implies
	// structured replies: every reply is then in chunks).
	structured bool
	extended   bool
	// metaExport is the export base:allocation was last selected for
	// with NBD_OPT_SET_META_CONTEXT, or nil.
	metaExport *Export
	hdr        [optHeaderSize]byte
	data       []byte // the current option's data
	out        []byte // replies to the current option
}

func (n *negotiation) run() (*Export, error) {
	g := greeting()
	if _, err := n.rw.Write(g[:]); err != nil {
		return nil, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(n.rw, cf[:]); err != nil {
		return nil, err
	}
	flags := binary.BigEndian.Uint32(cf[:])
	if flags&^(clientFixedNewstyle|clientNoZeroes) != 0 {
		return nil, fmt.Errorf("%w: unknown client flags %#x", ErrProtocol, flags)
	}
	n.noZeroes = flags&clientNoZeroes != 0
	for i := 0; i < MaxOptions; i++ {
		exp, err := n.option()
		if exp != nil || err != nil {
			return exp, err
		}
	}
	return nil, fmt.Errorf("%w: more than %d options without choosing an export", ErrProtocol, MaxOptions)
}

// option reads one option and answers it. It returns the export chosen
// when the option ends the handshake.
func (n *negotiation) option() (*Export, error) {
	if _, err := io.ReadFull(n.rw, n.hdr[:]); err != nil {
		return nil, err
	}
	if m := binary.BigEndian.Uint64(n.hdr[0:8]); m != optMagic {
		return nil, fmt.Errorf("%w: bad option magic %#x", ErrProtocol, m)
	}
	opt := binary.BigEndian.Uint32(n.hdr[8:12])
	length := binary.BigEndian.Uint32(n.hdr[12:16])
	n.out = n.out[:0]
	if n.tls.refuses(opt) {
		return nil, n.refuseBeforeTLS(opt, length)
	}
	if length > maxOptionData {
		return nil, n.tooBig(opt, length)
	}
	if cap(n.data) < int(length) {
		n.data = make([]byte, length, max(int(length), 256))
	}
	n.data = n.data[:length]
	if _, err := io.ReadFull(n.rw, n.data); err != nil {
		return nil, err
	}
	var exp *Export
	var err error
	switch opt {
	case optExportName:
		return n.exportName()
	case optGo, optInfo:
		exp = n.info(opt)
	case optList:
		n.list()
	case optStartTLS:
		return nil, n.startTLS()
	case optAbort:
		n.out = appendOptReply(n.out, opt, repAck)
		err = ErrAborted
	case optStructuredReply:
		n.structuredReply()
	case optExtendedHeaders:
		n.extendedHeaders()
	case optListMetaContext, optSetMetaContext:
		n.metaContext(opt)
	default:
		n.out = appendOptError(n.out, opt, repErrUnsup, optionName(opt)+" is not supported")
	}
	if _, werr := n.rw.Write(n.out); werr != nil && err == nil {
		return nil, werr
	}
	return exp, err
}

// tooBig answers an option whose data is over maxOptionData: skipped and
// refused with NBD_REP_ERR_TOO_BIG up to maxOptionDiscard, beyond that
// the connection is dropped. NBD_OPT_EXPORT_NAME cannot be refused, so it
// is dropped at once.
func (n *negotiation) tooBig(opt, length uint32) error {
	if opt == optExportName || length > maxOptionDiscard {
		return fmt.Errorf("%w: %s with %d bytes of data", ErrProtocol, optionName(opt), length)
	}
	if _, err := io.CopyN(io.Discard, n.rw, int64(length)); err != nil {
		return err
	}
	n.out = appendOptError(n.out, opt, repErrTooBig, fmt.Sprintf("%s: %d bytes of option data is too much", optionName(opt), length))
	_, err := n.rw.Write(n.out)
	return err
}

// exportName answers NBD_OPT_EXPORT_NAME: the export's size and flags
// (and the reserved zeroes unless NO_ZEROES was agreed), or a dropped
// connection, the only refusal the option allows.
func (n *negotiation) exportName() (*Export, error) {
	if n.extended {
		return nil, fmt.Errorf("%w: NBD_OPT_EXPORT_NAME after NBD_OPT_EXTENDED_HEADERS (the client must use NBD_OPT_GO)", ErrProtocol)
	}
	name := string(n.data)
	if len(name) > MaxNameLength || strings.IndexByte(name, 0) >= 0 {
		return nil, fmt.Errorf("%w: NBD_OPT_EXPORT_NAME with a bad name (%d bytes)", ErrProtocol, len(name))
	}
	exp := n.exports.Export(name)
	if exp == nil {
		return nil, fmt.Errorf("%w: NBD_OPT_EXPORT_NAME: no export %q", ErrProtocol, name)
	}
	var b [10 + exportNameZeroes]byte
	binary.BigEndian.PutUint64(b[0:8], exp.Size())
	binary.BigEndian.PutUint16(b[8:10], exp.flags(n.structured || n.extended))
	reply := b[:]
	if n.noZeroes {
		reply = b[:10]
	}
	if _, err := n.rw.Write(reply); err != nil {
		return nil, err
	}
	return exp, nil
}

// info answers NBD_OPT_INFO and NBD_OPT_GO and returns the export when
// NBD_OPT_GO succeeded.
func (n *negotiation) info(opt uint32) *Export {
	req, ok := parseInfoRequest(n.data)
	switch {
	case !ok:
		n.out = appendOptError(n.out, opt, repErrInvalid, optionName(opt)+": the data does not add up")
		return nil
	case len(req.name) > MaxNameLength:
		n.out = appendOptError(n.out, opt, repErrTooBig, fmt.Sprintf("%s: the export name is %d bytes, over the limit of %d", optionName(opt), len(req.name), MaxNameLength))
		return nil
	case strings.IndexByte(req.name, 0) >= 0:
		n.out = appendOptError(n.out, opt, repErrInvalid, optionName(opt)+": the export name contains NUL")
		return nil
	}
	exp := n.exports.Export(req.name)
	if exp == nil {
		n.out = appendOptError(n.out, opt, repErrUnknown, fmt.Sprintf("no export %q", req.name))
		return nil
	}
	n.out = appendInfoExport(n.out, opt, exp.Size(), exp.flags(n.structured || n.extended))
	var name, desc bool
	for _, t := range req.infos {
		switch t {
		case infoName:
			name = true
		case infoDescription:
			desc = true
		}
	}
	if name {
		n.out = appendInfoString(n.out, opt, infoName, exp.Name)
	}
	if desc && exp.Description != "" {
		n.out = appendInfoString(n.out, opt, infoDescription, exp.Description)
	}
	// Block sizes are sent whether asked or not: the protocol allows it,
	// and they tell every client what the export handles best.
	lo, pref, hi := exp.blockSizes()
	n.out = appendInfoBlockSize(n.out, opt, lo, pref, hi)
	n.out = appendOptReply(n.out, opt, repAck)
	if opt == optGo {
		return exp
	}
	return nil
}

// list answers NBD_OPT_LIST: every export's name and description.
func (n *negotiation) list() {
	if len(n.data) != 0 {
		n.out = appendOptError(n.out, optList, repErrInvalid, "NBD_OPT_LIST takes no data")
		return
	}
	for _, e := range n.exports.List() {
		n.out = appendServer(n.out, e.Name, e.Description)
	}
	n.out = appendOptReply(n.out, optList, repAck)
}

// structuredReply answers NBD_OPT_STRUCTURED_REPLY: agreed, unless the
// client sent data with it or has agreed to extended headers, which take
// precedence (NBD_REP_ERR_EXT_HEADER_REQD).
func (n *negotiation) structuredReply() {
	switch {
	case len(n.data) != 0:
		n.out = appendOptError(n.out, optStructuredReply, repErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
	case n.extended:
		n.out = appendOptError(n.out, optStructuredReply, repErrExtHeaderReqd, "NBD_OPT_STRUCTURED_REPLY: extended headers are already agreed and take precedence")
	default:
		n.structured = true
		n.out = appendOptReply(n.out, optStructuredReply, repAck)
	}
}

// extendedHeaders answers NBD_OPT_EXTENDED_HEADERS: agreed, whether or not
// structured replies were, unless the client sent data with it.
func (n *negotiation) extendedHeaders() {
	if len(n.data) != 0 {
		n.out = appendOptError(n.out, optExtendedHeaders, repErrInvalid, "NBD_OPT_EXTENDED_HEADERS takes no data")
		return
	}
	n.extended = true
	n.out = appendOptReply(n.out, optExtendedHeaders, repAck)
}

// metaContext answers NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT. The one context is base:allocation: listed
// for no query, "base:" or "base:allocation", selected by
// "base:allocation"; other queries are ignored, as the protocol asks.
// SET replaces the selection even when it fails.
func (n *negotiation) metaContext(opt uint32) {
	if opt == optSetMetaContext {
		n.metaExport = nil
	}
	if !n.structured && !n.extended {
		n.out = appendOptError(n.out, opt, repErrInvalid, optionName(opt)+": negotiate NBD_OPT_STRUCTURED_REPLY or NBD_OPT_EXTENDED_HEADERS first")
		return
	}
	req, ok := parseMetaRequest(n.data)
	switch {
	case !ok:
		n.out = appendOptError(n.out, opt, repErrInvalid, optionName(opt)+": the data does not add up")
		return
	case strings.IndexByte(req.name, 0) >= 0:
		n.out = appendOptError(n.out, opt, repErrInvalid, optionName(opt)+": the export name contains NUL")
		return
	}
	exp := n.exports.Export(req.name)
	if exp == nil {
		n.out = appendOptError(n.out, opt, repErrUnknown, fmt.Sprintf("no export %q", req.name))
		return
	}
	found := opt == optListMetaContext && len(req.queries) == 0
	for _, q := range req.queries {
		found = found || q == baseAllocation || q == "base:" && opt == optListMetaContext
	}
	if found {
		if opt == optSetMetaContext {
			n.metaExport = exp
			n.out = appendMetaContext(n.out, opt, baseAllocationID, baseAllocation)
		} else {
			// Listed contexts carry the reserved ID 0.
			n.out = appendMetaContext(n.out, opt, 0, baseAllocation)
		}
	}
	n.out = appendOptReply(n.out, opt, repAck)
}
