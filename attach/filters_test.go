package attach

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/filters"
	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

func TestConfigValidateFilters(t *testing.T) {
	tests := []struct {
		filters []string
		want    string // "" for valid
	}{
		{filters: nil},
		{filters: []string{"error:rate=10%,file=/tmp/t", "stats"}},
		{filters: []string{"error:rate=2"}, want: `error filter: rate "2" is out of range 0..1 or 0%..100%`},
		{filters: []string{"stats", "bogus"}, want: `unknown filter "bogus"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.filters, " "), func(t *testing.T) {
			cfg := NewConfig("memory:1G")
			cfg.Filters = tt.filters
			err := cfg.Validate()
			if tt.want == "" && err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
			if tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)) {
				t.Errorf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestSourceReadOnly(t *testing.T) {
	tests := []struct {
		ro      bool
		filters []string
		want    bool
	}{
		{false, nil, false},
		{true, nil, true},
		{false, []string{"error", "stats"}, false},
		{false, []string{"error", "cow"}, true},
		{false, []string{"cow:file=/x,keep=true"}, true},
	}
	for _, tt := range tests {
		cfg := NewConfig("disk.img")
		cfg.ReadOnly, cfg.Filters = tt.ro, tt.filters
		if got := cfg.sourceReadOnly(); got != tt.want {
			t.Errorf("ReadOnly=%v Filters=%q: sourceReadOnly() = %v, want %v", tt.ro, tt.filters, got, tt.want)
		}
	}
}

// TestObserveFunc: the requests the server observes arrive in the stack's
// log and stats filters.
func TestObserveFunc(t *testing.T) {
	m, err := sources.NewMemory(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	st, err := filters.Open(m, nil, filters.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if st.ObserveFunc() != nil {
		t.Error("ObserveFunc of a stack without log or stats is not nil")
	}
	path := filepath.Join(t.TempDir(), "log")
	cfg := NewConfig("memory:1M")
	cfg.Filters = []string{"stats", "log:file=" + path}
	st, err = openFilters(m, cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	obs := st.ObserveFunc()
	start := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, e := range []request.Request{
		{Conn: 1, Op: request.OpRead, Offset: 4096, Length: 512, Start: start, Latency: time.Millisecond},
		{Conn: 2, Op: request.OpWrite, Flags: request.FlagFUA, Offset: 0, Length: 4096, Start: start, Error: 28},
		{Conn: 3, Op: request.OpFlush, Start: start},
		{Conn: 0, Op: request.OpTrim, Offset: 1 << 20, Length: 1 << 20, Start: start},
		{Conn: 0, Op: request.OpZero, Flags: request.FlagNoHole, Length: 8192, Start: start},
	} {
		obs(e)
	}
	snap := st.Stats().Snapshot()
	for i, want := range []struct {
		op            string
		count, errors uint64
	}{{"read", 1, 0}, {"write", 1, 1}, {"flush", 1, 0}, {"trim", 1, 0}, {"zero", 1, 0}} {
		if o := snap.Ops[i]; o.Op != want.op || o.Count != want.count || o.Errors != want.errors {
			t.Errorf("stats %d = %s %d %d, want %s %d %d", i, o.Op, o.Count, o.Errors, want.op, want.count, want.errors)
		}
	}
	if err := st.Source.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	want := `{"time":"2026-01-02T03:04:05.000000006Z","conn":1,"op":"read","offset":4096,"length":512,"flags":"","latency_us":1000,"error":""}
{"time":"2026-01-02T03:04:05.000000006Z","conn":2,"op":"write","offset":0,"length":4096,"flags":"fua","latency_us":0,"error":"ENOSPC"}
{"time":"2026-01-02T03:04:05.000000006Z","conn":3,"op":"flush","offset":0,"length":0,"flags":"","latency_us":0,"error":""}
{"time":"2026-01-02T03:04:05.000000006Z","conn":0,"op":"trim","offset":1048576,"length":1048576,"flags":"","latency_us":0,"error":""}
{"time":"2026-01-02T03:04:05.000000006Z","conn":0,"op":"zero","offset":0,"length":8192,"flags":"nohole","latency_us":0,"error":""}
`
	if string(b) != want {
		t.Errorf("log =\n%s\nwant\n%s", b, want)
	}
}

// TestStatsFile: the stats file is written at start, every interval and at
// stop, and is read back only for the backend that wrote it.
func TestStatsFile(t *testing.T) {
	dir := t.TempDir()
	m, _ := sources.NewMemory(1 << 20)
	cfg := NewConfig("memory:1M")
	cfg.Filters = []string{"stats:interval=20ms"}
	stack, err := openFilters(m, cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	defer stack.Source.Close()
	st := &State{Config: Config{Index: 7}, PID: 4711, BackendID: "nbdloop:0123"}
	stop := startStats(dir, st, stack, t.Logf)
	snap, err := readStats(dir, 7, "nbdloop:0123")
	if err != nil {
		t.Fatalf("stats file after start: %v", err)
	}
	if snap.Device != "/dev/nbd7" || snap.PID != 4711 || snap.Ops[0].Count != 0 {
		t.Errorf("first stats = %+v", snap)
	}
	stack.Observe(request.Request{Op: request.OpRead, Length: 4096})
	deadline := time.Now().Add(5 * time.Second)
	for {
		snap, err = readStats(dir, 7, "nbdloop:0123")
		if err == nil && snap.Ops[0].Count == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stats file did not show the read within 5 s: %+v, %v", snap, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stack.Observe(request.Request{Op: request.OpWrite, Length: 4096})
	stop()
	snap, err = readStats(dir, 7, "nbdloop:0123")
	if err != nil || snap.Ops[1].Count != 1 {
		t.Errorf("stats file after stop = %+v, %v, want the write counted", snap, err)
	}
	if info, err := os.Stat(statsPath(dir, 7)); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("stats file mode = %v, %v, want 0600", info.Mode(), err)
	}
	if _, err := readStats(dir, 7, "nbdloop:other"); !errors.Is(err, ErrNoStats) {
		t.Errorf("readStats for another backend = %v, want ErrNoStats", err)
	}
	if _, err := readStats(dir, 8, ""); !errors.Is(err, ErrNoStats) {
		t.Errorf("readStats without a file = %v, want ErrNoStats", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("state directory holds %d files, want only the stats file", len(ents))
	}
}
