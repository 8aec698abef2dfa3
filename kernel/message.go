package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"syscall"
	"time"
)

// Generic netlink commands of the "nbd" family (include/uapi/linux/nbd-netlink.h).
const (
	cmdConnect     = 1 // NBD_CMD_CONNECT
	cmdDisconnect  = 2 // NBD_CMD_DISCONNECT
	cmdReconfigure = 3 // NBD_CMD_RECONFIGURE
	cmdLinkDead    = 4 // NBD_CMD_LINK_DEAD
	cmdStatus      = 5 // NBD_CMD_STATUS
)

// familyVersion is the "nbd" family's version, sent in every genlmsghdr.
const familyVersion = 1

// Top-level attributes.
const (
	attrIndex             = 1  // NBD_ATTR_INDEX, u32
	attrSizeBytes         = 2  // NBD_ATTR_SIZE_BYTES, u64
	attrBlockSizeBytes    = 3  // NBD_ATTR_BLOCK_SIZE_BYTES, u64
	attrTimeout           = 4  // NBD_ATTR_TIMEOUT, u64 seconds
	attrServerFlags       = 5  // NBD_ATTR_SERVER_FLAGS, u64
	attrClientFlags       = 6  // NBD_ATTR_CLIENT_FLAGS, u64
	attrSockets           = 7  // NBD_ATTR_SOCKETS, nested
	attrDeadConnTimeout   = 8  // NBD_ATTR_DEAD_CONN_TIMEOUT, u64 seconds
	attrDeviceList        = 9  // NBD_ATTR_DEVICE_LIST, nested
	attrBackendIdentifier = 10 // NBD_ATTR_BACKEND_IDENTIFIER, string
)

// Nested attributes.
const (
	sockItem = 1 // NBD_SOCK_ITEM, nested, inside NBD_ATTR_SOCKETS
	sockFD   = 1 // NBD_SOCK_FD, u32, inside NBD_SOCK_ITEM

	deviceItem      = 1 // NBD_DEVICE_ITEM, nested, inside NBD_ATTR_DEVICE_LIST
	deviceIndex     = 1 // NBD_DEVICE_INDEX, u32, inside NBD_DEVICE_ITEM
	deviceConnected = 2 // NBD_DEVICE_CONNECTED, u8, inside NBD_DEVICE_ITEM
)

// Netlink header values, spelled out here so the golden tests can name them.
const (
	nlmsgHdrLen = 16 // sizeof(struct nlmsghdr)
	genlHdrLen  = 4  // sizeof(struct genlmsghdr)
	attrHdrLen  = 4  // sizeof(struct nlattr)

	flagRequest = 0x1 // NLM_F_REQUEST
	flagAck     = 0x4 // NLM_F_ACK
	flagCapped  = 0x100
	flagAckTLVs = 0x200

	typeNoop    = 0x1 // NLMSG_NOOP
	typeError   = 0x2 // NLMSG_ERROR
	typeDone    = 0x3 // NLMSG_DONE
	typeOverrun = 0x4 // NLMSG_OVERRUN

	attrTypeMask = 0x3fff // strips NLA_F_NESTED and NLA_F_NET_BYTEORDER

	errAttrMsg = 1 // NLMSGERR_ATTR_MSG, the extended ACK's text
)

// serverFlagCanMultiConn is NBD_FLAG_CAN_MULTI_CONN. The kernel refuses more
// than one socket without it, with nothing but EINVAL and a dmesg line, so
// connectMessage checks it up front to give a readable error.
const serverFlagCanMultiConn = 1 << 8

// Client flags, NBD_ATTR_CLIENT_FLAGS.
const (
	// ClientDestroyOnDisconnect (NBD_CFLAG_DESTROY_ON_DISCONNECT) removes
	// /dev/nbdN once the device is disconnected and its last opener closes
	// it. The kernel keeps this bit on the device, not on the connection:
	// CLIENT_FLAGS without it clears a bit set earlier.
	ClientDestroyOnDisconnect = 1 << 0
	// ClientDisconnectOnClose (NBD_CFLAG_DISCONNECT_ON_CLOSE, kernel 4.19+)
	// disconnects the device when its last opener closes it. udev opens and
	// closes every new device, so set it with Reconfigure after opening the
	// device yourself rather than in Connect.
	ClientDisconnectOnClose = 1 << 1
)

