package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
)

// ExportInfo is what a server told the client about the export it chose.
type ExportInfo struct {
	// Name is the export name the client asked for.
	Name string
	// Description is the server's NBD_INFO_DESCRIPTION, if it sent one.
	Description string
	// Size is the export's size in bytes, at most 2^63-1.
	Size int64
	// Flags are the transmission flags (FlagReadOnly, FlagSendFlush, ...);
	// 0 when the server did not set FlagHasFlags.
	Flags uint16
	// MinBlock, PreferredBlock and MaxPayload are the server's size
	// constraints (NBD_INFO_BLOCK_SIZE), or the protocol's defaults (1,
	// 4096, 32 MiB) when it sent none. MaxPayload is capped at
	// MaxPayload and is a multiple of MinBlock.
	MinBlock, PreferredBlock, MaxPayload uint32
	// OldStyle is set when the server took NBD_OPT_EXPORT_NAME because it
	// did not know NBD_OPT_GO (or is not fixed newstyle).
	OldStyle bool
	// ExtendedHeaders is set when the server agreed to
	// NBD_OPT_EXTENDED_HEADERS.
	ExtendedHeaders bool
	// BaseAllocation is set when the server also selected the
	// base:allocation metadata context (NBD_OPT_SET_META_CONTEXT, asked
	// only with extended headers) with ID MetaContextID: Client.Extents
	// then asks it with NBD_CMD_BLOCK_STATUS.
	BaseAllocation bool
	MetaContextID  uint32
}

// Limits on what a server may send in the handshake.
const (
	// maxOptReplyData is the most data one option reply may carry: a
	// name or description of MaxNameLength and its type, with room.
	maxOptReplyData = 2 * MaxNameLength
	// maxGoReplies is how many replies to NBD_OPT_GO are read before the
	// server is taken to be misbehaving.
	maxGoReplies = 64
	// oldstyleMagic follows NBDMAGIC from an oldstyle server.
	oldstyleMagic = 0x00420281861253
	// repErrBlockSizeReqd is sent by servers that require
	// NBD_INFO_BLOCK_SIZE to be asked for.
	repErrBlockSizeReqd = 1<<31 + 8
)

// errGoUnsupported reports a server that answered NBD_OPT_GO with
// NBD_REP_ERR_UNSUP: the client falls back to NBD_OPT_EXPORT_NAME.
var errGoUnsupported = errors.New("nbd: the server does not know NBD_OPT_GO")

