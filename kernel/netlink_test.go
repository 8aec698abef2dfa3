package kernel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// fakeKernel is a conn whose answers come from respond, called with each
// request sent. When no answer is queued, receive either fails at once
// with os.ErrDeadlineExceeded (as if the timeout had passed) or, with block
// set, waits until setDeadline is called, like a socket whose deadline is
// moved into the past.
type fakeKernel struct {
	pid     uint32
	respond func(req []byte) [][]byte
	block   bool

	mu       sync.Mutex
	sent     [][]byte
	queue    [][]byte
	joined   []uint32
	closed   bool
	deadline chan struct{}
}

func (k *fakeKernel) dial() (conn, error) { return k, nil }

func (k *fakeKernel) send(b []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sent = append(k.sent, append([]byte(nil), b...))
	if k.respond != nil {
		k.queue = append(k.queue, k.respond(b)...)
	}
	return nil
}

func (k *fakeKernel) receive() ([]byte, error) {
	k.mu.Lock()
	if len(k.queue) > 0 {
		b := k.queue[0]
		k.queue = k.queue[1:]
		k.mu.Unlock()
		return b, nil
	}
	wait := k.deadline
	k.mu.Unlock()
	if k.block && wait != nil {
		<-wait
	}
	return nil, os.ErrDeadlineExceeded
}

func (k *fakeKernel) portID() uint32 { return k.pid }

func (k *fakeKernel) setDeadline(t time.Time) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !t.After(time.Now()) && k.deadline != nil {
		close(k.deadline)
		k.deadline = nil
	}
	return nil
}

func (k *fakeKernel) joinGroup(group uint32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.joined = append(k.joined, group)
	return nil
}

func (k *fakeKernel) close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	return nil
}

