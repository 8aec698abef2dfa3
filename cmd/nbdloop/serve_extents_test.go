package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// qemuRun is a run of qemu-img map's JSON, as base:allocation tells it.
type qemuRun struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
	Data   bool  `json:"data"`
	Zero   bool  `json:"zero"`
}

// qemuMap runs qemu-img map --output=json on what args name and returns
// its runs, neighbours that say the same merged, as "start+length:data"
// or "start+length:hole" words.
func qemuMap(t *testing.T, args ...string) string {
	t.Helper()
	out := client(t, exec.Command("qemu-img", append([]string{"map", "--output=json"}, args...)...))
	var runs []qemuRun
	if err := json.Unmarshal([]byte(out), &runs); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	var merged []qemuRun
	for _, r := range runs {
		if n := len(merged); n > 0 && merged[n-1].Data == r.Data && merged[n-1].Zero == r.Zero {
			merged[n-1].Length += r.Length
			continue
		}
		merged = append(merged, r)
	}
	var words []string
	for _, r := range merged {
		kind := "data"
		switch {
		case !r.Data && r.Zero:
			kind = "hole"
		case r.Zero:
			kind = "zero"
		}
		words = append(words, fmt.Sprintf("%d+%d:%s", r.Start, r.Length, kind))
	}
	return strings.Join(words, " ")
}

// nbdinfoMap runs nbdinfo --map --json on uri and returns its extents as
// qemuMap's words (type 3, hole and zero: hole; 2: zero; 0: data).
func nbdinfoMap(t *testing.T, uri string) string {
	t.Helper()
	out := client(t, exec.Command("nbdinfo", "--map", "--json", uri))
	var exts []struct {
		Offset, Length int64
		Type           int
	}
	if err := json.Unmarshal([]byte(out), &exts); err != nil {
		t.Fatalf("nbdinfo --map: %v\n%s", err, out)
	}
	var words []string
	for _, e := range exts {
		kind := map[int]string{0: "data", 2: "zero", 3: "hole"}[e.Type]
		words = append(words, fmt.Sprintf("%d+%d:%s", e.Offset, e.Length, kind))
	}
	return strings.Join(words, " ")
}

