package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/bytesize"
	"github.com/nbdloop/nbdloop/sources"
	"github.com/nbdloop/nbdloop/sources/internal/imagetest"
)

// spec describes an image that build lays out byte by byte, so that a
// test can give any header field any value: header and extensions in
// cluster 0, the refcount table in cluster 1, one refcount block in
// cluster 2, the L1 table from cluster 3 on, nothing allocated (every
// cluster reads from the backing file, or as zeros).
type spec struct {
	clusterBits uint32 // 0: 16
	size        uint64 // 0: 1 MiB
	backing     string
	backingFmt  string
	// patch changes the built bytes (the header's hostile fields).
	patch func(b []byte)
	// fileSize, if larger than what build makes, extends the file
	// (sparse) so that huge tables lie inside it.
	fileSize int64
}

// Header field offsets, for patches.
const (
	hBackingOffset = 8
	hBackingSize   = 16
	hClusterBits   = 20
	hSize          = 24
	hL1Size        = 36
	hL1Offset      = 40
	hRefOffset     = 48
	hRefClusters   = 56
	hNbSnapshots   = 60
	hSnapOffset    = 64
	hIncompatible  = 72
	hRefOrder      = 96
	hHeaderLength  = 100
)

func (s spec) build() []byte {
	cb := s.clusterBits
	if cb == 0 {
		cb = 16
	}
	size := s.size
	if size == 0 {
		size = 1 << 20
	}
	cs := uint64(1) << cb
	l2Entries := cs / 8
	l1Size := max(1, ((size+cs-1)/cs+l2Entries-1)/l2Entries)
	l1Clusters := (l1Size*8 + cs - 1) / cs
	b := make([]byte, (3+l1Clusters)*cs)
	be := binary.BigEndian
	be.PutUint32(b[0:], magic)
	be.PutUint32(b[4:], 3)
	be.PutUint32(b[hClusterBits:], cb)
	be.PutUint64(b[hSize:], size)
	be.PutUint32(b[hL1Size:], uint32(l1Size))
	be.PutUint64(b[hL1Offset:], 3*cs)
	be.PutUint64(b[hRefOffset:], cs)
	be.PutUint32(b[hRefClusters:], 1)
	be.PutUint32(b[hRefOrder:], 4)
	be.PutUint32(b[hHeaderLength:], v3HeaderLen)
	off := uint64(v3HeaderLen)
	if s.backingFmt != "" {
		be.PutUint32(b[off:], extBackingFmt)
		be.PutUint32(b[off+4:], uint32(len(s.backingFmt)))
		copy(b[off+8:], s.backingFmt)
		off += 8 + (uint64(len(s.backingFmt))+7)&^7
	}
	off += 8 // end of extensions
	if s.backing != "" {
		be.PutUint64(b[hBackingOffset:], off)
		be.PutUint32(b[hBackingSize:], uint32(len(s.backing)))
		copy(b[off:], s.backing)
	}
	be.PutUint64(b[cs:], 2*cs)
	for c := range 3 + l1Clusters {
		be.PutUint16(b[2*cs+2*c:], 1)
	}
	if s.patch != nil {
		s.patch(b)
	}
	return b
}

