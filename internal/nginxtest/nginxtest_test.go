package nginxtest

import (
	"io"
	"net/http"
	"testing"
	"time"
)

func TestServe(t *testing.T) {
	s := Start(t, t.TempDir())
	url := s.Put(t, "f.bin", []byte("0123456789"), time.Unix(1700000000, 0))
	tests := []struct {
		rng    string
		status int
		body   string
	}{
		{"", http.StatusOK, "0123456789"},
		{"bytes=2-4", http.StatusPartialContent, "234"},
		{"bytes=8-", http.StatusPartialContent, "89"},
	}
	for _, tt := range tests {
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tt.rng != "" {
			req.Header.Set("Range", tt.rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tt.status || string(body) != tt.body {
			t.Errorf("GET Range %q = %d %q, want %d %q", tt.rng, resp.StatusCode, body, tt.status, tt.body)
		}
		if resp.Header.Get("ETag") == "" {
			t.Errorf("GET Range %q: no ETag", tt.rng)
		}
	}
}

// TestStop: a stopped nginx refuses connections.
func TestStop(t *testing.T) {
	s := Start(t, t.TempDir())
	url := s.Put(t, "f.bin", []byte("x"), time.Unix(1700000000, 0))
	s.Stop()
	if resp, err := http.Get(url); err == nil {
		resp.Body.Close()
		t.Fatalf("GET after Stop answered %s", resp.Status)
	}
	s.Stop()
}