// TestServeBlockStatus serves sparse sources and checks, with clients
// nbdloop did not write, that structured replies and base:allocation are
// negotiated and the extents they see are the sources' own: a sparse raw
// file, a memory: export written by qemu-io, and a qcow2 image with
// allocated, zero and unallocated clusters, each compared with what
// qemu-img map says of the source itself. nbdcopy copies the sparse
// export into a sparse file, qemu-img convert and compare still work, and
// a READ that fails comes back as an error.
func TestServeBlockStatus(t *testing.T) {
	tooltest.Require(t, "qemu-img", "qemu-io", "nbdinfo", "nbdcopy", "nbdsh", "truncate")
	dir := t.TempDir()
	bin := filepath.Join(dir, "nbdloop")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	sparse := filepath.Join(dir, "sparse.img")
	client(t, exec.Command("truncate", "-s", "8M", sparse))
	client(t, exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 1M", "-c", "write -P 0xa5 5M 512k", sparse))
	const sparseMap = "0+1048576:hole 1048576+1048576:data 2097152+3145728:hole 5242880+524288:data 5767168+2621440:hole"
	if got := qemuMap(t, "-f", "raw", sparse); got != sparseMap {
		t.Fatalf("the fixture: qemu-img map of the file shows %s, want %s (a file system without holes?)", got, sparseMap)
	}
	sock := func(name string) string { return filepath.Join(dir, name) }

	t.Run("sparse file", func(t *testing.T) {
		s := startServe(t, bin, "--unix", sock("sparse.sock"), sparse)
		uri := s.uri("")
		mustContain(t, "nbdinfo", client(t, exec.Command("nbdinfo", uri)), "using structured packets", "base:allocation", "can_df: true")
		client(t, exec.Command("nbdinfo", "--can", "structured-reply", uri))
		out := client(t, exec.Command("nbdsh", "--base-allocation", "-u", uri, "-c",
			"print(h.get_structured_replies_negotiated(), h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION))"))
		mustContain(t, "nbdsh", out, "True True")
		if got := nbdinfoMap(t, uri); got != sparseMap {
			t.Errorf("nbdinfo --map shows %s, want %s", got, sparseMap)
		}
		if got := qemuMap(t, "-f", "raw", uri); got != sparseMap {
			t.Errorf("qemu-img map over NBD shows %s, want %s", got, sparseMap)
		}
		// nbdcopy skips the holes block status reports: its copy is as
		// sparse as the file.
		copied := filepath.Join(dir, "copied.img")
		client(t, exec.Command("nbdcopy", uri, copied))
		client(t, exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", copied, sparse))
		if got := qemuMap(t, "-f", "raw", copied); got != sparseMap {
			t.Errorf("nbdcopy's copy maps as %s, want %s", got, sparseMap)
		}
		converted := filepath.Join(dir, "converted.qcow2")
		client(t, exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", uri, converted))
		client(t, exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "raw", converted, sparse))
		s.stop()
	})

	t.Run("memory after qemu-io writes", func(t *testing.T) {
		s := startServe(t, bin, "--unix", sock("mem.sock"), "memory:16M")
		uri := s.uri("")
		if got, want := nbdinfoMap(t, uri), "0+16777216:hole"; got != want {
			t.Errorf("nbdinfo --map of a new memory: export shows %s, want %s", got, want)
		}
		client(t, exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0xab 4M 64k", "-c", "write -P 0xcd 12M 8k", uri))
		want := "0+4194304:hole 4194304+65536:data 4259840+8323072:hole 12582912+8192:data 12591104+4186112:hole"
		if got := nbdinfoMap(t, uri); got != want {
			t.Errorf("nbdinfo --map after the writes shows %s, want %s", got, want)
		}
		// A trim punches the hole again.
		client(t, exec.Command("qemu-io", "-f", "raw", "-c", "discard 4M 64k", uri))
		want = "0+12582912:hole 12582912+8192:data 12591104+4186112:hole"
		if got := nbdinfoMap(t, uri); got != want {
			t.Errorf("nbdinfo --map after a discard shows %s, want %s", got, want)
		}
		s.stop()
	})

	t.Run("qcow2", func(t *testing.T) {
		base := filepath.Join(dir, "base.qcow2")
		img := filepath.Join(dir, "top.qcow2")
		client(t, exec.Command("qemu-img", "create", "-q", "-f", "qcow2", base, "8M"))
		client(t, exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 6M 256k", base))
		client(t, exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", img, "8M"))
		client(t, exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 1M 128k", "-c", "write -z 3M 64k", "-c", "write -z 6M 64k", img))
		// Zero clusters (3M, and 6M over the base's data) and
		// unallocated ones are holes alike.
		want := qemuMap(t, "-f", "qcow2", img)
		for _, w := range []string{"0+1048576:hole", "1048576+131072:data", "1179648+5177344:hole", "6356992+196608:data"} {
			if !strings.Contains(want, w) {
				t.Fatalf("the fixture: qemu-img map of the image shows %s, without %s", want, w)
			}
		}
		s := startServe(t, bin, "--unix", sock("qcow2.sock"), "-r", img)
		uri := s.uri("")
		if got := nbdinfoMap(t, uri); got != want {
			t.Errorf("nbdinfo --map shows\n%s\nqemu-img map of the image\n%s", got, want)
		}
		if got := qemuMap(t, "-f", "raw", uri); got != want {
			t.Errorf("qemu-img map over NBD shows\n%s\nqemu-img map of the image\n%s", got, want)
		}
		client(t, exec.Command("qemu-img", "compare", "-f", "raw", "-F", "qcow2", uri, img))
		s.stop()
	})

	// VMDK images made by qemu-img: what nbdinfo --map and qemu-img map
	// see over NBD. qemu reads zeroed grains (GTE 1) as allocated zeros:
	// NBD_STATE_ZERO without NBD_STATE_HOLE, "zero" to both.
	vmdks := []struct {
		name  string
		setup func(img string)
		want  string
	}{
		{
			name: "monolithicSparse with zeroed grains",
			setup: func(img string) {
				client(t, exec.Command("qemu-img", "create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", img, "8M"))
				client(t, exec.Command("qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 1M 1M", "-c", "write -z 3M 128k", "-c", "write -P 0xa5 5M 512k", img))
			},
			want: "0+1048576:hole 1048576+1048576:data 2097152+1048576:hole 3145728+131072:zero 3276800+1966080:hole 5242880+524288:data 5767168+2621440:hole",
		},
		{
			name: "streamOptimized from the sparse file",
			setup: func(img string) {
				client(t, exec.Command("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", sparse, img))
			},
			want: sparseMap,
		},
		{
			name: "delta disk over a sparse VMDK",
			setup: func(img string) {
				base := img + ".base.vmdk"
				client(t, exec.Command("qemu-img", "convert", "-f", "raw", "-O", "vmdk", sparse, base))
				client(t, exec.Command("qemu-img", "create", "-q", "-f", "vmdk", "-b", filepath.Base(base), "-F", "vmdk", img))
				client(t, exec.Command("qemu-io", "-f", "vmdk", "-c", "write -P 0x33 7M 64k", img))
			},
			want: "0+1048576:hole 1048576+1048576:data 2097152+3145728:hole 5242880+524288:data 5767168+1572864:hole 7340032+65536:data 7405568+983040:hole",
		},
	}
	for i, v := range vmdks {
		t.Run("vmdk "+v.name, func(t *testing.T) {
			img := filepath.Join(dir, fmt.Sprintf("disk%d.vmdk", i))
			v.setup(img)
			s := startServe(t, bin, "--unix", sock(fmt.Sprintf("vmdk%d.sock", i)), "-r", img)
			uri := s.uri("")
			if got := nbdinfoMap(t, uri); got != v.want {
				t.Errorf("nbdinfo --map shows\n%s\nwant\n%s", got, v.want)
			}
			if got := qemuMap(t, "-f", "raw", uri); got != v.want {
				t.Errorf("qemu-img map over NBD shows\n%s\nwant\n%s", got, v.want)
			}
			client(t, exec.Command("qemu-img", "compare", "-f", "raw", "-F", "vmdk", uri, img))
			s.stop()
		})
	}

	// A seekable zstd file made by nbdloop pack: its frames of zeros are
	// holes (frames of 256 KiB, where the file's data starts and ends).
	t.Run("zstd", func(t *testing.T) {
		packed := filepath.Join(dir, "sparse.img.zst")
		client(t, exec.Command(bin, "pack", "--block-size", "256K", sparse, packed))
		s := startServe(t, bin, "--unix", sock("zstd.sock"), packed)
		uri := s.uri("")
		if got := nbdinfoMap(t, uri); got != sparseMap {
			t.Errorf("nbdinfo --map of the packed file shows %s, want %s", got, sparseMap)
		}
		client(t, exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", uri, sparse))
		s.stop()
	})

	t.Run("a failing read is an error chunk", func(t *testing.T) {
		s := startServe(t, bin, "--unix", sock("error.sock"), "--filter", "error:ops=read,range=1M-2M", sparse)
		uri := s.uri("")
		out, err := exec.Command("qemu-io", "-f", "raw", "-c", "read 1M 4k", uri).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "read failed: Input/output error") {
			t.Errorf("qemu-io read of a failing range: %v\n%s\nwant read failed: Input/output error", err, out)
		}
		mustContain(t, "qemu-io read elsewhere", client(t, exec.Command("qemu-io", "-f", "raw", "-c", "read -P 0xa5 5M 4k", uri)), "read 4096/4096 bytes")
		out2 := client(t, exec.Command("nbdsh", "-u", uri, "-c", `
print("structured", h.get_structured_replies_negotiated())
try:
    h.pread(4096, 1 << 20)
except nbd.Error as e:
    print("errno", e.errno, e.string)
`))
		mustContain(t, "nbdsh", out2, "structured True", "errno EIO nbd_pread: read: command failed: Input/output error")
		s.stop()
	})
}
