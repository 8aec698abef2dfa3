package ublk

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
	"unsafe"
)

// unhex decodes annotated hex: spaces and "|" separate fields.
func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.NewReplacer(" ", "", "|", "").Replace(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCommandNumbers checks the ioctl-encoded numbers against
// ublk_cmd.h's UBLK_U_CMD_* and UBLK_U_IO_* values.
func TestCommandNumbers(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uint32
	}{
		{"UBLK_U_CMD_GET_DEV_INFO", ctrlOp(cmdGetDevInfo), 0x80207502},
		{"UBLK_U_CMD_ADD_DEV", ctrlOp(cmdAddDev), 0xc0207504},
		{"UBLK_U_CMD_DEL_DEV", ctrlOp(cmdDelDev), 0xc0207505},
		{"UBLK_U_CMD_START_DEV", ctrlOp(cmdStartDev), 0xc0207506},
		{"UBLK_U_CMD_STOP_DEV", ctrlOp(cmdStopDev), 0xc0207507},
		{"UBLK_U_CMD_SET_PARAMS", ctrlOp(cmdSetParams), 0xc0207508},
		{"UBLK_U_CMD_START_USER_RECOVERY", ctrlOp(cmdStartUserRecovery), 0xc0207510},
		{"UBLK_U_CMD_END_USER_RECOVERY", ctrlOp(cmdEndUserRecovery), 0xc0207511},
		{"UBLK_U_IO_FETCH_REQ", ioOp(ioFetchReq), 0xc0107520},
		{"UBLK_U_IO_COMMIT_AND_FETCH_REQ", ioOp(ioCommitAndFetch), 0xc0107521},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}

// TestEncoding compares the commands' bytes with annotated golden bytes.
func TestEncoding(t *testing.T) {
	b := bytes.Repeat([]byte{0xee}, 40)
	ctrlCmd{devID: 3, queueID: 0xffff, len: 64, addr: 0x1122334455667788, data: 4242}.encode(b)
	want := unhex(t, "03000000 | ffff | 4000 | 8877665544332211 | 9210000000000000 | 0000 | 0000 | 00000000 | eeeeeeeeeeeeeeee")
	if !bytes.Equal(b, want) {
		t.Errorf("ctrl cmd:\n got %x\nwant %x", b, want)
	}
	b = bytes.Repeat([]byte{0xee}, 20)
	ioCmd{queueID: 1, tag: 127, result: -5, addr: 0x7f0000001000}.encode(b)
	want = unhex(t, "0100 | 7f00 | fbffffff | 00100000007f0000 | eeeeeeee")
	if !bytes.Equal(b, want) {
		t.Errorf("io cmd:\n got %x\nwant %x", b, want)
	}
}

// TestLayout checks the sizes and offsets of the structures the kernel
// reads and writes in place.
func TestLayout(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"ublksrv_ctrl_dev_info", unsafe.Sizeof(devInfo{}), 64},
		{"dev_info.flags", unsafe.Offsetof(devInfo{}.flags), 24},
		{"ublksrv_io_desc", unsafe.Sizeof(ioDesc{}), 24},
		{"ublk_param_basic", unsafe.Sizeof(paramBasic{}), 32},
		{"ublk_param_discard", unsafe.Sizeof(paramDiscard{}), 20},
		{"params.basic", unsafe.Offsetof(params{}.basic), 8},
		{"params.discard", unsafe.Offsetof(params{}.discard), 40},
		{"paramsLen", uintptr(paramsLen), 60},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

// TestUserCopyPos compares request positions with golden values of the
// uapi's encoding: UBLKSRV_IO_BUF_OFFSET + qid<<41 + tag<<25 + offset.
func TestUserCopyPos(t *testing.T) {
	for _, c := range []struct {
		q, tag uint16
		off    int64
		want   int64
	}{
		{0, 0, 0, 0x80000000},
		{1, 5, 0, 0x2008a000000},
		{3, 127, 4096, 0x6017e001000},
	} {
		if got := userCopyPos(c.q, c.tag, c.off); got != c.want {
			t.Errorf("userCopyPos(%d, %d, %d) = %#x, want %#x", c.q, c.tag, c.off, got, c.want)
		}
	}
}
