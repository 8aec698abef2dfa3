package kernel

import (
	"context"
	"encoding/binary"
	"errors"
	"syscall"
	"testing"
	"time"
)

// These tests drive the real socket code against the generic netlink
// controller ("nlctrl", family 0x10), which every Linux kernel has and which
// answers unprivileged callers, so the send/receive path is exercised
// without root and without the nbd module.

const (
	ctrlFamily       = 0x10 // GENL_ID_CTRL
	ctrlVersion      = 2
	ctrlCmdGetFamily = 3 // CTRL_CMD_GETFAMILY
	ctrlAttrFamilyID = 1 // CTRL_ATTR_FAMILY_ID, u16
	ctrlAttrName     = 2 // CTRL_ATTR_FAMILY_NAME, string
	ctrlNotifyGroup  = 0x10
)

func getFamilyMessage(name string, flags uint16) []byte {
	m := newMessage(ctrlFamily, flags, ctrlCmdGetFamily)
	m.b[nlmsgHdrLen+1] = ctrlVersion
	m.str(ctrlAttrName, name)
	return m.bytes()
}

func TestSocketRoundTrip(t *testing.T) {
	tests := []struct {
		name      string
		msg       []byte
		wantReply bool
		wantErrno syscall.Errno
	}{
		{
			name:      "reply without ack",
			msg:       getFamilyMessage("nlctrl", flagRequest),
			wantReply: true,
		},
		{
			name: "ack after a reply is consumed",
			msg:  getFamilyMessage("nlctrl", flagRequest|flagAck),
		},
		{
			name:      "kernel errno",
			msg:       getFamilyMessage("nbdloop-none", flagRequest),
			wantReply: true,
			wantErrno: syscall.ENOENT,
		},
		{
			name:      "kernel errno with extended ack",
			msg:       getFamilyMessage("name-longer-than-genl-namsiz", flagRequest),
			wantReply: true,
			wantErrno: syscall.EINVAL,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &Family{ID: ctrlFamily, Timeout: 5 * time.Second}
			start := time.Now()
			reply, err := f.do(tt.msg, tt.wantReply)
			if elapsed := time.Since(start); elapsed > 2*time.Second {
				t.Errorf("round trip took %v", elapsed)
			}
			if tt.wantErrno != 0 {
				if !errors.Is(err, tt.wantErrno) {
					t.Fatalf("do() = %v, want %v", err, tt.wantErrno)
				}
				return
			}
			if err != nil {
				t.Fatalf("do() error = %v", err)
			}
			if !tt.wantReply {
				if reply != nil {
					t.Errorf("do() = % x, want no reply", reply)
				}
				return
			}
			_, b, err := genlPayload(reply)
			if err != nil {
				t.Fatalf("genlPayload() error = %v", err)
			}
			attrs, err := parseAttrs(b)
			if err != nil {
				t.Fatalf("parseAttrs() error = %v", err)
			}
			var id uint16
			for _, a := range attrs {
				if a.typ == ctrlAttrFamilyID && len(a.value) >= 2 {
					id = binary.NativeEndian.Uint16(a.value)
				}
			}
			if id != ctrlFamily {
				t.Errorf("CTRL_ATTR_FAMILY_ID = %#x, want %#x", id, ctrlFamily)
			}
		})
	}
}

func TestSocketWatchCancel(t *testing.T) {
	// Family id 0xffff matches nothing, so only cancellation ends the watch.
	f := &Family{ID: 0xffff, LinkDeadGroup: ctrlNotifyGroup}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := f.WatchLinkDead(ctx, func(index int) { t.Errorf("unexpected event for index %d", index) })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WatchLinkDead() = %v, want context.DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("WatchLinkDead returned %v after cancellation", elapsed)
	}
}