// IndexAny as ConnectRequest.Index lets the kernel pick the device: the
// lowest-numbered unused one, or a new one if all are in use.
const IndexAny = -1

// ConnectRequest describes an NBD_CMD_CONNECT. Sockets are file descriptors of
// this process, stream sockets whose other end speaks the NBD transmission
// phase; the kernel takes its own reference on each, so the caller may close
// them once Connect returns.
type ConnectRequest struct {
	// Index is the device to configure, N of /dev/nbdN, or IndexAny. With an
	// explicit index the kernel creates the device if needed and fails with
	// EBUSY if something (udev, a leftover opener) holds it.
	Index int
	// Size is the device size in bytes (NBD_ATTR_SIZE_BYTES).
	Size uint64
	// BlockSize is the logical and physical block size (0: omit, the kernel
	// then uses 1024). A power of two, at least 512.
	BlockSize uint64
	// Timeout is the per-request timeout (NBD_ATTR_TIMEOUT), sent in whole
	// seconds, rounded up. Always sent: 0 means wait forever.
	Timeout time.Duration
	// DeadConnTimeout is how long I/O waits for Reconfigure to replace a
	// dead socket (NBD_ATTR_DEAD_CONN_TIMEOUT), whole seconds, rounded up.
	// Always sent: 0 fails I/O at once when the last socket dies.
	DeadConnTimeout time.Duration
	// ServerFlags are the NBD transmission flags (NBD_ATTR_SERVER_FLAGS).
	// More than one socket requires NBD_FLAG_CAN_MULTI_CONN (1<<8).
	ServerFlags uint64
	// ClientFlags are ClientDestroyOnDisconnect and ClientDisconnectOnClose
	// (NBD_ATTR_CLIENT_FLAGS). Always sent, so 0 clears a sticky
	// ClientDestroyOnDisconnect left on the device.
	ClientFlags uint64
	// BackendID is shown in /sys/block/nbdN/backend and must be repeated in
	// every Reconfigure (NBD_ATTR_BACKEND_IDENTIFIER, kernel 5.14+; "": omit).
	BackendID string
	// Sockets are the connections, one blk-mq hardware queue each.
	Sockets []int
}

// ReconfigureRequest describes an NBD_CMD_RECONFIGURE of a connected device.
// Zero and nil fields are left out, so the kernel keeps their current values.
type ReconfigureRequest struct {
	// Index is the device, N of /dev/nbdN.
	Index int
	// Size resizes the live device (NBD_ATTR_SIZE_BYTES); 0: unchanged.
	Size uint64
	// BlockSize changes the block size; 0: unchanged.
	BlockSize uint64
	// Timeout and DeadConnTimeout, if not nil, replace the values given at
	// connect time; whole seconds, rounded up.
	Timeout, DeadConnTimeout *time.Duration
	// ClientFlags, if not nil, sets or clears both client flags.
	ClientFlags *uint64
	// BackendID must equal the one given to Connect, if one was given.
	BackendID string
	// Sockets replace dead connections, one dead slot each. The kernel
	// silently drops a socket for which no slot is dead: Reconfigure cannot
	// add connections.
	Sockets []int
}

// message builds one generic netlink message in host byte order. Attributes
// are appended in the order the methods are called; nest patches the length
// of the attribute it opened once its children are written.
type message struct {
	b []byte
}

func newMessage(familyID uint16, flags uint16, cmd uint8) *message {
	b := make([]byte, nlmsgHdrLen+genlHdrLen, 256)
	// nlmsghdr: len (patched in bytes), type, flags, seq 0, pid 0.
	binary.NativeEndian.PutUint16(b[4:6], familyID)
	binary.NativeEndian.PutUint16(b[6:8], flags)
	// genlmsghdr: cmd, version, reserved.
	b[16] = cmd
	b[17] = familyVersion
	return &message{b: b}
}

