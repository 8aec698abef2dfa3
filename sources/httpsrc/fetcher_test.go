package httpsrc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

// fakeFetcher answers with its answer function; calls counts the requests.
type fakeFetcher struct {
	answer func(n int64, off, end int64) (Answer, error)
	calls  atomic.Int64
	closed atomic.Bool
}

func (f *fakeFetcher) Fetch(ctx context.Context, off, end int64) (Answer, error) {
	return f.answer(f.calls.Add(1), off, end)
}

func (f *fakeFetcher) Close() { f.closed.Store(true) }

// honest answers [off, end) of data with ETag "e".
func honest(data []byte, off, end int64) Answer {
	return Answer{Body: io.NopCloser(bytes.NewReader(data[off:end])), Length: end - off, ETag: `"e"`,
		ContentRange: fmt.Sprintf("bytes %d-%d/%d", off, end-1, len(data))}
}

// TestFetcher: an Object made by NewObject reads through its Fetcher with
// the checks, retries and pin of range requests.
func TestFetcher(t *testing.T) {
	data := imagetest.Data(256<<10, 31)
	tests := []struct {
		name     string
		answer   func(n, off, end int64) (Answer, error)
		want     string // "" for the bytes; else a substring of the error
		replaced bool
	}{
		{"honest", func(n, off, end int64) (Answer, error) { return honest(data, off, end), nil }, "", false},
		{"transient, then honest", func(n, off, end int64) (Answer, error) {
			if n == 1 {
				return Answer{}, Transient(errors.New("503 SlowDown"))
			}
			return honest(data, off, end), nil
		}, "", false},
		{"transient forever", func(n, off, end int64) (Answer, error) {
			return Answer{}, Transient(errors.New("503 SlowDown"))
		}, "503 SlowDown (gave up after", false},
		{"failed", func(n, off, end int64) (Answer, error) { return Answer{}, errors.New("access denied") }, "access denied", false},
		{"replaced", func(n, off, end int64) (Answer, error) { return Answer{}, Replaced("412 to If-Match") }, "replaced", true},
		{"another ETag", func(n, off, end int64) (Answer, error) {
			a := honest(data, off, end)
			a.ETag = `"other"`
			return a, nil
		}, "replaced", true},
		{"another size", func(n, off, end int64) (Answer, error) {
			a := honest(data, off, end)
			a.ContentRange = fmt.Sprintf("bytes %d-%d/%d", off, end-1, len(data)+1)
			return a, nil
		}, "replaced", true},
		{"another range", func(n, off, end int64) (Answer, error) {
			a := honest(data, off, end)
			a.ContentRange = fmt.Sprintf("bytes %d-%d/%d", off+1, end, len(data))
			return a, nil
		}, "the server sent bytes", false},
		{"short body", func(n, off, end int64) (Answer, error) {
			a := honest(data, off, end)
			if n == 1 {
				a.Body = io.NopCloser(bytes.NewReader(data[off : end-100]))
			}
			return a, nil
		}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeFetcher{answer: tt.answer}
			var log logLines
			o, err := NewObject("s3://b/k", int64(len(data)), `"e"`, f, Options{BlockSize: 64 << 10, Deadline: 500 * time.Millisecond, Logf: log.logf})
			if err != nil {
				t.Fatal(err)
			}
			src, err := o.Source(nil)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(data))
			_, err = src.ReadAt(got, 0)
			switch {
			case tt.want == "" && (err != nil || !bytes.Equal(got, data)):
				t.Errorf("ReadAt: %v, or bytes that differ", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, syscall.EIO)):
				t.Errorf("ReadAt: %v, want EIO with %q", err, tt.want)
			}
			if errors.Is(err, ErrReplaced) != tt.replaced || (len(log.get()) == 1) != tt.replaced {
				t.Errorf("ReadAt: %v, logged %q; want replaced %v", err, log.get(), tt.replaced)
			}
			src.Close()
			if !f.closed.Load() {
				t.Error("Close did not close the Fetcher")
			}
		})
	}
}

// TestNewObject: an empty object, and one that is not the pin, are
// refused, and the Fetcher closed.
func TestNewObject(t *testing.T) {
	for _, tt := range []struct {
		size       int64
		etag, pin  string
		want, warn string
	}{
		{0, `"e"`, "", "the object is empty", ""},
		{10, `"e"`, `etag:"f"`, `changed in the store since it was attached (it was etag:"f", it is etag:"e" now)`, ""},
		{10, `"e"`, `etag:"e"`, "", ""},
		{10, "", "", "", "no ETag"},
	} {
		f := &fakeFetcher{}
		o, err := NewObject("s3://b/k", tt.size, tt.etag, f, Options{Pin: tt.pin})
		switch {
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !f.closed.Load()):
			t.Errorf("NewObject(%d, %s, pin %s) = %v (closed %v), want %q and the fetcher closed", tt.size, tt.etag, tt.pin, err, f.closed.Load(), tt.want)
		case tt.want == "" && err != nil:
			t.Errorf("NewObject(%d, %s, pin %s) = %v", tt.size, tt.etag, tt.pin, err)
		case tt.want == "" && !strings.Contains(strings.Join(o.Warnings(), "\n"), tt.warn):
			t.Errorf("NewObject(%d, %s) warnings %q, want %q", tt.size, tt.etag, o.Warnings(), tt.warn)
		}
	}
}
