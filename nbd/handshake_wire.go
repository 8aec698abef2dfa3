package nbd

import (
	"encoding/binary"
	"strconv"
)

// Magic numbers, flags and codes of the fixed newstyle handshake (NBD
// protocol doc/proto.md, "Handshake" and "Values").
const (
	nbdMagic      = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic      = 0x49484156454f5054 // "IHAVEOPT"
	optReplyMagic = 0x0003e889045565a9

	// Handshake flags (server) and client flags.
	handshakeFixedNewstyle = 1 << 0 // NBD_FLAG_FIXED_NEWSTYLE
	handshakeNoZeroes      = 1 << 1 // NBD_FLAG_NO_ZEROES
	clientFixedNewstyle    = 1 << 0 // NBD_FLAG_C_FIXED_NEWSTYLE
	clientNoZeroes         = 1 << 1 // NBD_FLAG_C_NO_ZEROES

	// Options.
	optExportName      = 1  // NBD_OPT_EXPORT_NAME
	optAbort           = 2  // NBD_OPT_ABORT
	optList            = 3  // NBD_OPT_LIST
	optStartTLS        = 5  // NBD_OPT_STARTTLS
	optInfo            = 6  // NBD_OPT_INFO
	optGo              = 7  // NBD_OPT_GO
	optStructuredReply = 8  // NBD_OPT_STRUCTURED_REPLY
	optListMetaContext = 9  // NBD_OPT_LIST_META_CONTEXT
	optSetMetaContext  = 10 // NBD_OPT_SET_META_CONTEXT
	optExtendedHeaders = 11 // NBD_OPT_EXTENDED_HEADERS

	// Option reply types; errors have bit 31 set.
	repAck         = 1         // NBD_REP_ACK
	repServer      = 2         // NBD_REP_SERVER
	repInfo        = 3         // NBD_REP_INFO
	repMetaContext = 4         // NBD_REP_META_CONTEXT
	repErrUnsup    = 1<<31 + 1 // NBD_REP_ERR_UNSUP
	repErrInvalid  = 1<<31 + 3 // NBD_REP_ERR_INVALID
	repErrUnknown  = 1<<31 + 6 // NBD_REP_ERR_UNKNOWN
	repErrTooBig   = 1<<31 + 9 // NBD_REP_ERR_TOO_BIG

	// Information types of NBD_OPT_INFO and NBD_OPT_GO.
	infoExport      = 0 // NBD_INFO_EXPORT
	infoName        = 1 // NBD_INFO_NAME
	infoDescription = 2 // NBD_INFO_DESCRIPTION
	infoBlockSize   = 3 // NBD_INFO_BLOCK_SIZE

	// optHeaderSize is a client's option header: magic, option, length.
	optHeaderSize = 16
	// optReplyHeaderSize is an option reply header: magic, option, type,
	// length.
	optReplyHeaderSize = 20
	// exportNameZeroes is the reserved padding after the reply to
	// NBD_OPT_EXPORT_NAME, unless both sides agreed to NO_ZEROES.
	exportNameZeroes = 124
)

// Preferred block size advertised in NBD_INFO_BLOCK_SIZE (at least the
// minimum): the page size, which every source handles without
// read-modify-write.
const preferredBlockSize = 4096

// greeting is what the server sends first: NBDMAGIC, IHAVEOPT and the
// handshake flags.
func greeting() [18]byte {
	var b [18]byte
	binary.BigEndian.PutUint64(b[0:8], nbdMagic)
	binary.BigEndian.PutUint64(b[8:16], optMagic)
	binary.BigEndian.PutUint16(b[16:18], handshakeFixedNewstyle|handshakeNoZeroes)
	return b
}

// appendOptReply appends one option reply whose data is the concatenation
// of parts.
func appendOptReply(out []byte, opt, typ uint32, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out = binary.BigEndian.AppendUint64(out, optReplyMagic)
	out = binary.BigEndian.AppendUint32(out, opt)
	out = binary.BigEndian.AppendUint32(out, typ)
	out = binary.BigEndian.AppendUint32(out, uint32(n))
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// appendOptError appends an error reply whose data is a message for the
// user, as the protocol allows.
func appendOptError(out []byte, opt, typ uint32, msg string) []byte {
	return appendOptReply(out, opt, typ, []byte(msg))
}

// appendInfoExport appends NBD_REP_INFO with NBD_INFO_EXPORT: the size and
// the transmission flags.
func appendInfoExport(out []byte, opt uint32, size uint64, flags uint16) []byte {
	var b [12]byte
	binary.BigEndian.PutUint16(b[0:2], infoExport)
	binary.BigEndian.PutUint64(b[2:10], size)
	binary.BigEndian.PutUint16(b[10:12], flags)
	return appendOptReply(out, opt, repInfo, b[:])
}

// appendInfoString appends NBD_REP_INFO with a string information type
// (NBD_INFO_NAME, NBD_INFO_DESCRIPTION).
func appendInfoString(out []byte, opt uint32, typ uint16, s string) []byte {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], typ)
	return appendOptReply(out, opt, repInfo, b[:], []byte(s))
}