func (m *message) attr(typ uint16, payload []byte) {
	var hdr [attrHdrLen]byte
	binary.NativeEndian.PutUint16(hdr[0:2], uint16(attrHdrLen+len(payload)))
	binary.NativeEndian.PutUint16(hdr[2:4], typ)
	m.b = append(m.b, hdr[:]...)
	m.b = append(m.b, payload...)
	m.pad()
}

func (m *message) pad() {
	for len(m.b)%4 != 0 {
		m.b = append(m.b, 0)
	}
}

func (m *message) u32(typ uint16, v uint32) {
	m.attr(typ, binary.NativeEndian.AppendUint32(nil, v))
}

func (m *message) u64(typ uint16, v uint64) {
	m.attr(typ, binary.NativeEndian.AppendUint64(nil, v))
}

// str appends a NUL-terminated string, as nla_put_string does.
func (m *message) str(typ uint16, s string) {
	m.attr(typ, append([]byte(s), 0))
}

func (m *message) nest(typ uint16, children func()) {
	start := len(m.b)
	m.attr(typ, nil)
	children()
	binary.NativeEndian.PutUint16(m.b[start:start+2], uint16(len(m.b)-start))
}

func (m *message) sockets(fds []int) {
	m.nest(attrSockets, func() {
		for _, fd := range fds {
			m.nest(sockItem, func() { m.u32(sockFD, uint32(fd)) })
		}
	})
}

func (m *message) bytes() []byte {
	binary.NativeEndian.PutUint32(m.b[0:4], uint32(len(m.b)))
	return m.b
}

// connectMessage returns the NBD_CMD_CONNECT request for req. It is sent
// without NLM_F_ACK because the kernel answers with a message of its own.
func connectMessage(familyID uint16, req ConnectRequest) ([]byte, error) {
	if req.Index < IndexAny || req.Index > math.MaxInt32 {
		return nil, fmt.Errorf("device index %d out of range", req.Index)
	}
	if req.Size > math.MaxInt64 {
		// The kernel stores the size in a loff_t and rejects negative ones.
		return nil, fmt.Errorf("size %d too large", req.Size)
	}
	if err := checkBlockSize(req.BlockSize); err != nil {
		return nil, err
	}
	timeout, err := seconds("timeout", req.Timeout)
	if err != nil {
		return nil, err
	}
	deadConn, err := seconds("dead connection timeout", req.DeadConnTimeout)
	if err != nil {
		return nil, err
	}
	if err := checkBackendID(req.BackendID); err != nil {
		return nil, err
	}
	if len(req.Sockets) == 0 {
		return nil, errors.New("no sockets")
	}
	if len(req.Sockets) > 1 && req.ServerFlags&serverFlagCanMultiConn == 0 {
		return nil, fmt.Errorf("%d sockets need server flag CAN_MULTI_CONN", len(req.Sockets))
	}
	if err := checkSockets(req.Sockets); err != nil {
		return nil, err
	}

	m := newMessage(familyID, flagRequest, cmdConnect)
	// IndexAny is expressed by leaving NBD_ATTR_INDEX out: kernels since
	// about 6.11 reject 0xffffffff as an illegal index.
	if req.Index != IndexAny {
		m.u32(attrIndex, uint32(req.Index))
	}
	m.u64(attrSizeBytes, req.Size)
	if req.BlockSize != 0 {
		m.u64(attrBlockSizeBytes, req.BlockSize)
	}
	m.u64(attrTimeout, timeout)
	m.u64(attrServerFlags, req.ServerFlags)
	m.u64(attrClientFlags, req.ClientFlags)
	m.sockets(req.Sockets)
	m.u64(attrDeadConnTimeout, deadConn)
	if req.BackendID != "" {
		m.str(attrBackendIdentifier, req.BackendID)
	}
	return m.bytes(), nil
}

