package lzma2

import (
	"bytes"
	"io"
	"os/exec"
	"testing"

	"github.com/ulikunitz/xz/lzma"
)

// fuzzOut bounds what a fuzz input may decode to: 5 bytes of an LZMA
// chunk can stand for 2 MiB.
const fuzzOut = 1 << 20

// FuzzLZMA2 decodes arbitrary input: an error or output, never a panic or
// a hang; output that decodes without error must be what ulikunitz/xz
// decodes too. The first byte picks the dictionary size (4 KiB to 32 KiB,
// so that the dictionary wraps) and the size of the reads. Seeds: the
// files in testdata/fuzz/FuzzLZMA2 and, with the xz tool, small streams
// of each kind of data.
func FuzzLZMA2(f *testing.F) {
	if _, err := exec.LookPath("xz"); err == nil {
		for _, c := range []struct {
			first byte // dictionary and read size
			data  []byte
			opts  string
		}{
			{0x40, text(3000, 5), "preset=6,dict=4096"},
			{0x00, random(300, 5), "preset=0,dict=4096"},
			{0x05, mix(9000, 5), "preset=1,lc=0,lp=2,pb=4,dict=8192"},
			{0x80, make([]byte, 20000), "preset=9e,dict=4096"},
			{0x0E, binaries(5000), "preset=6,lc=4,lp=0,pb=0,dict=16384"},
		} {
			f.Add(append([]byte{c.first}, xzRaw(f, c.data, c.opts)...))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		dictCap := 4096 << (b[0] & 3)
		bufSize := 1 + int(b[0]>>2)*300
		in := b[1:]
		z, err := NewReader(bytes.NewReader(in), dictCap)
		if err != nil {
			t.Fatal(err)
		}
		var out []byte
		buf := make([]byte, bufSize)
		for len(out) < fuzzOut {
			n, err := z.Read(buf)
			if n > len(buf) {
				t.Fatalf("Read returned %d for %d bytes", n, len(buf))
			}
			out = append(out, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				return
			}
		}
		if len(out) >= fuzzOut {
			return
		}
		r, err := lzma.Reader2Config{DictCap: dictCap}.NewReader2(bytes.NewReader(in))
		if err != nil {
			return
		}
		want, err := io.ReadAll(io.LimitReader(r, fuzzOut))
		if err == nil && !bytes.Equal(out, want) {
			t.Fatalf("decoded %d bytes, ulikunitz %d, differing at %d", len(out), len(want), firstDiff(out, want))
		}
	})
}

// FuzzRoundTrip compresses arbitrary data with ulikunitz/xz's writer and
// decodes it back.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("hello, hello, hello world"), uint8(0))
	f.Add(text(5000, 3), uint8(1))
	f.Add(mix(20000, 3), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, dict uint8) {
		dictCap := 4096 << (dict & 3)
		var comp bytes.Buffer
		w, err := lzma.Writer2Config{DictCap: dictCap}.NewWriter2(&comp)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		src := bytes.NewReader(comp.Bytes())
		got, err := decodeAll(src, dictCap, 1+int(dict)*17)
		if err != nil {
			t.Fatalf("%d bytes: %v", len(data), err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%d bytes decode to %d, differing at %d", len(data), len(got), firstDiff(got, data))
		}
		if src.Len() != 0 {
			t.Fatalf("%d bytes left unread after the end marker", src.Len())
		}
	})
}