// nlMessage builds a netlink message the way the kernel would send it.
func nlMessage(typ, flags uint16, seq, pid uint32, payload []byte) []byte {
	b := make([]byte, nlmsgHdrLen, nlmsgHdrLen+len(payload)+3)
	binary.NativeEndian.PutUint32(b[0:4], uint32(nlmsgHdrLen+len(payload)))
	binary.NativeEndian.PutUint16(b[4:6], typ)
	binary.NativeEndian.PutUint16(b[6:8], flags)
	binary.NativeEndian.PutUint32(b[8:12], seq)
	binary.NativeEndian.PutUint32(b[12:16], pid)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// ackMessage is an NLMSG_ERROR answering req: errno 0 is an ACK.
func ackMessage(req []byte, errno syscall.Errno) []byte {
	payload := binary.NativeEndian.AppendUint32(nil, uint32(-int32(errno)))
	payload = append(payload, req[:nlmsgHdrLen]...)
	return nlMessage(typeError, flagCapped, seqOf(req), testPID, payload)
}

// genlMessage is a message of the nbd family with the given command and
// attributes.
func genlMessage(seq, pid uint32, cmd uint8, attrs func(m *message)) []byte {
	m := newMessage(testFamilyID, 0, cmd)
	attrs(m)
	b := m.bytes()
	binary.NativeEndian.PutUint32(b[8:12], seq)
	binary.NativeEndian.PutUint32(b[12:16], pid)
	return b
}

func seqOf(req []byte) uint32    { return binary.NativeEndian.Uint32(req[8:12]) }
func flagsOf(req []byte) uint16  { return binary.NativeEndian.Uint16(req[6:8]) }
func concat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

const (
	testFamilyID = 0x21
	testPID      = 4242
)

func TestFamilyConnect(t *testing.T) {
	req := ConnectRequest{Index: IndexAny, Size: 1 << 20, Sockets: []int{7}}
	indexReply := func(seq uint32, index uint32) []byte {
		return genlMessage(seq, testPID, cmdConnect, func(m *message) { m.u32(attrIndex, index) })
	}
	tests := []struct {
		name      string
		respond   func(req []byte) [][]byte
		want      int
		wantErrno syscall.Errno
		wantErr   string
	}{
		{
			name: "reply with index",
			respond: func(req []byte) [][]byte {
				return [][]byte{indexReply(seqOf(req), 3)}
			},
			want: 3,
		},
		{
			name: "stale and foreign messages skipped",
			respond: func(req []byte) [][]byte {
				stale := genlMessage(seqOf(req)+7, testPID, cmdConnect, func(m *message) { m.u32(attrIndex, 9) })
				foreign := genlMessage(seqOf(req), testPID+1, cmdConnect, func(m *message) { m.u32(attrIndex, 8) })
				return [][]byte{stale, concat(foreign, indexReply(seqOf(req), 4))}
			},
			want: 4,
		},
		{
			name: "not root",
			respond: func(req []byte) [][]byte {
				return [][]byte{ackMessage(req, syscall.EPERM)}
			},
			wantErrno: syscall.EPERM,
			wantErr:   "nbd netlink connect: operation not permitted",
		},
		{
			name: "device busy",
			respond: func(req []byte) [][]byte {
				return [][]byte{ackMessage(req, syscall.EBUSY)}
			},
			wantErrno: syscall.EBUSY,
			wantErr:   "nbd netlink connect: device or resource busy",
		},
		{
			name: "ack without reply",
			respond: func(req []byte) [][]byte {
				return [][]byte{ackMessage(req, 0)}
			},
			wantErr: "nbd netlink connect: kernel acknowledged the request without replying",
		},
		{
			name: "reply without index",
			respond: func(req []byte) [][]byte {
				return [][]byte{genlMessage(seqOf(req), testPID, cmdConnect, func(*message) {})}
			},
			wantErr: "nbd netlink connect: reply has no NBD_ATTR_INDEX",
		},
		{
			name:    "no answer",
			respond: func([]byte) [][]byte { return nil },
			wantErr: "nbd netlink connect: no answer from the kernel within 2s: i/o timeout",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := &fakeKernel{pid: testPID, respond: tt.respond}
			f := &Family{ID: testFamilyID, Timeout: 2 * time.Second, dial: k.dial}
			got, err := f.Connect(req)
			if len(k.sent) != 1 {
				t.Fatalf("sent %d requests, want 1", len(k.sent))
			}
			if fl := flagsOf(k.sent[0]); fl != flagRequest {
				t.Errorf("request flags = %#x, want NLM_F_REQUEST only", fl)
			}
			if seqOf(k.sent[0]) == 0 {
				t.Errorf("request sent with sequence number 0")
			}
			if !k.closed {
				t.Errorf("socket not closed")
			}
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Connect() = %d, %v, want error %q", got, err, tt.wantErr)
				}
				if tt.wantErrno != 0 && !errors.Is(err, tt.wantErrno) {
					t.Errorf("errors.Is(%v, %v) = false", err, tt.wantErrno)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Connect() = %d, %v, want %d", got, err, tt.want)
			}
		})
	}
}

func TestFamilyConnectInvalidRequest(t *testing.T) {
	k := &fakeKernel{pid: testPID}
	f := &Family{ID: testFamilyID, dial: k.dial}
	_, err := f.Connect(ConnectRequest{Index: IndexAny, Size: 512})
	if err == nil || err.Error() != "nbd netlink connect: no sockets" {
		t.Errorf("Connect() error = %v, want %q", err, "nbd netlink connect: no sockets")
	}
	if len(k.sent) != 0 {
		t.Errorf("sent %d requests, want none", len(k.sent))
	}
}

