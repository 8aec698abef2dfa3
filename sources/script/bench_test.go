package script

import (
	"fmt"
	"testing"
)

// BenchmarkReadAt measures one request's cost in each mode with the
// example programs serving a file: nbdkit mode forks sh and dd per
// request, persistent mode is a pipe round trip to one python3 process.
func BenchmarkReadAt(b *testing.B) {
	const size = 16 << 20
	for _, mode := range []struct{ name, path, opts string }{
		{"exec", "../../scripts/examples/ramdisk.sh", ""},
		{"persistent", "../../scripts/examples/file-persistent.py", "persistent"},
	} {
		for _, n := range []int{4 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("%s/%dK", mode.name, n>>10), func(b *testing.B) {
				diskPath, _ := disk(b, b.TempDir(), size)
				opts, err := ParseOptions(mode.opts)
				if err != nil {
					b.Fatal(err)
				}
				opts.Params = []Param{{"file", diskPath}}
				s, err := Open(mode.path, opts)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				p := make([]byte, n)
				b.SetBytes(int64(n))
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					off := int64(i*n) % (size - int64(n))
					if _, err := s.ReadAt(p, off&^4095); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