// clientHandshake runs the client side of the fixed newstyle handshake on
// rw for the export called name: with ext, NBD_OPT_EXTENDED_HEADERS (a
// refusal of any kind leaves the compact headers), then NBD_OPT_GO asking
// for the block size constraints, or NBD_OPT_EXPORT_NAME for servers that
// do not know it (and so cannot have agreed to extended headers).
// With startTLS, NBD_OPT_STARTTLS is the first option; once the server
// acknowledges it, startTLS runs the TLS handshake and returns what the
// options that follow are sent on. A server that refuses it fails the
// handshake: there is no falling back to plain text.
// Errors wrap ErrProtocol when the server breaks the protocol.
func clientHandshake(rw io.ReadWriter, name string, startTLS func() (io.ReadWriter, error), ext bool) (ExportInfo, error) {
	if len(name) > MaxNameLength {
		return ExportInfo{}, fmt.Errorf("nbd: the export name is %d bytes, over the protocol's limit of %d", len(name), MaxNameLength)
	}
	var g [18]byte
	if _, err := io.ReadFull(rw, g[:16]); err != nil {
		return ExportInfo{}, fmt.Errorf("nbd: reading the server's greeting: %w", err)
	}
	if m := binary.BigEndian.Uint64(g[0:8]); m != nbdMagic {
		return ExportInfo{}, fmt.Errorf("%w: the server's greeting starts with %#x, not NBDMAGIC (is it an NBD server?)", ErrProtocol, m)
	}
	switch m := binary.BigEndian.Uint64(g[8:16]); m {
	case optMagic:
	case oldstyleMagic:
		return ExportInfo{}, fmt.Errorf("%w: the server speaks the oldstyle handshake, which has no export names (use a newstyle server)", ErrProtocol)
	default:
		return ExportInfo{}, fmt.Errorf("%w: bad magic %#x after NBDMAGIC", ErrProtocol, m)
	}
	if _, err := io.ReadFull(rw, g[16:18]); err != nil {
		return ExportInfo{}, fmt.Errorf("nbd: reading the server's handshake flags: %w", err)
	}
	hf := binary.BigEndian.Uint16(g[16:18])
	var cf uint32
	if hf&handshakeFixedNewstyle != 0 {
		cf |= clientFixedNewstyle
	}
	noZeroes := hf&handshakeNoZeroes != 0
	if noZeroes {
		cf |= clientNoZeroes
	}
	if _, err := rw.Write(binary.BigEndian.AppendUint32(nil, cf)); err != nil {
		return ExportInfo{}, fmt.Errorf("nbd: sending the client's flags: %w", err)
	}
	if startTLS != nil {
		if hf&handshakeFixedNewstyle == 0 {
			return ExportInfo{}, fmt.Errorf("%w: the server is not fixed newstyle, so it cannot offer TLS (NBD_OPT_STARTTLS), and TLS is required", ErrTLSRefused)
		}
		if err := optStartTLSRequest(rw); err != nil {
			return ExportInfo{}, err
		}
		var err error
		if rw, err = startTLS(); err != nil {
			return ExportInfo{}, err
		}
	}
	if hf&handshakeFixedNewstyle != 0 {
		agreed := false
		if ext {
			var err error
			if agreed, err = optExtendedHeadersRequest(rw); err != nil {
				return ExportInfo{}, err
			}
		}
		var meta uint32
		alloc := false
		if agreed {
			var err error
			if meta, alloc, err = optSetBaseAllocation(rw, name); err != nil {
				return ExportInfo{}, err
			}
		}
		info, err := optGoExport(rw, name)
		info.ExtendedHeaders = agreed && err == nil
		if info.ExtendedHeaders && alloc {
			info.BaseAllocation, info.MetaContextID = true, meta
		}
		switch {
		case agreed && errors.Is(err, errGoUnsupported):
			return ExportInfo{}, fmt.Errorf("%w: NBD_OPT_GO refused as unsupported after NBD_OPT_EXTENDED_HEADERS was agreed", ErrProtocol)
		case !errors.Is(err, errGoUnsupported):
			return info, err
		}
	}
	return optExportNameExport(rw, name, noZeroes)
}

// optSetBaseAllocation selects base:allocation for the export called name
// (NBD_OPT_SET_META_CONTEXT) and returns its ID, or false when the server
// selected nothing or refused (NBD_REP_ERR_*).
func optSetBaseAllocation(rw io.ReadWriter, name string) (uint32, bool, error) {
	data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	data = append(data, name...)
	data = binary.BigEndian.AppendUint32(data, 1)
	data = binary.BigEndian.AppendUint32(data, uint32(len(baseAllocation)))
	data = append(data, baseAllocation...)
	if _, err := rw.Write(appendOption(nil, optSetMetaContext, data)); err != nil {
		return 0, false, fmt.Errorf("nbd: sending NBD_OPT_SET_META_CONTEXT: %w", err)
	}
	var id uint32
	found := false
	var body []byte
	for range maxGoReplies {
		typ, b, err := readOptReply(rw, optSetMetaContext, body)
		if err != nil {
			return 0, false, err
		}
		body = b
		switch {
		case typ == repAck && len(b) == 0:
			return id, found, nil
		case typ == repMetaContext && len(b) >= 4:
			if string(b[4:]) == baseAllocation {
				id, found = binary.BigEndian.Uint32(b), true
			}
		case typ&(1<<31) != 0:
			return 0, false, nil
		default:
			return 0, false, fmt.Errorf("%w: reply type %d with %d bytes to NBD_OPT_SET_META_CONTEXT", ErrProtocol, typ, len(b))
		}
	}
	return 0, false, fmt.Errorf("%w: more than %d replies to NBD_OPT_SET_META_CONTEXT", ErrProtocol, maxGoReplies)
}

