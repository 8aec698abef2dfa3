package request

import (
	"encoding"
	"testing"
)

var (
	_ encoding.TextAppender = Op(0)
	_ encoding.TextAppender = Flags(0)
)

func TestOpString(t *testing.T) {
	tests := []struct {
		op     Op
		want   string
		served bool
	}{
		{OpRead, "read", true}, {OpWrite, "write", true}, {OpDisc, "cmd2", false}, {OpFlush, "flush", true},
		{OpTrim, "trim", true}, {OpCache, "cmd5", false}, {OpZero, "zero", true}, {Op(7), "cmd7", false},
		{Op(65535), "cmd65535", false},
	}
	for _, tt := range tests {
		if got := tt.op.String(); got != tt.want {
			t.Errorf("Op(%d).String() = %q, want %q", uint16(tt.op), got, tt.want)
		}
		if got, _ := tt.op.AppendText([]byte("x")); string(got) != "x"+tt.want {
			t.Errorf("Op(%d).AppendText(x) = %q, want %q", uint16(tt.op), got, "x"+tt.want)
		}
		if got := tt.op.Served(); got != tt.served {
			t.Errorf("Op(%d).Served() = %v, want %v", uint16(tt.op), got, tt.served)
		}
		op, ok := ParseOp(tt.want)
		if ok != tt.served || ok && op != tt.op {
			t.Errorf("ParseOp(%q) = %v, %v, want %v, %v", tt.want, op, ok, tt.op, tt.served)
		}
	}
	for _, name := range []string{"", "READ", "discard", "cache", "disc", "cmd0"} {
		if op, ok := ParseOp(name); ok {
			t.Errorf("ParseOp(%q) = %v, true, want false", name, op)
		}
	}
}

func TestOpsServed(t *testing.T) {
	n := 0
	for o := range Op(64) {
		if o.Served() {
			if ops := Ops(); ops[n] != o {
				t.Errorf("Ops()[%d] = %v, want %v", n, ops[n], o)
			}
			n++
		}
	}
	if n != len(Ops()) {
		t.Errorf("%d ops are Served, want %d (len(Ops()))", n, len(Ops()))
	}
}

func TestFlagsString(t *testing.T) {
	tests := []struct {
		f    Flags
		want string
	}{
		{0, ""}, {FlagFUA, "fua"}, {FlagNoHole, "nohole"}, {FlagFUA | FlagNoHole, "fua,nohole"},
		{1 << 3, "0x8"}, {FlagFUA | 1<<2 | 1<<15, "fua,0x8004"}, {FlagNoHole | 1<<2, "nohole,0x4"},
	}
	for _, tt := range tests {
		if got := tt.f.String(); got != tt.want {
			t.Errorf("Flags(%#x).String() = %q, want %q", uint16(tt.f), got, tt.want)
		}
	}
}

// TestAppendTextAllocs: the log filter formats every request with these.
func TestAppendTextAllocs(t *testing.T) {
	b := make([]byte, 0, 64)
	n := testing.AllocsPerRun(100, func() {
		b, _ = Op(9).AppendText(b[:0])
		b, _ = OpWrite.AppendText(b)
		b, _ = (FlagFUA | FlagNoHole | 1<<4).AppendText(b)
	})
	if n != 0 {
		t.Errorf("AppendText allocates %v times, want 0", n)
	}
}
