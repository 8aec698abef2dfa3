package kernel

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
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