// disconnectMessage returns the NBD_CMD_DISCONNECT request for device index.
// The kernel sends no reply message for it, so it asks for an ACK.
func disconnectMessage(familyID uint16, index int) ([]byte, error) {
	if err := checkIndex(index); err != nil {
		return nil, err
	}
	m := newMessage(familyID, flagRequest|flagAck, cmdDisconnect)
	m.u32(attrIndex, uint32(index))
	return m.bytes(), nil
}

// reconfigureMessage returns the NBD_CMD_RECONFIGURE request for req. Like
// DISCONNECT it has no reply message and asks for an ACK.
func reconfigureMessage(familyID uint16, req ReconfigureRequest) ([]byte, error) {
	if err := checkIndex(req.Index); err != nil {
		return nil, err
	}
	if req.Size > math.MaxInt64 {
		return nil, fmt.Errorf("size %d too large", req.Size)
	}
	if err := checkBlockSize(req.BlockSize); err != nil {
		return nil, err
	}
	var timeout, deadConn uint64
	var err error
	if req.Timeout != nil {
		if timeout, err = seconds("timeout", *req.Timeout); err != nil {
			return nil, err
		}
	}
	if req.DeadConnTimeout != nil {
		if deadConn, err = seconds("dead connection timeout", *req.DeadConnTimeout); err != nil {
			return nil, err
		}
	}
	if err := checkBackendID(req.BackendID); err != nil {
		return nil, err
	}
	if err := checkSockets(req.Sockets); err != nil {
		return nil, err
	}

	m := newMessage(familyID, flagRequest|flagAck, cmdReconfigure)
	m.u32(attrIndex, uint32(req.Index))
	if req.Size != 0 {
		m.u64(attrSizeBytes, req.Size)
	}
	if req.BlockSize != 0 {
		m.u64(attrBlockSizeBytes, req.BlockSize)
	}
	if req.Timeout != nil {
		m.u64(attrTimeout, timeout)
	}
	if req.ClientFlags != nil {
		m.u64(attrClientFlags, *req.ClientFlags)
	}
	if len(req.Sockets) > 0 {
		m.sockets(req.Sockets)
	}
	if req.DeadConnTimeout != nil {
		m.u64(attrDeadConnTimeout, deadConn)
	}
	if req.BackendID != "" {
		m.str(attrBackendIdentifier, req.BackendID)
	}
	return m.bytes(), nil
}

// statusMessage returns the NBD_CMD_STATUS request for device index, or for
// every device when index is -1.
func statusMessage(familyID uint16, index int) ([]byte, error) {
	if index != -1 {
		if err := checkIndex(index); err != nil {
			return nil, err
		}
	}
	m := newMessage(familyID, flagRequest, cmdStatus)
	if index != -1 {
		m.u32(attrIndex, uint32(index))
	}
	return m.bytes(), nil
}

func checkIndex(index int) error {
	if index < 0 || index > math.MaxInt32 {
		return fmt.Errorf("device index %d out of range", index)
	}
	return nil
}

func checkBlockSize(bs uint64) error {
	if bs != 0 && (bs < 512 || bs&(bs-1) != 0) {
		return fmt.Errorf("block size %d is not a power of two of at least 512", bs)
	}
	return nil
}

func checkBackendID(id string) error {
	// The kernel copies the attribute as a C string: a NUL would cut it
	// short and the identifier would never match again on Reconfigure.
	if strings.IndexByte(id, 0) >= 0 {
		return fmt.Errorf("backend identifier %q contains a NUL byte", id)
	}
	return nil
}

func checkSockets(fds []int) error {
	for _, fd := range fds {
		if fd < 0 || fd > math.MaxInt32 {
			return fmt.Errorf("invalid socket file descriptor %d", fd)
		}
	}
	return nil
}

// seconds converts d to the whole seconds the kernel takes, rounding up: a
// timeout of 0 means "wait forever" (or "fail at once"), so a sub-second
// value must not collapse to it.
func seconds(what string, d time.Duration) (uint64, error) {
	if d < 0 {
		return 0, fmt.Errorf("negative %s %v", what, d)
	}
	return uint64((d + time.Second - 1) / time.Second), nil
}

