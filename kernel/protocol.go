package kernel

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

// align4 rounds n up to the 4-byte alignment of netlink messages and
// attributes (NLMSG_ALIGN, NLA_ALIGN).
func align4(n int) int {
	return (n + 3) &^ 3
}
