package ublk

import (
	"encoding/binary"
	"unsafe"
)

// Control command numbers (include/uapi/linux/ublk_cmd.h), sent
// ioctl-encoded: _IOR or _IOWR('u', nr, struct ublksrv_ctrl_cmd).
const (
	cmdGetDevInfo        = 0x02
	cmdAddDev            = 0x04
	cmdDelDev            = 0x05
	cmdStartDev          = 0x06
	cmdStopDev           = 0x07
	cmdSetParams         = 0x08
	cmdStartUserRecovery = 0x10
	cmdEndUserRecovery   = 0x11
	cmdGetFeatures       = 0x13 // Linux 6.5+

	ioFetchReq       = 0x20
	ioCommitAndFetch = 0x21
)

// Request operations and flags of ublksrv_io_desc.op_flags.
const (
	opRead        = 0
	opWrite       = 1
	opFlush       = 2
	opDiscard     = 3
	opWriteSame   = 4
	opWriteZeroes = 5

	ioFlagFUA     = 1 << 13
	ioFlagNoUnmap = 1 << 15
)

// Device flags (ublksrv_ctrl_dev_info.flags), parameter types and
// attributes.
const (
	flagUserRecovery        = 1 << 3
	flagUserRecoveryReissue = 1 << 4
	// flagUserCopy: the server copies each request's data itself, with
	// pread and pwrite on /dev/ublkcN at userCopyPos (Linux 6.5+).
	flagUserCopy = 1 << 7

	paramTypeBasic   = 1 << 0
	paramTypeDiscard = 1 << 1

	attrReadOnly      = 1 << 0
	attrRotational    = 1 << 1
	attrVolatileCache = 1 << 2
	attrFUA           = 1 << 3
)

const (
	// resAbort is the fetch result of a queue being torn down (-ENODEV).
	resAbort = -19
	// maxQueueDepth spaces the queues' descriptor areas in /dev/ublkcN.
	maxQueueDepth = 4096
	// devIDAny asks ADD_DEV for the first free device number.
	devIDAny = ^uint32(0)
	// maxDevices bounds the device numbers (UBLK_MAX_UBLKS: the minors
	// of a char device).
	maxDevices = 1 << 20
)

// userCopyPos is the /dev/ublkcN offset of byte off of the request that
// queue q's tag holds, for pread (a write's data) and pwrite (a read's)
// under flagUserCopy: UBLKSRV_IO_BUF_OFFSET, then 25 bits of offset, 16 of
// tag and the queue above.
func userCopyPos(q, tag uint16, off int64) int64 {
	return 0x80000000 + int64(q)<<41 + int64(tag)<<25 + off
}

// ioc encodes an ioctl number: dir 2 (read) or 3 (read and write), type 'u'.
func ioc(dir, nr, size uint32) uint32 {
	return dir<<30 | size<<16 | 'u'<<8 | nr
}

// ctrlOp is the ioctl-encoded number of control command nr.
func ctrlOp(nr uint32) uint32 {
	dir := uint32(3)
	if nr == cmdGetDevInfo || nr == cmdGetFeatures {
		dir = 2
	}
	return ioc(dir, nr, ctrlCmdSize)
}

// ioOp is the ioctl-encoded number of queue command nr.
func ioOp(nr uint32) uint32 { return ioc(3, nr, ioCmdSize) }

// ctrlCmd is struct ublksrv_ctrl_cmd.
type ctrlCmd struct {
	devID   uint32
	queueID uint16
	len     uint16
	addr    uint64
	data    uint64
}

const ctrlCmdSize = 32

// encode writes the command into the first 32 bytes of b.
func (c ctrlCmd) encode(b []byte) {
	_ = b[ctrlCmdSize-1]
	binary.LittleEndian.PutUint32(b[0:], c.devID)
	binary.LittleEndian.PutUint16(b[4:], c.queueID)
	binary.LittleEndian.PutUint16(b[6:], c.len)
	binary.LittleEndian.PutUint64(b[8:], c.addr)
	binary.LittleEndian.PutUint64(b[16:], c.data)
	clear(b[24:ctrlCmdSize]) // dev_path_len, pad, reserved
}

// ioCmd is struct ublksrv_io_cmd.
type ioCmd struct {
	queueID uint16
	tag     uint16
	result  int32
	addr    uint64
}

const ioCmdSize = 16

// encode writes the command into the first 16 bytes of b.
func (c ioCmd) encode(b []byte) {
	_ = b[ioCmdSize-1]
	binary.LittleEndian.PutUint16(b[0:], c.queueID)
	binary.LittleEndian.PutUint16(b[2:], c.tag)
	binary.LittleEndian.PutUint32(b[4:], uint32(c.result))
	binary.LittleEndian.PutUint64(b[8:], c.addr)
}

// devInfo is struct ublksrv_ctrl_dev_info, passed by address.
type devInfo struct {
	nrHWQueues   uint16
	queueDepth   uint16
	state        uint16
	pad0         uint16
	maxIOBuf     uint32
	devID        uint32
	ublksrvPID   int32
	pad1         uint32
	flags        uint64
	ublksrvFlags uint64
	ownerUID     uint32
	ownerGID     uint32
	reserved     [2]uint64
}

// paramBasic is struct ublk_param_basic.
type paramBasic struct {
	attrs           uint32
	logicalBSShift  uint8
	physicalBSShift uint8
	ioOptShift      uint8
	ioMinShift      uint8
	maxSectors      uint32
	chunkSectors    uint32
	devSectors      uint64
	virtBoundary    uint64
}

// paramDiscard is struct ublk_param_discard.
type paramDiscard struct {
	alignment         uint32
	granularity       uint32
	maxDiscardSectors uint32
	maxZeroesSectors  uint32
	maxSegments       uint16
	reserved          uint16
}

// params is the head of struct ublk_params: the basic and discard
// parameters, which is all SET_PARAMS is given (its len says so).
type params struct {
	len     uint32
	types   uint32
	basic   paramBasic
	discard paramDiscard
}

// paramsLen is the size of the C struct's part that params covers (Go
// pads params to 64).
const paramsLen = uint32(unsafe.Offsetof(params{}.discard) + unsafe.Sizeof(paramDiscard{}))

// ioDesc is struct ublksrv_io_desc, read where the kernel maps it.
type ioDesc struct {
	opFlags     uint32
	nrSectors   uint32
	startSector uint64
	addr        uint64
}

func (d *ioDesc) op() uint32    { return d.opFlags & 0xff }
func (d *ioDesc) flags() uint32 { return d.opFlags &^ 0xff }