// setSeq stamps the sequence number into an encoded request.
func setSeq(msg []byte, seq uint32) {
	binary.NativeEndian.PutUint32(msg[8:12], seq)
}

// nlmsg is one netlink message split out of a datagram.
type nlmsg struct {
	typ     uint16
	flags   uint16
	seq     uint32
	pid     uint32
	payload []byte // after the nlmsghdr, without trailing padding
	raw     []byte // the whole message, header included
}

// splitMessages splits a datagram into its netlink messages.
func splitMessages(b []byte) ([]nlmsg, error) {
	var msgs []nlmsg
	for len(b) > 0 {
		if len(b) < nlmsgHdrLen {
			return nil, fmt.Errorf("truncated netlink header: %d bytes", len(b))
		}
		n := int(binary.NativeEndian.Uint32(b[0:4]))
		if n < nlmsgHdrLen || n > len(b) {
			return nil, fmt.Errorf("netlink message length %d out of range 16..%d", n, len(b))
		}
		msgs = append(msgs, nlmsg{
			typ:     binary.NativeEndian.Uint16(b[4:6]),
			flags:   binary.NativeEndian.Uint16(b[6:8]),
			seq:     binary.NativeEndian.Uint32(b[8:12]),
			pid:     binary.NativeEndian.Uint32(b[12:16]),
			payload: b[nlmsgHdrLen:n],
			raw:     b[:n],
		})
		b = b[min(align4(n), len(b)):]
	}
	return msgs, nil
}

// parseError decodes the payload of an NLMSG_ERROR: nil for an ACK, else the
// errno as a syscall.Errno, wrapped with the extended ACK text if the kernel
// gave one.
func parseError(m nlmsg) error {
	p := m.payload
	if len(p) < 4 {
		return fmt.Errorf("truncated netlink error message: %d bytes", len(p))
	}
	code := int32(binary.NativeEndian.Uint32(p[0:4]))
	if code == 0 {
		return nil
	}
	errno := syscall.Errno(-code)
	if m.flags&flagAckTLVs == 0 {
		return errno
	}
	// struct nlmsgerr is the errno and the request's header, followed by the
	// request's payload unless the ACK is capped, then the TLVs.
	rest := p[4:]
	if len(rest) < nlmsgHdrLen {
		return errno
	}
	skip := nlmsgHdrLen
	if m.flags&flagCapped == 0 {
		skip = align4(int(binary.NativeEndian.Uint32(rest[0:4])))
	}
	if skip > len(rest) {
		return errno
	}
	attrs, err := parseAttrs(rest[skip:])
	if err != nil {
		return errno
	}
	for _, a := range attrs {
		if a.typ == errAttrMsg {
			if text := strings.TrimRight(string(a.value), "\x00"); text != "" {
				return fmt.Errorf("%w (kernel: %s)", errno, text)
			}
		}
	}
	return errno
}

// attribute is one netlink attribute; typ has the flag bits masked off, so a
// nest is found whether or not the sender set NLA_F_NESTED.
type attribute struct {
	typ   uint16
	value []byte
}

// parseAttrs splits b into attributes, rejecting any whose length runs past
// the end.
func parseAttrs(b []byte) ([]attribute, error) {
	var attrs []attribute
	for len(b) > 0 {
		if len(b) < attrHdrLen {
			return nil, fmt.Errorf("truncated attribute header: %d bytes", len(b))
		}
		n := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) & attrTypeMask
		if n < attrHdrLen || n > len(b) {
			return nil, fmt.Errorf("attribute %d: length %d out of range 4..%d", typ, n, len(b))
		}
		attrs = append(attrs, attribute{typ: typ, value: b[attrHdrLen:n]})
		b = b[min(align4(n), len(b)):]
	}
	return attrs, nil
}