// optExtendedHeadersRequest sends NBD_OPT_EXTENDED_HEADERS and reports
// whether the server agreed (NBD_REP_ACK); an error reply of any kind is
// a refusal.
func optExtendedHeadersRequest(rw io.ReadWriter) (bool, error) {
	if _, err := rw.Write(appendOption(nil, optExtendedHeaders, nil)); err != nil {
		return false, fmt.Errorf("nbd: sending NBD_OPT_EXTENDED_HEADERS: %w", err)
	}
	typ, b, err := readOptReply(rw, optExtendedHeaders, nil)
	switch {
	case err != nil:
		return false, err
	case typ == repAck && len(b) == 0:
		return true, nil
	case typ&(1<<31) != 0:
		return false, nil
	}
	return false, fmt.Errorf("%w: reply type %d with %d bytes to NBD_OPT_EXTENDED_HEADERS", ErrProtocol, typ, len(b))
}

// ErrTLSRefused wraps the errors of a handshake that asked for TLS and
// found that the server does not offer it.
var ErrTLSRefused = errors.New("nbd: the server does not offer TLS")

// optStartTLSRequest sends NBD_OPT_STARTTLS and reads its reply, which
// must be NBD_REP_ACK.
func optStartTLSRequest(rw io.ReadWriter) error {
	if _, err := rw.Write(appendOption(nil, optStartTLS, nil)); err != nil {
		return fmt.Errorf("nbd: sending NBD_OPT_STARTTLS: %w", err)
	}
	typ, b, err := readOptReply(rw, optStartTLS, nil)
	switch {
	case err != nil:
		return err
	case typ == repAck && len(b) == 0:
		return nil
	case typ == repAck:
		return fmt.Errorf("%w: NBD_REP_ACK with %d bytes of data", ErrProtocol, len(b))
	case typ&(1<<31) != 0:
		why := repErrName(typ)
		if m := printable(b); m != "" {
			why += " (" + m + ")"
		}
		return fmt.Errorf("%w: it refused NBD_OPT_STARTTLS with %s, and TLS is required", ErrTLSRefused, why)
	}
	return fmt.Errorf("%w: reply type %d to NBD_OPT_STARTTLS", ErrProtocol, typ)
}

// appendOption appends an option request: IHAVEOPT, the option, the
// length of data and data.
func appendOption(out []byte, opt uint32, data []byte) []byte {
	out = binary.BigEndian.AppendUint64(out, optMagic)
	out = binary.BigEndian.AppendUint32(out, opt)
	out = binary.BigEndian.AppendUint32(out, uint32(len(data)))
	return append(out, data...)
}

// optGoExport sends NBD_OPT_GO for name, asking for NBD_INFO_BLOCK_SIZE,
// and reads the replies up to NBD_REP_ACK.
func optGoExport(rw io.ReadWriter, name string) (ExportInfo, error) {
	data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	data = append(data, name...)
	data = binary.BigEndian.AppendUint16(data, 1)
	data = binary.BigEndian.AppendUint16(data, infoBlockSize)
	if _, err := rw.Write(appendOption(nil, optGo, data)); err != nil {
		return ExportInfo{}, fmt.Errorf("nbd: sending NBD_OPT_GO: %w", err)
	}
	info := ExportInfo{Name: name}
	var gotExport, gotBlock bool
	var body []byte
	for i := 0; i < maxGoReplies; i++ {
		typ, b, err := readOptReply(rw, optGo, body)
		if err != nil {
			return ExportInfo{}, err
		}
		body = b
		switch {
		case typ == repAck:
			if len(b) != 0 {
				return ExportInfo{}, fmt.Errorf("%w: NBD_REP_ACK with %d bytes of data", ErrProtocol, len(b))
			}
			if !gotExport {
				return ExportInfo{}, fmt.Errorf("%w: NBD_OPT_GO acknowledged without NBD_INFO_EXPORT", ErrProtocol)
			}
			if !gotBlock {
				info.MinBlock, info.PreferredBlock, info.MaxPayload = 1, preferredBlockSize, MaxPayload
			}
			return info, nil
		case typ == repInfo:
			err := parseInfoReply(&info, b, &gotExport, &gotBlock)
			if err != nil {
				return ExportInfo{}, err
			}
		case typ == repErrUnsup:
			return ExportInfo{}, errGoUnsupported
		case typ&(1<<31) != 0:
			return ExportInfo{}, optError(name, typ, b)
		default:
			return ExportInfo{}, fmt.Errorf("%w: reply type %d to NBD_OPT_GO", ErrProtocol, typ)
		}
	}
	return ExportInfo{}, fmt.Errorf("%w: more than %d replies to NBD_OPT_GO", ErrProtocol, maxGoReplies)
}

