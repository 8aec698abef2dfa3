package kernel

import "encoding/binary"

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

// setSeq stamps the sequence number into an encoded request.
func setSeq(msg []byte, seq uint32) {
	binary.NativeEndian.PutUint32(msg[8:12], seq)
}