// appendInfoBlockSize appends NBD_REP_INFO with NBD_INFO_BLOCK_SIZE.
func appendInfoBlockSize(out []byte, opt uint32, minimum, preferred, maximum uint32) []byte {
	var b [14]byte
	binary.BigEndian.PutUint16(b[0:2], infoBlockSize)
	binary.BigEndian.PutUint32(b[2:6], minimum)
	binary.BigEndian.PutUint32(b[6:10], preferred)
	binary.BigEndian.PutUint32(b[10:14], maximum)
	return appendOptReply(out, opt, repInfo, b[:])
}

// appendServer appends NBD_REP_SERVER for NBD_OPT_LIST: the name, then the
// description.
func appendServer(out []byte, name, desc string) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(len(name)))
	return appendOptReply(out, optList, repServer, b[:], []byte(name), []byte(desc))
}

// infoRequest is the data of NBD_OPT_INFO and NBD_OPT_GO: an export name
// and the information types asked for.
type infoRequest struct {
	name  string
	infos []uint16
}

// parseInfoRequest decodes the data of NBD_OPT_INFO or NBD_OPT_GO:
// 32-bit name length, name, 16-bit count, that many 16-bit information
// types, and nothing after. It reports false for data that does not add
// up.
func parseInfoRequest(b []byte) (infoRequest, bool) {
	if len(b) < 6 {
		return infoRequest{}, false
	}
	n := binary.BigEndian.Uint32(b[0:4])
	if uint64(n) > uint64(len(b)-6) {
		return infoRequest{}, false
	}
	r := infoRequest{name: string(b[4 : 4+n])}
	rest := b[4+n:]
	count := int(binary.BigEndian.Uint16(rest[0:2]))
	rest = rest[2:]
	if len(rest) != 2*count {
		return infoRequest{}, false
	}
	r.infos = make([]uint16, count)
	for i := range r.infos {
		r.infos[i] = binary.BigEndian.Uint16(rest[2*i:])
	}
	return r, true
}

// optionName names an option for log lines.
func optionName(opt uint32) string {
	switch opt {
	case optExportName:
		return "NBD_OPT_EXPORT_NAME"
	case optAbort:
		return "NBD_OPT_ABORT"
	case optList:
		return "NBD_OPT_LIST"
	case optStartTLS:
		return "NBD_OPT_STARTTLS"
	case optInfo:
		return "NBD_OPT_INFO"
	case optGo:
		return "NBD_OPT_GO"
	case optStructuredReply:
		return "NBD_OPT_STRUCTURED_REPLY"
	case optListMetaContext:
		return "NBD_OPT_LIST_META_CONTEXT"
	case optSetMetaContext:
		return "NBD_OPT_SET_META_CONTEXT"
	case optExtendedHeaders:
		return "NBD_OPT_EXTENDED_HEADERS"
	}
	return "option " + strconv.FormatUint(uint64(opt), 10)
}

// appendMetaContext appends NBD_REP_META_CONTEXT: the context's ID, then
// its name.
func appendMetaContext(out []byte, opt, id uint32, name string) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], id)
	return appendOptReply(out, opt, repMetaContext, b[:], []byte(name))
}

// metaRequest is the data of NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT: an export name and the queries.
type metaRequest struct {
	name    string
	queries []string
}

// parseMetaRequest decodes the data of NBD_OPT_LIST_META_CONTEXT or
// NBD_OPT_SET_META_CONTEXT: 32-bit name length, name, 32-bit query
// count, then each query as a 32-bit length and the string, and nothing
// after. It reports false for data that does not add up and for strings
// over MaxNameLength.
func parseMetaRequest(b []byte) (metaRequest, bool) {
	str := func() (string, bool) {
		if len(b) < 4 {
			return "", false
		}
		n := binary.BigEndian.Uint32(b)
		if n > MaxNameLength || uint64(n) > uint64(len(b)-4) {
			return "", false
		}
		s := string(b[4 : 4+n])
		b = b[4+n:]
		return s, true
	}
	name, ok := str()
	if !ok || len(b) < 4 {
		return metaRequest{}, false
	}
	count := binary.BigEndian.Uint32(b)
	b = b[4:]
	// Each query takes at least 4 bytes: a count past that cannot add
	// up, and is not allocated for.
	if uint64(count) > uint64(len(b)/4) {
		return metaRequest{}, false
	}
	r := metaRequest{name: name, queries: make([]string, 0, count)}
	for range count {
		q, ok := str()
		if !ok {
			return metaRequest{}, false
		}
		r.queries = append(r.queries, q)
	}
	return r, len(b) == 0
}