func TestFamilyAckedRequests(t *testing.T) {
	tests := []struct {
		name      string
		call      func(f *Family) error
		respond   func(req []byte) [][]byte
		wantCmd   uint8
		wantErrno syscall.Errno
		wantErr   string
	}{
		{
			name:    "disconnect",
			call:    func(f *Family) error { return f.Disconnect(2) },
			respond: func(req []byte) [][]byte { return [][]byte{ackMessage(req, 0)} },
			wantCmd: cmdDisconnect,
		},
		{
			name: "disconnect of a missing device",
			call: func(f *Family) error { return f.Disconnect(99) },
			respond: func(req []byte) [][]byte {
				return [][]byte{ackMessage(req, syscall.EINVAL)}
			},
			wantCmd:   cmdDisconnect,
			wantErrno: syscall.EINVAL,
			wantErr:   "nbd netlink disconnect: invalid argument",
		},
		{
			name:    "disconnect without answer",
			call:    func(f *Family) error { return f.Disconnect(2) },
			respond: func([]byte) [][]byte { return nil },
			wantCmd: cmdDisconnect,
			wantErr: "nbd netlink disconnect: no answer from the kernel within 10s: i/o timeout",
		},
		{
			name: "reconfigure, ack after an unrelated message",
			call: func(f *Family) error {
				return f.Reconfigure(ReconfigureRequest{Index: 1, Size: 1 << 30, BackendID: "x"})
			},
			respond: func(req []byte) [][]byte {
				noop := nlMessage(typeNoop, 0, seqOf(req), testPID, nil)
				return [][]byte{concat(noop, ackMessage(req, 0))}
			},
			wantCmd: cmdReconfigure,
		},
		{
			name: "reconfigure of a disconnected device",
			call: func(f *Family) error { return f.Reconfigure(ReconfigureRequest{Index: 1}) },
			respond: func(req []byte) [][]byte {
				return [][]byte{ackMessage(req, syscall.EINVAL)}
			},
			wantCmd:   cmdReconfigure,
			wantErrno: syscall.EINVAL,
			wantErr:   "nbd netlink reconfigure: invalid argument",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := &fakeKernel{pid: testPID, respond: tt.respond}
			f := &Family{ID: testFamilyID, dial: k.dial}
			err := tt.call(f)
			if len(k.sent) != 1 {
				t.Fatalf("sent %d requests, want 1", len(k.sent))
			}
			if fl := flagsOf(k.sent[0]); fl != flagRequest|flagAck {
				t.Errorf("request flags = %#x, want NLM_F_REQUEST|NLM_F_ACK", fl)
			}
			if cmd := k.sent[0][nlmsgHdrLen]; cmd != tt.wantCmd {
				t.Errorf("request cmd = %d, want %d", cmd, tt.wantCmd)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("error = %v, want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("error = %v, want %q", err, tt.wantErr)
			}
			if tt.wantErrno != 0 && !errors.Is(err, tt.wantErrno) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.wantErrno)
			}
		})
	}
}

func TestFamilyStatus(t *testing.T) {
	k := &fakeKernel{pid: testPID, respond: func(req []byte) [][]byte {
		return [][]byte{genlMessage(seqOf(req), testPID, cmdStatus, func(m *message) {
			m.nest(attrDeviceList, func() {
				for i := range uint32(3) {
					m.nest(deviceItem, func() {
						m.u32(deviceIndex, i)
						m.attr(deviceConnected, []byte{byte(i % 2)})
					})
				}
			})
		})}
	}}
	f := &Family{ID: testFamilyID, dial: k.dial}
	got, err := f.Status(-1)
	if err != nil {
		t.Fatalf("Status(-1) error = %v", err)
	}
	want := []DeviceStatus{{0, false}, {1, true}, {2, false}}
	if !slices.Equal(got, want) {
		t.Errorf("Status(-1) = %v, want %v", got, want)
	}
	if fl := flagsOf(k.sent[0]); fl != flagRequest {
		t.Errorf("request flags = %#x, want NLM_F_REQUEST only", fl)
	}
}

