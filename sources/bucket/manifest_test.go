package bucket

import (
	"math/bits"
	"strings"
	"testing"
)

// TestDecodeManifest: manifests as nbdloop writes them are read back; any
// field out of bounds, unknown or of the wrong type is refused.
func TestDecodeManifest(t *testing.T) {
	good := manifest{Format: formatName, Version: formatVersion, Size: 1 << 30, ObjectSize: DefaultObjectSize}
	for _, c := range []struct {
		name, in, wantErr string
	}{
		{"as written", string(good.encode()), ""},
		{"largest", `{"format":"nbdloop-bucket","version":1,"size":9223372036854775296,"object_size":67108864}`, ""},
		{"smallest", `{"format":"nbdloop-bucket","version":1,"size":512,"object_size":4096}`, ""},
		{"not json", "manifest", "not valid"},
		{"unknown field", `{"format":"nbdloop-bucket","version":1,"size":512,"object_size":4096,"x":1}`, "not valid"},
		{"other format", `{"format":"qcow2","version":1,"size":512,"object_size":4096}`, "not an nbdloop disk"},
		{"version 2", `{"format":"nbdloop-bucket","version":2,"size":512,"object_size":4096}`, "version 2"},
		{"size 0", `{"format":"nbdloop-bucket","version":1,"size":0,"object_size":4096}`, "size 0"},
		{"size negative", `{"format":"nbdloop-bucket","version":1,"size":-512,"object_size":4096}`, "size -512"},
		{"size unaligned", `{"format":"nbdloop-bucket","version":1,"size":1000,"object_size":4096}`, "size 1000"},
		{"size 2^63-1", `{"format":"nbdloop-bucket","version":1,"size":9223372036854775807,"object_size":4096}`, "size 9223372036854775807"},
		{"size past int64", `{"format":"nbdloop-bucket","version":1,"size":9223372036854775808,"object_size":4096}`, "not valid"},
		{"object size 3 KiB", `{"format":"nbdloop-bucket","version":1,"size":512,"object_size":3072}`, "object size 3072"},
		{"object size 128 MiB", `{"format":"nbdloop-bucket","version":1,"size":512,"object_size":134217728}`, "object size 134217728"},
		{"size a string", `{"format":"nbdloop-bucket","version":1,"size":"512","object_size":4096}`, "not valid"},
	} {
		_, err := decodeManifest([]byte(c.in))
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%s: %v, want no error", c.name, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s: %v, want an error containing %q", c.name, err, c.wantErr)
		}
	}
}

// FuzzManifest: no manifest read from a bucket makes decodeManifest panic,
// and what it accepts has a geometry the Source can be sized by: a
// power-of-two chunk size in bounds, a size a multiple of 512 below 2^63,
// and a chunk count that fits in an int64. An accepted manifest encodes
// back to one that decodes the same.
func FuzzManifest(f *testing.F) {
	for _, s := range []string{
		`{"format":"nbdloop-bucket","version":1,"size":1073741824,"object_size":4194304}`,
		`{"format":"nbdloop-bucket","version":1,"size":9223372036854775296,"object_size":4096}`,
		`{"format":"nbdloop-bucket","version":1,"size":512,"object_size":67108864}`,
		`{"format":"nbdloop-bucket","version":1,"size":-9223372036854775808,"object_size":-1}`,
		`{"format":"nbdloop-bucket","version":1,"size":1e400,"object_size":4096}`,
		`{"format":"nbdloop-bucket","version":1,"size":512,"object_size":4096}{}`,
		`{"format":"nbdloop-bucket","format":"x","version":1,"size":512,"object_size":4096}`,
		`[]`, `null`, ``, "\x00\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeManifest(b)
		if err != nil {
			return
		}
		if m.ObjectSize < MinObjectSize || m.ObjectSize > MaxObjectSize || bits.OnesCount64(uint64(m.ObjectSize)) != 1 {
			t.Fatalf("accepted object size %d", m.ObjectSize)
		}
		if m.Size <= 0 || m.Size > MaxSize || m.Size%512 != 0 {
			t.Fatalf("accepted size %d", m.Size)
		}
		if chunks := (m.Size-1)/m.ObjectSize + 1; chunks <= 0 {
			t.Fatalf("size %d in chunks of %d: %d chunks", m.Size, m.ObjectSize, chunks)
		}
		again, err := decodeManifest(m.encode())
		if err != nil || again != m {
			t.Fatalf("%+v encodes to %q, which decodes to %+v, %v", m, m.encode(), again, err)
		}
	})
}