// readOptReply reads one option reply to opt into buf (grown as needed)
// and returns its type and data.
func readOptReply(r io.Reader, opt uint32, buf []byte) (uint32, []byte, error) {
	var h [optReplyHeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, fmt.Errorf("nbd: reading the reply to %s: %w", optionName(opt), err)
	}
	if m := binary.BigEndian.Uint64(h[0:8]); m != optReplyMagic {
		return 0, nil, fmt.Errorf("%w: bad option reply magic %#x", ErrProtocol, m)
	}
	if o := binary.BigEndian.Uint32(h[8:12]); o != opt {
		return 0, nil, fmt.Errorf("%w: a reply to %s where %s was asked", ErrProtocol, optionName(o), optionName(opt))
	}
	typ := binary.BigEndian.Uint32(h[12:16])
	n := binary.BigEndian.Uint32(h[16:20])
	if n > maxOptReplyData {
		return 0, nil, fmt.Errorf("%w: a reply to %s with %d bytes of data (at most %d)", ErrProtocol, optionName(opt), n, maxOptReplyData)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, fmt.Errorf("nbd: reading the reply to %s: %w", optionName(opt), err)
	}
	return typ, buf, nil
}

// parseInfoReply records one NBD_REP_INFO in info. Unknown information
// types are ignored, as the protocol asks.
func parseInfoReply(info *ExportInfo, b []byte, gotExport, gotBlock *bool) error {
	if len(b) < 2 {
		return fmt.Errorf("%w: NBD_REP_INFO of %d bytes", ErrProtocol, len(b))
	}
	switch t := binary.BigEndian.Uint16(b[0:2]); t {
	case infoExport:
		if len(b) != 12 {
			return fmt.Errorf("%w: NBD_INFO_EXPORT of %d bytes, want 12", ErrProtocol, len(b))
		}
		size := binary.BigEndian.Uint64(b[2:10])
		if size > math.MaxInt64 {
			return fmt.Errorf("%w: export size %d is over 2^63-1", ErrProtocol, size)
		}
		info.Size = int64(size)
		info.Flags = exportFlags(binary.BigEndian.Uint16(b[10:12]))
		*gotExport = true
	case infoBlockSize:
		if len(b) != 14 {
			return fmt.Errorf("%w: NBD_INFO_BLOCK_SIZE of %d bytes, want 14", ErrProtocol, len(b))
		}
		lo, pref, hi := binary.BigEndian.Uint32(b[2:6]), binary.BigEndian.Uint32(b[6:10]), binary.BigEndian.Uint32(b[10:14])
		if err := checkBlockSizes(lo, pref, hi); err != nil {
			return err
		}
		info.MinBlock, info.PreferredBlock = lo, pref
		info.MaxPayload = min(hi, MaxPayload) / lo * lo
		*gotBlock = true
	case infoDescription:
		info.Description = string(b[2:])
	}
	return nil
}

// checkBlockSizes enforces the protocol's rules on NBD_INFO_BLOCK_SIZE:
// the minimum a power of two up to 64 KiB, the preferred a power of two
// at least the minimum, the maximum at least the preferred and a multiple
// of the minimum (or 0xffffffff).
func checkBlockSizes(lo, pref, hi uint32) error {
	switch {
	case lo == 0 || bits.OnesCount32(lo) != 1 || lo > 64<<10:
		return fmt.Errorf("%w: minimum block size %d is not a power of two up to 64 KiB", ErrProtocol, lo)
	case bits.OnesCount32(pref) != 1 || pref < lo:
		return fmt.Errorf("%w: preferred block size %d is not a power of two of at least the minimum %d", ErrProtocol, pref, lo)
	case hi < pref || hi != math.MaxUint32 && hi%lo != 0:
		return fmt.Errorf("%w: maximum payload %d is below the preferred block size %d or not a multiple of the minimum %d", ErrProtocol, hi, pref, lo)
	}
	return nil
}