func TestWatchLinkDead(t *testing.T) {
	event := func(index uint32) []byte {
		return genlMessage(0, 0, cmdLinkDead, func(m *message) { m.u32(attrIndex, index) })
	}
	other := genlMessage(0, 0, cmdStatus, func(m *message) { m.u32(attrIndex, 99) })
	k := &fakeKernel{
		pid:      testPID,
		block:    true,
		queue:    [][]byte{event(3), concat(other, event(5), event(8))},
		deadline: make(chan struct{}),
	}
	f := &Family{ID: testFamilyID, LinkDeadGroup: 0x2a, dial: k.dial}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got []int
	err := f.WatchLinkDead(ctx, func(index int) {
		got = append(got, index)
		if len(got) == 3 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("WatchLinkDead() = %v, want context.Canceled", err)
	}
	if want := []int{3, 5, 8}; !slices.Equal(got, want) {
		t.Errorf("events = %v, want %v", got, want)
	}
	if len(k.joined) != 1 || k.joined[0] != 0x2a {
		t.Errorf("joined groups %v, want [42]", k.joined)
	}
	if !k.closed {
		t.Errorf("socket not closed")
	}
}

func TestWatchLinkDeadErrors(t *testing.T) {
	t.Run("no group", func(t *testing.T) {
		f := &Family{ID: testFamilyID}
		err := f.WatchLinkDead(context.Background(), func(int) {})
		if err == nil || !strings.Contains(err.Error(), "no nbd_mc_group") {
			t.Errorf("WatchLinkDead() = %v, want missing group error", err)
		}
	})
	t.Run("cancelled before start", func(t *testing.T) {
		k := &fakeKernel{pid: testPID}
		f := &Family{ID: testFamilyID, LinkDeadGroup: 3, dial: k.dial}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := f.WatchLinkDead(ctx, func(int) {}); !errors.Is(err, context.Canceled) {
			t.Errorf("WatchLinkDead() = %v, want context.Canceled", err)
		}
	})
	t.Run("malformed event", func(t *testing.T) {
		bad := genlMessage(0, 0, cmdLinkDead, func(*message) {})
		k := &fakeKernel{pid: testPID, queue: [][]byte{bad}}
		f := &Family{ID: testFamilyID, LinkDeadGroup: 3, dial: k.dial}
		err := f.WatchLinkDead(context.Background(), func(int) {})
		want := "nbd netlink watch: link dead event: reply has no NBD_ATTR_INDEX"
		if err == nil || err.Error() != want {
			t.Errorf("WatchLinkDead() = %v, want %q", err, want)
		}
	})
}

func TestOpen(t *testing.T) {
	nbd := &netlink.GenlFamily{
		ID:   0x25,
		Name: "nbd",
		Groups: []netlink.GenlMulticastGroup{
			{ID: 0x0b, Name: "other"},
			{ID: 0x30, Name: "nbd_mc_group"},
		},
	}
	tests := []struct {
		name      string
		results   []error // error of each lookup in turn; nil means found
		want      *Family
		wantLoads int
		wantIs    error
		wantErr   string
	}{
		{
			name:    "found at once",
			results: []error{nil},
			want:    &Family{ID: 0x25, LinkDeadGroup: 0x30},
		},
		{
			name:      "found after modprobe",
			results:   []error{syscall.ENOENT, nil},
			want:      &Family{ID: 0x25, LinkDeadGroup: 0x30},
			wantLoads: 1,
		},
		{
			name:      "missing after modprobe",
			results:   []error{syscall.ENOENT, syscall.ENOENT},
			wantLoads: 1,
			wantIs:    ErrNoDriver,
			wantErr:   "nbd generic netlink family not found",
		},
		{
			name:    "other lookup error",
			results: []error{syscall.EACCES},
			wantIs:  syscall.EACCES,
			wantErr: "nbd netlink: resolve family: permission denied",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lookups, loads := 0, 0
			lookup := func(name string) (*netlink.GenlFamily, error) {
				if name != "nbd" {
					t.Errorf("lookup(%q), want \"nbd\"", name)
				}
				if lookups >= len(tt.results) {
					t.Fatalf("lookup called %d times, want %d", lookups+1, len(tt.results))
				}
				err := tt.results[lookups]
				lookups++
				if err != nil {
					return nil, err
				}
				return nbd, nil
			}
			got, err := open(lookup, func() { loads++ })
			if loads != tt.wantLoads {
				t.Errorf("modprobe ran %d times, want %d", loads, tt.wantLoads)
			}
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr || !errors.Is(err, tt.wantIs) {
					t.Fatalf("open() = %v, %v, want error %q wrapping %v", got, err, tt.wantErr, tt.wantIs)
				}
				return
			}
			if err != nil || got.ID != tt.want.ID || got.LinkDeadGroup != tt.want.LinkDeadGroup {
				t.Errorf("open() = %+v, %v, want %+v", got, err, tt.want)
			}
		})
	}
}
