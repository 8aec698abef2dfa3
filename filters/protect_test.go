package filters

import (
	"errors"
	"syscall"
	"testing"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/sourcetest"
)

func TestProtectConformance(t *testing.T) {
	t.Parallel()
	want := testData(256<<10+512, 13)
	t.Run("readonly", func(t *testing.T) {
		sourcetest.Run(t, func(t *testing.T) sources.Source {
			return openSpec(t, newMemoryWith(t, want), "readonly", Env{})
		}, want)
	})
	t.Run("range past the end", func(t *testing.T) {
		sourcetest.Run(t, func(t *testing.T) sources.Source {
			return NewProtect(newMemoryWith(t, want), ProtectOptions{Ranges: []Range{{Start: 1 << 30, End: 2 << 30}}})
		}, want)
	})
}

func TestProtectRefuses(t *testing.T) {
	type call struct {
		op      request.Op
		off, n  int64
		wantErr error
	}
	tests := []struct {
		spec  string
		caps  sources.Caps
		calls []call
	}{
		{spec: "readonly", caps: sources.Caps{ReadOnly: true, Parallel: true, InMemory: true}, calls: []call{
			{request.OpRead, 0, 512, nil}, {request.OpWrite, 0, 512, sources.ErrReadOnly}, {request.OpTrim, 4096, 4096, sources.ErrReadOnly},
			{request.OpZero, 4096, 4096, sources.ErrReadOnly}, {request.OpFlush, 0, 0, nil},
		}},
		{spec: "protect", caps: sources.Caps{ReadOnly: true, Parallel: true, InMemory: true}, calls: []call{
			{request.OpWrite, 100000, 1, sources.ErrReadOnly},
		}},
		{spec: "protect:range=0-1M", caps: sources.Caps{Parallel: true, Trim: true, Zero: true, InMemory: true}, calls: []call{
			{request.OpRead, 0, 4096, nil}, {request.OpWrite, 0, 512, ErrProtected}, {request.OpWrite, 1<<20 - 1, 1, ErrProtected},
			{request.OpWrite, 1 << 20, 4096, nil}, {request.OpWrite, 1<<20 - 512, 4096, ErrProtected}, {request.OpTrim, 512 << 10, 1 << 20, ErrProtected},
			{request.OpZero, 2 << 20, 4096, nil}, {request.OpFlush, 0, 0, nil}, {request.OpWrite, 0, 0, nil},
		}},
		{spec: "protect:range=4K+512,range=8K-12K", caps: sources.Caps{Parallel: true, Trim: true, Zero: true, InMemory: true}, calls: []call{
			{request.OpWrite, 0, 4096, nil}, {request.OpWrite, 4096, 1, ErrProtected}, {request.OpWrite, 4608, 3584, nil},
			{request.OpZero, 8191, 1, nil}, {request.OpZero, 8191, 2, ErrProtected}, {request.OpTrim, 12288, 4096, nil},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			p := openSpec(t, newMemoryWith(t, make([]byte, 4<<20)), tt.spec, Env{})
			defer p.Close()
			if got := p.Caps(); got != tt.caps {
				t.Errorf("Caps() = %+v, want %+v", got, tt.caps)
			}
			for i, c := range tt.calls {
				err := doOp(p, c.op, c.off, c.n)
				if (err == nil) != (c.wantErr == nil) || (err != nil && !errors.Is(err, c.wantErr)) {
					t.Errorf("call %d: %s(off=%d, len=%d) = %v, want %v", i, c.op, c.off, c.n, err, c.wantErr)
				}
				if err != nil && !errors.Is(err, syscall.EPERM) {
					t.Errorf("call %d: %v does not wrap EPERM", i, err)
				}
			}
		})
	}
}

func TestProtectTriggerFile(t *testing.T) {
	for _, spec := range []string{"protect:file=", "readonly:file="} {
		t.Run(spec, func(t *testing.T) {
			path := missingFile(t)
			p := openSpec(t, newMemoryWith(t, make([]byte, 1<<20)), spec+path, Env{})
			defer p.Close()
			if p.Caps().ReadOnly {
				t.Error("Caps().ReadOnly = true with a trigger file, want false")
			}
			for i, on := range []bool{false, true, false} {
				if i > 0 {
					setTrigger(t, p.(*Protect).trig, path, on)
				}
				_, err := p.WriteAt(make([]byte, 512), 4096)
				if (err != nil) != on {
					t.Errorf("file exists %v: WriteAt = %v", on, err)
				}
				mustRead(t, p, 4096, 512)
			}
		})
	}
}