// write builds s into dir/name and returns the path.
func (s spec) write(t *testing.T, dir, name string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	writeFile(t, path, s.build())
	if s.fileSize > 0 {
		if err := os.Truncate(path, s.fileSize); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func put64(off int, v uint64) func([]byte) {
	return func(b []byte) { binary.BigEndian.PutUint64(b[off:], v) }
}

func put32(off int, v uint32) func([]byte) {
	return func(b []byte) { binary.BigEndian.PutUint32(b[off:], v) }
}

func patches(ps ...func([]byte)) func([]byte) {
	return func(b []byte) {
		for _, p := range ps {
			p(b)
		}
	}
}

// TestHostileQcow2 opens images whose header fields are extreme (0, 1,
// max, max-1, pairs that wrap when added or multiplied), whose tables
// need more memory than the budget, and whose backing files lead outside
// the image's directory, to a FIFO, a device, a loop or a chain too deep.
// Each must fail Open at once with a one-line error saying why, or serve
// the right bytes; the heap must grow by less than the budget; nothing
// outside the image's directory may be opened; and the budget must be
// wholly given back after Close or a failed Open.
func TestHostileQcow2(t *testing.T) {
	const mib = 1 << 20
	base := testData(mib, 16)
	const cs = 1 << 16
	cases := []struct {
		name string
		// make writes the images into dir, with out the directory beside
		// it and canary the file there, and returns the image to open.
		make     func(t *testing.T, dir, out, canary string) string
		readOnly bool
		allow    []string // Options.Named.Allow
		budget   int64    // 0: 64 MiB
		// want are substrings of the error ($DIR: the image directory,
		// $OUT: the one beside it); none: Open must succeed and serve
		// data (nil: zeros).
		want []string
		data []byte
		// writeErr: after a successful Open, a write of 64 KiB at 0 must
		// fail with an error containing it, or ("" and write set) read
		// back as written.
		write    bool
		writeErr string
	}{
		{name: "backing offset+size wraps (0xFFFFFFFFFFFFFFF0+0x20)", make: func(t *testing.T, dir, out, canary string) string {
			return spec{backing: "base.raw", patch: patches(put64(hBackingOffset, 0xFFFFFFFFFFFFFFF0), put32(hBackingSize, 0x20))}.write(t, dir, "a.qcow2")
		}, want: []string{"backing file name at 18446744073709551600+32 lies outside the first cluster"}},
		{name: "backing offset max", make: func(t *testing.T, dir, out, canary string) string {
			return spec{backing: "base.raw", patch: put64(hBackingOffset, 1<<64-1)}.write(t, dir, "a.qcow2")
		}, want: []string{"lies outside the first cluster"}},
		{name: "backing name ends one past the cluster", make: func(t *testing.T, dir, out, canary string) string {
			return spec{backing: "base.raw", patch: patches(put64(hBackingOffset, cs-7), put32(hBackingSize, 8))}.write(t, dir, "a.qcow2")
		}, want: []string{"lies outside the first cluster"}},
		{name: "backing name size max", make: func(t *testing.T, dir, out, canary string) string {
			return spec{backing: "base.raw", patch: put32(hBackingSize, 1<<32-1)}.write(t, dir, "a.qcow2")
		}, want: []string{"backing file name length 4294967295 is outside 1..1023"}},
		{name: "cluster_bits 0", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put32(hClusterBits, 0)}.write(t, dir, "a.qcow2")
		}, want: []string{"cluster_bits 0 is outside 9..21"}},
		{name: "cluster_bits 22", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put32(hClusterBits, 22)}.write(t, dir, "a.qcow2")
		}, want: []string{"cluster_bits 22 is outside 9..21"}},
		{name: "cluster_bits max", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put32(hClusterBits, 1<<32-1)}.write(t, dir, "a.qcow2")
		}, want: []string{"cluster_bits 4294967295 is outside"}},
		{name: "virtual size 2^63-1", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put64(hSize, 1<<63-1)}.write(t, dir, "a.qcow2")
		}, want: []string{"above 2^62"}},
		{name: "virtual size max", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put64(hSize, 1<<64-1)}.write(t, dir, "a.qcow2")
		}, want: []string{"above 2^62"}},
		{name: "virtual size 2^62, L1 of 1 entry", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put64(hSize, 1<<62)}.write(t, dir, "a.qcow2")
		}, want: []string{"L1 table of 1 entries is too small"}},
		{name: "L1 size max", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put32(hL1Size, 1<<32-1)}.write(t, dir, "a.qcow2")
		}, want: []string{"L1 table of 4294967295 entries is larger than 32 MiB"}},
		{name: "L1 of 32 MiB, over a 16 MiB budget", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put32(hL1Size, 4<<20), fileSize: 3*cs + 32*mib}.write(t, dir, "a.qcow2")
		}, budget: 16 * mib, want: []string{"the L1 table of $DIR/a.qcow2 (4194304 entries) needs 32 MiB of memory, beyond the metadata limit of 16 MiB"}},
		{name: "L1 of 32 MiB, within a 64 MiB budget", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put32(hL1Size, 4<<20), fileSize: 3*cs + 32*mib}.write(t, dir, "a.qcow2")
		}, readOnly: true},
		{name: "L1 past the end of the file", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put32(hL1Size, 4<<20)}.write(t, dir, "a.qcow2")
		}, want: []string{"L1 table at 196608+33554432 lies past the end"}},
		{name: "L1 offset max-511 (wraps with its size)", make: func(t *testing.T, dir, out, canary string) string {
			return spec{clusterBits: 9, patch: put64(hL1Offset, 1<<64-512)}.write(t, dir, "a.qcow2")
		}, want: []string{"L1 table at 18446744073709551104+"}},
		{name: "L1 offset 0", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put64(hL1Offset, 0)}.write(t, dir, "a.qcow2")
		}, want: []string{"L1 table offset 0 is not a non-zero multiple"}},
		{name: "refcount table clusters max", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put32(hRefClusters, 1<<32-1)}.write(t, dir, "a.qcow2")
		}, want: []string{"refcount table of 4294967295 clusters is empty or larger than 8 MiB"}},
		{name: "refcount table clusters 0", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put32(hRefClusters, 0)}.write(t, dir, "a.qcow2")
		}, want: []string{"refcount table of 0 clusters is empty"}},
		{name: "refcount table of 8 MiB, over a 4 MiB budget", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: patches(put64(hRefOffset, 4*cs), put32(hRefClusters, 128)), fileSize: 4*cs + 8*mib}.write(t, dir, "a.qcow2")
		}, budget: 4 * mib, want: []string{"the refcount table of $DIR/a.qcow2 (128 clusters) needs 8 MiB of memory, beyond the metadata limit of 4 MiB"}},
		{name: "refcount table offset max", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put64(hRefOffset, 1<<64-cs)}.write(t, dir, "a.qcow2")
		}, want: []string{"refcount table at 18446744073709486080+65536 lies past the end"}},
		{name: "refcount_order max", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put32(hRefOrder, 1<<32-1)}.write(t, dir, "a.qcow2")
		}, want: []string{"refcount_order 4294967295 is above 6"}},
		{name: "snapshots max", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: patches(put32(hNbSnapshots, 1<<32-1), put64(hSnapOffset, cs))}.write(t, dir, "a.qcow2")
		}, want: []string{"4294967295 snapshots, more than 65536"}},
		{name: "snapshot table offset max", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: patches(put32(hNbSnapshots, 1), put64(hSnapOffset, 1<<64-cs))}.write(t, dir, "a.qcow2")
		}, want: []string{"snapshot table offset 18446744073709486080 is unaligned or past the end"}},
		{name: "header_length max-7", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put32(hHeaderLength, 1<<32-8)}.write(t, dir, "a.qcow2")
		}, want: []string{"header_length 4294967288 is not a multiple of 8 in 104..65536"}},
		{name: "header_length past the file", make: func(t *testing.T, dir, out, canary string) string {
			path := spec{patch: put32(hHeaderLength, 4096)}.write(t, dir, "a.qcow2")
			if err := os.Truncate(path, 1024); err != nil {
				t.Fatal(err)
			}
			return path
		}, want: []string{"header_length 4096 is past the end of the file"}},
		{name: "extension length max", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: patches(put32(v3HeaderLen, extBackingFmt), put32(v3HeaderLen+4, 1<<32-1))}.write(t, dir, "a.qcow2")
		}, want: []string{"header extension 0xe2792aca of 4294967295 bytes runs past the header area"}},
		{name: "extension length max-6 (wraps when padded to 8)", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: patches(put32(v3HeaderLen, extFeatureNames), put32(v3HeaderLen+4, 1<<32-7))}.write(t, dir, "a.qcow2")
		}, want: []string{"of 4294967289 bytes runs past the header area"}},
		{name: "extension running into the backing name", make: func(t *testing.T, dir, out, canary string) string {
			return spec{backing: "base.raw", backingFmt: "raw", patch: put32(v3HeaderLen+4, 17)}.write(t, dir, "a.qcow2")
		}, want: []string{"runs past the header area"}},
		{name: "backing name with a newline", make: func(t *testing.T, dir, out, canary string) string {
			return spec{backing: "base.raw\nsecond line", backingFmt: "raw"}.write(t, dir, "a.qcow2")
		}, want: []string{`backing file "base.raw\nsecond line" of $DIR/a.qcow2: a control character in a file name`}},
		{name: "backing format of 1000 bytes", make: func(t *testing.T, dir, out, canary string) string {
			return spec{backing: "base.raw", backingFmt: strings.Repeat("r", 1000)}.write(t, dir, "a.qcow2")
		}, want: []string{"backing format name of 1000 bytes, more than 15"}},
		{name: "feature name table filling the cluster", make: func(t *testing.T, dir, out, canary string) string {
			return spec{clusterBits: 21, patch: func(b []byte) {
				n := (1<<21 - v3HeaderLen - 16) / 48 * 48
				binary.BigEndian.PutUint32(b[v3HeaderLen:], extFeatureNames)
				binary.BigEndian.PutUint32(b[v3HeaderLen+4:], uint32(n))
				for i := 0; i < n; i += 48 {
					e := b[v3HeaderLen+8+i:]
					e[0], e[1] = byte(i/48), byte(i/48>>8)
					copy(e[2:48], "a feature name\nover two lines, 46 bytes long..")
				}
				binary.BigEndian.PutUint64(b[hIncompatible:], 1<<63)
				e := b[v3HeaderLen+8:]
				e[0], e[1] = 0, 63
			}}.write(t, dir, "a.qcow2")
		}, want: []string{`incompatible features bit 63 ("a feature name\nover two lines, 46 bytes long..")`}},
		{name: "refcount table entry past 2^56, written", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put64(cs, 1<<60|2*cs)}.write(t, dir, "a.qcow2")
		}, write: true, writeErr: "refcount table entry 0 is 0x1000000000020000, past the 2^56 bytes"},
		{name: "refcount table entry unaligned, written", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put64(cs, 2*cs+512)}.write(t, dir, "a.qcow2")
		}, write: true, writeErr: "refcount block at unaligned offset 0x20200"},
		{name: "L1 entry to the last cluster a qcow2 file can have, written", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put64(3*cs, entryCopied|(offsetMask&^(cs-1)))}.write(t, dir, "a.qcow2")
		}, write: true, writeErr: "L2 table at 0xffffffffff0000 lies past the end of the file"},
		{name: "refcount table entry past the end of the file, written", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put64(cs, 1<<40)}.write(t, dir, "a.qcow2")
		}, write: true, writeErr: "refcount block at 0x10000000000 lies past the end of the file"},
		{name: "L1 entry to the refcount table, read", make: func(t *testing.T, dir, out, canary string) string {
			return spec{patch: put64(3*cs, entryCopied|cs)}.write(t, dir, "a.qcow2")
		}, readOnly: true, data: func() []byte {
			// The refcount table read as an L2 table maps guest cluster 0
			// to the refcount block.
			b := make([]byte, mib)
			for c := range 4 {
				binary.BigEndian.PutUint16(b[2*c:], 1)
			}
			return b
		}()},
		{name: "refcount table of 128 clusters, written", make: func(t *testing.T, dir, out, canary string) string {
			return spec{clusterBits: 9, patch: put32(hRefClusters, 128), fileSize: 1 << 20}.write(t, dir, "a.qcow2")
		}, write: true},
		{name: "backing absolute, to the canary", make: func(t *testing.T, dir, out, canary string) string {
			return spec{backing: canary, backingFmt: "raw"}.write(t, dir, "a.qcow2")
		}, want: []string{"backing file of $DIR/a.qcow2: \"$OUT/canary\": outside $DIR (allow its directory with --allow-path $OUT)"}},
		{name: "backing ../outside/canary", make: func(t *testing.T, dir, out, canary string) string {
			return spec{backing: "../outside/canary", backingFmt: "raw"}.write(t, dir, "a.qcow2")
		}, want: []string{"\"../outside/canary\" ($OUT/canary): outside $DIR", "--allow-path $OUT"}},
		{name: "backing ../ from a subdirectory image, out", make: func(t *testing.T, dir, out, canary string) string {
			mkdir(t, filepath.Join(dir, "sub"))
			spec{backing: "../../outside/canary", backingFmt: "raw"}.write(t, dir, "sub/mid.qcow2")
			return spec{backing: "sub/mid.qcow2", backingFmt: "qcow2"}.write(t, dir, "a.qcow2")
		}, want: []string{"backing file of $DIR/sub/mid.qcow2: \"../../outside/canary\" ($OUT/canary): outside $DIR"}},
		{name: "backing a symlink leading out", make: func(t *testing.T, dir, out, canary string) string {
			symlink(t, canary, filepath.Join(dir, "link.raw"))
			return spec{backing: "link.raw", backingFmt: "raw"}.write(t, dir, "a.qcow2")
		}, want: []string{"\"link.raw\" ($DIR/link.raw): a symbolic link leads outside $DIR"}},
		{name: "backing a relative symlink leading out through a directory", make: func(t *testing.T, dir, out, canary string) string {
			symlink(t, "../outside", filepath.Join(dir, "d"))
			return spec{backing: "d/canary", backingFmt: "raw"}.write(t, dir, "a.qcow2")
		}, want: []string{"a symbolic link leads outside $DIR"}},
		{name: "backing a FIFO", make: func(t *testing.T, dir, out, canary string) string {
			if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
				t.Fatal(err)
			}
			return spec{backing: "fifo", backingFmt: "raw"}.write(t, dir, "a.qcow2")
		}, want: []string{"\"fifo\" ($DIR/fifo): is not a regular file (a FIFO)"}},
		{name: "backing /dev/zero", make: func(t *testing.T, dir, out, canary string) string {
			return spec{backing: "/dev/zero", backingFmt: "raw"}.write(t, dir, "a.qcow2")
		}, want: []string{"\"/dev/zero\": outside $DIR (allow its directory with --allow-path /dev)"}},
		{name: "backing /dev/zero with /dev allowed", make: func(t *testing.T, dir, out, canary string) string {
			return spec{backing: "/dev/zero", backingFmt: "raw"}.write(t, dir, "a.qcow2")
		}, allow: []string{"/dev"}, want: []string{"\"/dev/zero\": is not a regular file (a character device)"}},
		{name: "backing a directory", make: func(t *testing.T, dir, out, canary string) string {
			mkdir(t, filepath.Join(dir, "sub"))
			return spec{backing: "sub", backingFmt: "raw"}.write(t, dir, "a.qcow2")
		}, want: []string{"is not a regular file (a directory)"}},
		{name: "backing json:", make: func(t *testing.T, dir, out, canary string) string {
			return spec{backing: `json:{"file.filename":"/etc/shadow"}`}.write(t, dir, "a.qcow2")
		}, want: []string{"only plain file names are"}},
		{name: "backing loop a -> b -> a", make: func(t *testing.T, dir, out, canary string) string {
			spec{backing: "a.qcow2", backingFmt: "qcow2"}.write(t, dir, "b.qcow2")
			return spec{backing: "b.qcow2", backingFmt: "qcow2"}.write(t, dir, "a.qcow2")
		}, want: []string{"backing chain loops back to $DIR/a.qcow2"}},
		{name: "backing loop to itself, probed", make: func(t *testing.T, dir, out, canary string) string {
			return spec{backing: "a.qcow2"}.write(t, dir, "a.qcow2")
		}, want: []string{"backing chain loops back"}},
		{name: "chain 17 deep", make: func(t *testing.T, dir, out, canary string) string {
			writeFile(t, filepath.Join(dir, "base.raw"), base)
			next := "base.raw"
			for i := range 17 {
				name := fmt.Sprintf("l%d.qcow2", i)
				spec{backing: next}.write(t, dir, name)
				next = name
			}
			return filepath.Join(dir, next)
		}, want: []string{"backing chain is deeper than 16 images"}},
		{name: "chain 16 deep, within the budget", make: func(t *testing.T, dir, out, canary string) string {
			writeFile(t, filepath.Join(dir, "base.raw"), base)
			next := "base.raw"
			for i := range 15 {
				name := fmt.Sprintf("l%d.qcow2", i)
				spec{backing: next, clusterBits: 21}.write(t, dir, name)
				next = name
			}
			return filepath.Join(dir, next)
		}, data: base},
		{name: "chain 16 deep of 2 MiB clusters, each with data, default budget", make: func(t *testing.T, dir, out, canary string) string {
			writeFile(t, filepath.Join(dir, "base.raw"), base)
			next, fmt_ := "base.raw", "raw"
			for i := range 15 {
				name := filepath.Join(dir, fmt.Sprintf("l%d.qcow2", i))
				qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", "-b", filepath.Base(next), "-F", fmt_, name)
				qemuImg(t, "io", "-c", fmt.Sprintf("write -P %d %d 4k", i+1, i*64<<10), name)
				next, fmt_ = name, "qcow2"
			}
			return next
		}, budget: sources.DefaultMetadataLimit, data: func() []byte {
			b := bytes.Clone(base)
			for i := range 15 {
				copy(b[i*64<<10:], bytes.Repeat([]byte{byte(i + 1)}, 4096))
			}
			return b
		}()},
		{name: "backing in a subdirectory (qemu-img create -b sub/base.raw)", make: func(t *testing.T, dir, out, canary string) string {
			mkdir(t, filepath.Join(dir, "sub"))
			writeFile(t, filepath.Join(dir, "sub", "base.raw"), base)
			qemuImg(t, "create", "-q", "-f", "qcow2", "-b", "sub/base.raw", "-F", "raw", filepath.Join(dir, "a.qcow2"))
			return filepath.Join(dir, "a.qcow2")
		}, data: base},
		{name: "backing ../ from a subdirectory image, staying inside", make: func(t *testing.T, dir, out, canary string) string {
			mkdir(t, filepath.Join(dir, "sub"))
			writeFile(t, filepath.Join(dir, "base.raw"), base)
			spec{backing: "../base.raw", backingFmt: "raw"}.write(t, dir, "sub/mid.qcow2")
			return spec{backing: "sub/mid.qcow2", backingFmt: "qcow2"}.write(t, dir, "a.qcow2")
		}, data: base},
	}
	worst, worstName := uint64(0), ""
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := imagetest.NewOutside(t)
			path := c.make(t, o.Dir, o.Out, o.Canary)
			o.Opened() // qemu-img's own opens while making the images
			limit := c.budget
			if limit == 0 {
				limit = 64 << 20
			}
			budget := sources.NewBudget(limit)
			opts := Options{ReadOnly: c.readOnly, Budget: budget}
			opts.Named.Allow = c.allow
			var im *Image
			var err error
			var got []byte
			alloc := imagetest.Allocated(func() {
				done := make(chan struct{})
				go func() {
					defer close(done)
					im, err = Open(path, opts)
					if err == nil {
						got = make([]byte, min(im.Size(), int64(len(base))))
						if _, rerr := im.ReadAt(got, 0); rerr != nil {
							t.Errorf("ReadAt: %v", rerr)
						}
						if c.write {
							hostileWrite(t, im, c.writeErr)
						}
					}
				}()
				select {
				case <-done:
				case <-time.After(20 * time.Second):
					t.Fatalf("Open did not return within 20s")
				}
			})
			if alloc > imagetest.AllocBound(int64(limit)) {
				t.Errorf("Open and a read allocated %s, more than the budget of %s", bytesize.Words(int64(alloc)), bytesize.Words(limit))
			}
			if alloc > worst {
				worst, worstName = alloc, c.name
			}
			t.Logf("allocated %s, charged %s", bytesize.Words(int64(alloc)), bytesize.Words(budget.Used()))
			if err != nil {
				msg := err.Error()
				if strings.Contains(msg, "\n") {
					t.Errorf("error of several lines: %q", msg)
				}
				if len(c.want) == 0 {
					t.Fatalf("Open: %v", err)
				}
				for _, w := range c.want {
					w = strings.NewReplacer("$DIR", o.Dir, "$OUT", o.Out).Replace(w)
					if !strings.Contains(msg, w) {
						t.Errorf("Open error\n%s\ndoes not contain\n%s", msg, w)
					}
				}
				if strings.Contains(msg, ": outside ") || strings.Contains(msg, "leads outside") || strings.Contains(msg, "not a regular file") {
					if !errors.Is(err, os.ErrPermission) {
						t.Errorf("a confined backing file's error is not a permission error: %v", err)
					}
				}
			} else {
				if len(c.want) > 0 {
					im.Close()
					t.Fatalf("Open succeeded, want an error containing %q", c.want)
				}
				want := c.data
				if want == nil {
					want = make([]byte, len(got))
				}
				if d := firstDiff(got, want[:len(got)]); d >= 0 {
					t.Errorf("served bytes differ at %d", d)
				}
				if err := im.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}
			if u := budget.Used(); u != 0 {
				t.Errorf("%s of the budget still charged after Close or a failed Open", bytesize.Words(u))
			}
			o.Check(t, c.name)
		})
	}
	t.Logf("most allocated: %s (%s)", bytesize.Words(int64(worst)), worstName)
}

// hostileWrite writes 64 KiB at 0 and reads them back, or checks the
// write's error.
func hostileWrite(t *testing.T, im *Image, wantErr string) {
	p := testData(64<<10, 99)
	_, err := im.WriteAt(p, 0)
	if err == nil {
		err = im.Flush()
	}
	switch {
	case err != nil && wantErr == "":
		t.Errorf("write: %v", err)
	case err != nil && (!strings.Contains(err.Error(), wantErr) || strings.Contains(err.Error(), "\n")):
		t.Errorf("write error\n%s\ndoes not contain\n%s", err, wantErr)
	case err == nil && wantErr != "":
		t.Errorf("write succeeded, want an error containing %q", wantErr)
	case err == nil:
		q := make([]byte, len(p))
		if _, err := im.ReadAt(q, 0); err != nil || !bytes.Equal(p, q) {
			t.Errorf("read after write: %v, differs at %d", err, firstDiff(p, q))
		}
	}
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}
