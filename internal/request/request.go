package request

import (
	"strconv"
	"time"
)

// Op is a kind of request: the NBD command number (NBD_CMD_READ, ...), as
// on the wire.
type Op uint16

// The NBD commands. The Linux driver never sends CACHE; DISC reaches no
// Source and is never observed.
const (
	OpRead  Op = 0 // NBD_CMD_READ
	OpWrite Op = 1 // NBD_CMD_WRITE
	OpDisc  Op = 2 // NBD_CMD_DISC
	OpFlush Op = 3 // NBD_CMD_FLUSH
	OpTrim  Op = 4 // NBD_CMD_TRIM
	OpCache Op = 5 // NBD_CMD_CACHE
	OpZero  Op = 6 // NBD_CMD_WRITE_ZEROES
	// OpBlockStatus asks which ranges are holes or zeros; network
	// clients send it, the Linux driver never does, and it reaches a
	// Source only through sources.Extents.
	OpBlockStatus Op = 7 // NBD_CMD_BLOCK_STATUS
)

// Ops returns the kinds of request a Source serves (read, write, flush,
// trim, zero), in the order help texts, statistics and logs list them.
func Ops() [5]Op { return [5]Op{OpRead, OpWrite, OpFlush, OpTrim, OpZero} }

// Served reports whether o is one of Ops.
func (o Op) Served() bool {
	switch o {
	case OpRead, OpWrite, OpFlush, OpTrim, OpZero:
		return true
	}
	return false
}

// String returns read, write, flush, trim or zero for the kinds a Source
// serves, and cmdN (N the command number) for any other, DISC and CACHE
// included. These are the names of the log filter's op field and of the
// filter specs.
func (o Op) String() string {
	switch o {
	case OpRead:
		return "read"
	case OpWrite:
		return "write"
	case OpFlush:
		return "flush"
	case OpTrim:
		return "trim"
	case OpZero:
		return "zero"
	}
	return "cmd" + strconv.FormatUint(uint64(o), 10)
}

// AppendText appends o.String() to b without allocating (beyond growing
// b). It implements encoding.TextAppender; the error is always nil.
func (o Op) AppendText(b []byte) ([]byte, error) {
	if o.Served() {
		return append(b, o.String()...), nil
	}
	return strconv.AppendUint(append(b, "cmd"...), uint64(o), 10), nil
}

// ParseOp returns the Op whose String is name, for the kinds of request a
// Source serves (read, write, flush, trim, zero); ok is false for any
// other name, cmdN included.
func ParseOp(name string) (op Op, ok bool) {
	for _, o := range Ops() {
		if o.String() == name {
			return o, true
		}
	}
	return 0, false
}

// Flags are the NBD command flags of a request (the high 16 bits of the
// type word on the wire).
type Flags uint16

// The command flags. The Linux driver sends FUA and NO_HOLE; network
// clients may send the others.
const (
	FlagFUA    Flags = 1 << 0 // NBD_CMD_FLAG_FUA
	FlagNoHole Flags = 1 << 1 // NBD_CMD_FLAG_NO_HOLE
	// FlagDF (READ) asks for the data in one chunk of a structured
	// reply; FlagReqOne (BLOCK_STATUS) asks for one extent.
	FlagDF     Flags = 1 << 2 // NBD_CMD_FLAG_DF
	FlagReqOne Flags = 1 << 3 // NBD_CMD_FLAG_REQ_ONE
	// FlagPayloadLen says that a request's length is that of a payload
	// following its header, not of the range it acts on; only clients
	// that negotiated extended headers send it (WRITE always).
	FlagPayloadLen Flags = 1 << 5 // NBD_CMD_FLAG_PAYLOAD_LEN
)

// KnownFlags is the set of flags that have names.
const KnownFlags = FlagFUA | FlagNoHole

// String returns the names of the flags set, joined by commas: "",
// "fua", "nohole" or "fua,nohole", followed by the other bits in hex
// ("fua,0x8") when there are any.
func (f Flags) String() string {
	b, _ := f.AppendText(nil)
	return string(b)
}

// AppendText appends f.String() to b without allocating (beyond growing
// b). It implements encoding.TextAppender; the error is always nil.
func (f Flags) AppendText(b []byte) ([]byte, error) {
	start := len(b)
	if f&FlagFUA != 0 {
		b = append(b, "fua"...)
	}
	if f&FlagNoHole != 0 {
		if len(b) > start {
			b = append(b, ',')
		}
		b = append(b, "nohole"...)
	}
	if other := f &^ KnownFlags; other != 0 {
		if len(b) > start {
			b = append(b, ',')
		}
		b = strconv.AppendUint(append(b, "0x"...), uint64(other), 16)
	}
	return b, nil
}

// Request is one request as the NBD server served it: what it passes to
// its observer after queueing the reply, and what the log and stats
// filters record. It holds no pointers into the server (Start's location
// aside), so it is passed by value without allocating.
type Request struct {
	Conn    int // the connection it came on, 0..N-1
	Op      Op
	Flags   Flags
	Offset  uint64        // as sent: 0 for a flush
	Length  uint64        // as sent (64 bits with extended headers): 0 for a flush
	Start   time.Time     // when the server had read the request header
	Latency time.Duration // from Start until the reply was queued, waiting for a worker included
	Error   uint32        // the NBD error replied (Linux errno values); 0 is success
}