// exportFlags returns the transmission flags a server sent, or 0 when it
// did not set FlagHasFlags (the other bits then mean nothing).
func exportFlags(f uint16) uint16 {
	if f&FlagHasFlags == 0 {
		return 0
	}
	return f
}

// optError turns an error reply to NBD_OPT_GO into one line, with the
// server's message when it sent one.
func optError(name string, typ uint32, msg []byte) error {
	s := fmt.Sprintf("nbd: the server refused export %q: %s", name, repErrName(typ))
	if m := printable(msg); m != "" {
		s += ": " + m
	}
	return &OptionError{Type: typ, msg: s}
}

// repErrName names an NBD_REP_ERR_* value, with a hint where one helps.
func repErrName(typ uint32) string {
	what := map[uint32]string{
		repErrUnsup: "NBD_REP_ERR_UNSUP", repErrPolicy: "NBD_REP_ERR_POLICY", repErrInvalid: "NBD_REP_ERR_INVALID",
		1<<31 + 4: "NBD_REP_ERR_PLATFORM", repErrTLSReqd: "NBD_REP_ERR_TLS_REQD (the server requires TLS: use nbds://)",
		repErrUnknown: "NBD_REP_ERR_UNKNOWN (no such export)", 1<<31 + 7: "NBD_REP_ERR_SHUTDOWN",
		repErrBlockSizeReqd: "NBD_REP_ERR_BLOCK_SIZE_REQD", repErrTooBig: "NBD_REP_ERR_TOO_BIG",
	}[typ]
	if what == "" {
		what = fmt.Sprintf("error %#x", typ)
	}
	return what
}

// OptionError is a server's refusal of the export in the handshake.
type OptionError struct {
	// Type is the NBD_REP_ERR_* value.
	Type uint32
	msg  string
}

func (e *OptionError) Error() string { return e.msg }

// printable returns msg with control characters replaced, at most 200
// bytes of it: a server's message goes into logs and terminals.
func printable(msg []byte) string {
	if len(msg) > 200 {
		msg = msg[:200]
	}
	out := make([]rune, 0, len(msg))
	for _, r := range string(msg) {
		if r < 0x20 || r == 0x7f {
			r = '?'
		}
		out = append(out, r)
	}
	return string(out)
}

// optExportNameExport sends NBD_OPT_EXPORT_NAME for name and reads the
// size and flags; a server without the export closes the connection.
func optExportNameExport(rw io.ReadWriter, name string, noZeroes bool) (ExportInfo, error) {
	if _, err := rw.Write(appendOption(nil, optExportName, []byte(name))); err != nil {
		return ExportInfo{}, fmt.Errorf("nbd: sending NBD_OPT_EXPORT_NAME: %w", err)
	}
	n := 10
	if !noZeroes {
		n += exportNameZeroes
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(rw, b); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return ExportInfo{}, fmt.Errorf("nbd: the server closed the connection at NBD_OPT_EXPORT_NAME (no export %q?)", name)
		}
		return ExportInfo{}, fmt.Errorf("nbd: reading the reply to NBD_OPT_EXPORT_NAME: %w", err)
	}
	size := binary.BigEndian.Uint64(b[0:8])
	if size > math.MaxInt64 {
		return ExportInfo{}, fmt.Errorf("%w: export size %d is over 2^63-1", ErrProtocol, size)
	}
	return ExportInfo{
		Name: name, Size: int64(size), Flags: exportFlags(binary.BigEndian.Uint16(b[8:10])),
		MinBlock: 1, PreferredBlock: preferredBlockSize, MaxPayload: MaxPayload, OldStyle: true,
	}, nil
}
