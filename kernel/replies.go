package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"syscall"
)

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