// genlPayload checks msg (a complete netlink message, header included) and
// returns its genl command and attribute bytes.
func genlPayload(msg []byte) (cmd uint8, attrs []byte, err error) {
	msgs, err := splitMessages(msg)
	if err != nil {
		return 0, nil, err
	}
	if len(msgs) != 1 {
		return 0, nil, fmt.Errorf("%d netlink messages, want 1", len(msgs))
	}
	p := msgs[0].payload
	if len(p) < genlHdrLen {
		return 0, nil, fmt.Errorf("truncated generic netlink header: %d bytes", len(p))
	}
	return p[0], p[genlHdrLen:], nil
}

// parseIndexReply returns NBD_ATTR_INDEX from a complete netlink message: the
// answer to CONNECT, or a LINK_DEAD event.
func parseIndexReply(msg []byte) (int, error) {
	_, b, err := genlPayload(msg)
	if err != nil {
		return 0, err
	}
	attrs, err := parseAttrs(b)
	if err != nil {
		return 0, err
	}
	for _, a := range attrs {
		if a.typ == attrIndex {
			return u32Value("NBD_ATTR_INDEX", a.value)
		}
	}
	return 0, errors.New("reply has no NBD_ATTR_INDEX")
}

// DeviceStatus is one device in the answer to Status.
type DeviceStatus struct {
	// Index is N of /dev/nbdN.
	Index int
	// Connected reports that the device has a configuration. The kernel
	// also counts a device that is merely open (udev, a mount, a leaked
	// fd) and one that was disconnected but still has openers, so to know
	// whether a server is attached, read Sysfs.PID.
	Connected bool
}

// parseStatusReply decodes the answer to STATUS, a complete netlink message
// carrying NBD_ATTR_DEVICE_LIST{NBD_DEVICE_ITEM{INDEX u32, CONNECTED u8}...}.
// A device list without items (the kernel's answer for an index that does
// not exist) gives an empty, non-nil slice.
func parseStatusReply(msg []byte) ([]DeviceStatus, error) {
	_, b, err := genlPayload(msg)
	if err != nil {
		return nil, err
	}
	attrs, err := parseAttrs(b)
	if err != nil {
		return nil, err
	}
	for _, a := range attrs {
		if a.typ != attrDeviceList {
			continue
		}
		items, err := parseAttrs(a.value)
		if err != nil {
			return nil, fmt.Errorf("NBD_ATTR_DEVICE_LIST: %w", err)
		}
		devs := make([]DeviceStatus, 0, len(items))
		for i, item := range items {
			if item.typ != deviceItem {
				continue
			}
			d, err := parseDeviceItem(item.value)
			if err != nil {
				return nil, fmt.Errorf("NBD_DEVICE_ITEM %d: %w", i, err)
			}
			devs = append(devs, d)
		}
		return devs, nil
	}
	return nil, errors.New("reply has no NBD_ATTR_DEVICE_LIST")
}

func parseDeviceItem(b []byte) (DeviceStatus, error) {
	attrs, err := parseAttrs(b)
	if err != nil {
		return DeviceStatus{}, err
	}
	var d DeviceStatus
	haveIndex := false
	for _, a := range attrs {
		switch a.typ {
		case deviceIndex:
			if d.Index, err = u32Value("NBD_DEVICE_INDEX", a.value); err != nil {
				return DeviceStatus{}, err
			}
			haveIndex = true
		case deviceConnected:
			if len(a.value) < 1 {
				return DeviceStatus{}, errors.New("NBD_DEVICE_CONNECTED: empty")
			}
			d.Connected = a.value[0] != 0
		}
	}
	if !haveIndex {
		return DeviceStatus{}, errors.New("no NBD_DEVICE_INDEX")
	}
	return d, nil
}

func u32Value(name string, b []byte) (int, error) {
	if len(b) < 4 {
		return 0, fmt.Errorf("%s: %d bytes, want 4", name, len(b))
	}
	return int(binary.NativeEndian.Uint32(b)), nil
}

func align4(n int) int {
	return (n + 3) &^ 3
}
