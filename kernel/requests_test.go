// Netlink integers are in host byte order; the tables below spell out
// little-endian bytes.

//go:build 386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64 || wasm

package kernel

import (
	"bytes"
	"testing"
	"time"
)

const testFamily = 0x1d // a typical dynamically assigned family id

func durationPtr(d time.Duration) *time.Duration { return &d }
func uint64Ptr(v uint64) *uint64                 { return &v }

func TestConnectMessage(t *testing.T) {
	tests := []struct {
		name string
		req  ConnectRequest
		want []byte
	}{
		{
			name: "any index, two sockets, backend id",
			req: ConnectRequest{
				Index:           IndexAny,
				Size:            1 << 30,
				BlockSize:       512,
				Timeout:         30 * time.Second,
				DeadConnTimeout: time.Minute,
				ServerFlags:     0x12d, // HAS_FLAGS|SEND_FLUSH|SEND_FUA|SEND_TRIM|CAN_MULTI_CONN
				ClientFlags:     ClientDestroyOnDisconnect,
				BackendID:       "nbdloop:disk.img",
				Sockets:         []int{5, 6},
			},
			want: []byte{
				// nlmsghdr
				0x90, 0x00, 0x00, 0x00, // len 144
				0x1d, 0x00, // type: nbd family id
				0x01, 0x00, // flags: NLM_F_REQUEST (the reply is the answer, no ACK)
				0x00, 0x00, 0x00, 0x00, // seq: stamped at send time
				0x00, 0x00, 0x00, 0x00, // pid
				// genlmsghdr
				0x01,       // cmd: NBD_CMD_CONNECT
				0x01,       // version
				0x00, 0x00, // reserved
				// no NBD_ATTR_INDEX: the kernel picks the device
				0x0c, 0x00, 0x02, 0x00, // len 12, NBD_ATTR_SIZE_BYTES
				0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, // 1 GiB
				0x0c, 0x00, 0x03, 0x00, // len 12, NBD_ATTR_BLOCK_SIZE_BYTES
				0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 512
				0x0c, 0x00, 0x04, 0x00, // len 12, NBD_ATTR_TIMEOUT
				0x1e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 30 s
				0x0c, 0x00, 0x05, 0x00, // len 12, NBD_ATTR_SERVER_FLAGS
				0x2d, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0x12d
				0x0c, 0x00, 0x06, 0x00, // len 12, NBD_ATTR_CLIENT_FLAGS
				0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // DESTROY_ON_DISCONNECT
				0x1c, 0x00, 0x07, 0x00, // len 28, NBD_ATTR_SOCKETS (no NLA_F_NESTED)
				0x0c, 0x00, 0x01, 0x00, // len 12, NBD_SOCK_ITEM
				0x08, 0x00, 0x01, 0x00, // len 8, NBD_SOCK_FD
				0x05, 0x00, 0x00, 0x00, // fd 5
				0x0c, 0x00, 0x01, 0x00, // len 12, NBD_SOCK_ITEM
				0x08, 0x00, 0x01, 0x00, // len 8, NBD_SOCK_FD
				0x06, 0x00, 0x00, 0x00, // fd 6
				0x0c, 0x00, 0x08, 0x00, // len 12, NBD_ATTR_DEAD_CONN_TIMEOUT
				0x3c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 60 s
				0x15, 0x00, 0x0a, 0x00, // len 21, NBD_ATTR_BACKEND_IDENTIFIER
				'n', 'b', 'd', 'l', 'o', 'o', 'p', ':', // "nbdloop:
				'd', 'i', 's', 'k', '.', 'i', 'm', 'g', //  disk.img"
				0x00,             // NUL terminator
				0x00, 0x00, 0x00, // padding
			},
		},
		{
			name: "explicit index, zero timeouts, defaults omitted",
			req: ConnectRequest{
				Index:   3,
				Size:    4096,
				Sockets: []int{9},
			},
			want: []byte{
				// nlmsghdr
				0x68, 0x00, 0x00, 0x00, // len 104
				0x1d, 0x00, // type: nbd family id
				0x01, 0x00, // flags: NLM_F_REQUEST
				0x00, 0x00, 0x00, 0x00, // seq
				0x00, 0x00, 0x00, 0x00, // pid
				// genlmsghdr
				0x01, 0x01, 0x00, 0x00, // NBD_CMD_CONNECT, version 1
				0x08, 0x00, 0x01, 0x00, // len 8, NBD_ATTR_INDEX
				0x03, 0x00, 0x00, 0x00, // 3
				0x0c, 0x00, 0x02, 0x00, // len 12, NBD_ATTR_SIZE_BYTES
				0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 4096
				// no NBD_ATTR_BLOCK_SIZE_BYTES
				0x0c, 0x00, 0x04, 0x00, // len 12, NBD_ATTR_TIMEOUT
				0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0: sent, it means "wait forever"
				0x0c, 0x00, 0x05, 0x00, // len 12, NBD_ATTR_SERVER_FLAGS
				0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0
				0x0c, 0x00, 0x06, 0x00, // len 12, NBD_ATTR_CLIENT_FLAGS
				0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0: clears a sticky DESTROY_ON_DISCONNECT
				0x10, 0x00, 0x07, 0x00, // len 16, NBD_ATTR_SOCKETS
				0x0c, 0x00, 0x01, 0x00, // len 12, NBD_SOCK_ITEM
				0x08, 0x00, 0x01, 0x00, // len 8, NBD_SOCK_FD
				0x09, 0x00, 0x00, 0x00, // fd 9
				0x0c, 0x00, 0x08, 0x00, // len 12, NBD_ATTR_DEAD_CONN_TIMEOUT
				0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0
				// no NBD_ATTR_BACKEND_IDENTIFIER
			},
		},
		{
			name: "sub-second timeouts round up",
			req: ConnectRequest{
				Index:           0,
				Size:            512,
				Timeout:         1500 * time.Millisecond,
				DeadConnTimeout: time.Nanosecond,
				Sockets:         []int{0},
			},
			want: []byte{
				0x68, 0x00, 0x00, 0x00, // len 104
				0x1d, 0x00, 0x01, 0x00, // type, flags: NLM_F_REQUEST
				0x00, 0x00, 0x00, 0x00, // seq
				0x00, 0x00, 0x00, 0x00, // pid
				0x01, 0x01, 0x00, 0x00, // NBD_CMD_CONNECT, version 1
				0x08, 0x00, 0x01, 0x00, // len 8, NBD_ATTR_INDEX
				0x00, 0x00, 0x00, 0x00, // 0
				0x0c, 0x00, 0x02, 0x00, // len 12, NBD_ATTR_SIZE_BYTES
				0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 512
				0x0c, 0x00, 0x04, 0x00, // len 12, NBD_ATTR_TIMEOUT
				0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 1.5 s -> 2
				0x0c, 0x00, 0x05, 0x00, // len 12, NBD_ATTR_SERVER_FLAGS
				0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0
				0x0c, 0x00, 0x06, 0x00, // len 12, NBD_ATTR_CLIENT_FLAGS
				0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0
				0x10, 0x00, 0x07, 0x00, // len 16, NBD_ATTR_SOCKETS
				0x0c, 0x00, 0x01, 0x00, // len 12, NBD_SOCK_ITEM
				0x08, 0x00, 0x01, 0x00, // len 8, NBD_SOCK_FD
				0x00, 0x00, 0x00, 0x00, // fd 0
				0x0c, 0x00, 0x08, 0x00, // len 12, NBD_ATTR_DEAD_CONN_TIMEOUT
				0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 1 ns -> 1, not 0 ("fail at once")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := connectMessage(testFamily, tt.req)
			if err != nil {
				t.Fatalf("connectMessage() error = %v", err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("connectMessage() =\n% x\nwant\n% x", got, tt.want)
			}
		})
	}
}

func TestDisconnectMessage(t *testing.T) {
	want := []byte{
		// nlmsghdr
		0x1c, 0x00, 0x00, 0x00, // len 28
		0x1d, 0x00, // type: nbd family id
		0x05, 0x00, // flags: NLM_F_REQUEST|NLM_F_ACK (no reply message otherwise)
		0x00, 0x00, 0x00, 0x00, // seq
		0x00, 0x00, 0x00, 0x00, // pid
		// genlmsghdr
		0x02,       // cmd: NBD_CMD_DISCONNECT
		0x01,       // version
		0x00, 0x00, // reserved
		0x08, 0x00, 0x01, 0x00, // len 8, NBD_ATTR_INDEX
		0x07, 0x00, 0x00, 0x00, // 7
	}
	got, err := disconnectMessage(testFamily, 7)
	if err != nil {
		t.Fatalf("disconnectMessage() error = %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("disconnectMessage() =\n% x\nwant\n% x", got, want)
	}
}

func TestReconfigureMessage(t *testing.T) {
	tests := []struct {
		name string
		req  ReconfigureRequest
		want []byte
	}{
		{
			name: "index only",
			req:  ReconfigureRequest{Index: 2},
			want: []byte{
				0x1c, 0x00, 0x00, 0x00, // len 28
				0x1d, 0x00, // type: nbd family id
				0x05, 0x00, // flags: NLM_F_REQUEST|NLM_F_ACK
				0x00, 0x00, 0x00, 0x00, // seq
				0x00, 0x00, 0x00, 0x00, // pid
				0x03, 0x01, 0x00, 0x00, // NBD_CMD_RECONFIGURE, version 1
				0x08, 0x00, 0x01, 0x00, // len 8, NBD_ATTR_INDEX
				0x02, 0x00, 0x00, 0x00, // 2
			},
		},
		{
			name: "resize and set disconnect on close",
			req: ReconfigureRequest{
				Index:       2,
				Size:        2 << 30,
				ClientFlags: uint64Ptr(ClientDisconnectOnClose),
				BackendID:   "id",
			},
			want: []byte{
				0x3c, 0x00, 0x00, 0x00, // len 60
				0x1d, 0x00, // type: nbd family id
				0x05, 0x00, // flags: NLM_F_REQUEST|NLM_F_ACK
				0x00, 0x00, 0x00, 0x00, // seq
				0x00, 0x00, 0x00, 0x00, // pid
				0x03, 0x01, 0x00, 0x00, // NBD_CMD_RECONFIGURE, version 1
				0x08, 0x00, 0x01, 0x00, // len 8, NBD_ATTR_INDEX
				0x02, 0x00, 0x00, 0x00, // 2
				0x0c, 0x00, 0x02, 0x00, // len 12, NBD_ATTR_SIZE_BYTES
				0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, // 2 GiB
				0x0c, 0x00, 0x06, 0x00, // len 12, NBD_ATTR_CLIENT_FLAGS
				0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // DISCONNECT_ON_CLOSE
				0x07, 0x00, 0x0a, 0x00, // len 7, NBD_ATTR_BACKEND_IDENTIFIER
				'i', 'd', 0x00, // "id", NUL
				0x00, // padding
			},
		},
		{
			name: "replace a dead socket",
			req: ReconfigureRequest{
				Index:           0,
				BlockSize:       4096,
				Timeout:         durationPtr(0),
				DeadConnTimeout: durationPtr(30 * time.Second),
				Sockets:         []int{11},
			},
			want: []byte{
				0x50, 0x00, 0x00, 0x00, // len 80
				0x1d, 0x00, // type: nbd family id
				0x05, 0x00, // flags: NLM_F_REQUEST|NLM_F_ACK
				0x00, 0x00, 0x00, 0x00, // seq
				0x00, 0x00, 0x00, 0x00, // pid
				0x03, 0x01, 0x00, 0x00, // NBD_CMD_RECONFIGURE, version 1
				0x08, 0x00, 0x01, 0x00, // len 8, NBD_ATTR_INDEX
				0x00, 0x00, 0x00, 0x00, // 0
				0x0c, 0x00, 0x03, 0x00, // len 12, NBD_ATTR_BLOCK_SIZE_BYTES
				0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 4096
				0x0c, 0x00, 0x04, 0x00, // len 12, NBD_ATTR_TIMEOUT
				0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0, sent because not nil
				0x10, 0x00, 0x07, 0x00, // len 16, NBD_ATTR_SOCKETS
				0x0c, 0x00, 0x01, 0x00, // len 12, NBD_SOCK_ITEM
				0x08, 0x00, 0x01, 0x00, // len 8, NBD_SOCK_FD
				0x0b, 0x00, 0x00, 0x00, // fd 11
				0x0c, 0x00, 0x08, 0x00, // len 12, NBD_ATTR_DEAD_CONN_TIMEOUT
				0x1e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 30 s
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := reconfigureMessage(testFamily, tt.req)
			if err != nil {
				t.Fatalf("reconfigureMessage() error = %v", err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("reconfigureMessage() =\n% x\nwant\n% x", got, tt.want)
			}
		})
	}
}

func TestStatusMessage(t *testing.T) {
	tests := []struct {
		name  string
		index int
		want  []byte
	}{
		{
			name:  "all devices",
			index: -1,
			want: []byte{
				0x14, 0x00, 0x00, 0x00, // len 20
				0x1d, 0x00, // type: nbd family id
				0x01, 0x00, // flags: NLM_F_REQUEST (the reply is the answer)
				0x00, 0x00, 0x00, 0x00, // seq
				0x00, 0x00, 0x00, 0x00, // pid
				0x05, 0x01, 0x00, 0x00, // NBD_CMD_STATUS, version 1
				// no NBD_ATTR_INDEX: every device
			},
		},
		{
			name:  "one device",
			index: 12,
			want: []byte{
				0x1c, 0x00, 0x00, 0x00, // len 28
				0x1d, 0x00, // type: nbd family id
				0x01, 0x00, // flags: NLM_F_REQUEST
				0x00, 0x00, 0x00, 0x00, // seq
				0x00, 0x00, 0x00, 0x00, // pid
				0x05, 0x01, 0x00, 0x00, // NBD_CMD_STATUS, version 1
				0x08, 0x00, 0x01, 0x00, // len 8, NBD_ATTR_INDEX
				0x0c, 0x00, 0x00, 0x00, // 12
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := statusMessage(testFamily, tt.index)
			if err != nil {
				t.Fatalf("statusMessage(%d) error = %v", tt.index, err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("statusMessage(%d) =\n% x\nwant\n% x", tt.index, got, tt.want)
			}
		})
	}
}

func TestMessageErrors(t *testing.T) {
	ok := ConnectRequest{Index: IndexAny, Size: 1 << 20, Sockets: []int{3}}
	tests := []struct {
		name  string
		build func() ([]byte, error)
		want  string
	}{
		{
			name:  "connect without sockets",
			build: func() ([]byte, error) { r := ok; r.Sockets = nil; return connectMessage(testFamily, r) },
			want:  "no sockets",
		},
		{
			name: "connect two sockets without CAN_MULTI_CONN",
			build: func() ([]byte, error) {
				r := ok
				r.Sockets = []int{3, 4}
				r.ServerFlags = 1
				return connectMessage(testFamily, r)
			},
			want: "2 sockets need server flag CAN_MULTI_CONN",
		},
		{
			name:  "connect index below -1",
			build: func() ([]byte, error) { r := ok; r.Index = -2; return connectMessage(testFamily, r) },
			want:  "device index -2 out of range",
		},
		{
			name:  "connect negative fd",
			build: func() ([]byte, error) { r := ok; r.Sockets = []int{-1}; return connectMessage(testFamily, r) },
			want:  "invalid socket file descriptor -1",
		},
		{
			name:  "connect negative timeout",
			build: func() ([]byte, error) { r := ok; r.Timeout = -time.Second; return connectMessage(testFamily, r) },
			want:  "negative timeout -1s",
		},
		{
			name: "connect negative dead connection timeout",
			build: func() ([]byte, error) {
				r := ok
				r.DeadConnTimeout = -time.Second
				return connectMessage(testFamily, r)
			},
			want: "negative dead connection timeout -1s",
		},
		{
			name:  "connect block size not a power of two",
			build: func() ([]byte, error) { r := ok; r.BlockSize = 1000; return connectMessage(testFamily, r) },
			want:  "block size 1000 is not a power of two of at least 512",
		},
		{
			name:  "connect block size too small",
			build: func() ([]byte, error) { r := ok; r.BlockSize = 256; return connectMessage(testFamily, r) },
			want:  "block size 256 is not a power of two of at least 512",
		},
		{
			name:  "connect size beyond loff_t",
			build: func() ([]byte, error) { r := ok; r.Size = 1 << 63; return connectMessage(testFamily, r) },
			want:  "size 9223372036854775808 too large",
		},
		{
			name:  "connect backend id with NUL",
			build: func() ([]byte, error) { r := ok; r.BackendID = "a\x00b"; return connectMessage(testFamily, r) },
			want:  `backend identifier "a\x00b" contains a NUL byte`,
		},
		{
			name:  "disconnect any index",
			build: func() ([]byte, error) { return disconnectMessage(testFamily, -1) },
			want:  "device index -1 out of range",
		},
		{
			name:  "reconfigure any index",
			build: func() ([]byte, error) { return reconfigureMessage(testFamily, ReconfigureRequest{Index: -1}) },
			want:  "device index -1 out of range",
		},
		{
			name: "reconfigure negative timeout",
			build: func() ([]byte, error) {
				return reconfigureMessage(testFamily, ReconfigureRequest{Timeout: durationPtr(-1)})
			},
			want: "negative timeout -1ns",
		},
		{
			name: "reconfigure negative fd",
			build: func() ([]byte, error) {
				return reconfigureMessage(testFamily, ReconfigureRequest{Sockets: []int{-5}})
			},
			want: "invalid socket file descriptor -5",
		},
		{
			name:  "status index below -1",
			build: func() ([]byte, error) { return statusMessage(testFamily, -2) },
			want:  "device index -2 out of range",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.build()
			if err == nil {
				t.Fatalf("got message % x, want error %q", got, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("error = %q, want %q", err, tt.want)
			}
		})
	}
}
