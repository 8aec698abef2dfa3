package partitioned

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/internal/tooltest"
	"github.com/nbdloop/nbdloop/sources"
)

// tool runs a command that must succeed and returns its stdout.
func tool(t testing.TB, name string, args ...string) string {
	t.Helper()
	lookTool(t, name)
	out, err := toolErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// toolErr runs name with args, with /usr/sbin and /sbin added to PATH (for
// users whose PATH lacks them), and returns its output.
func toolErr(name string, args ...string) (string, error) {
	cmd := exec.Command(sbinPath(name), args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PATH="+os.Getenv("PATH")+":/usr/sbin:/sbin")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), err
	}
	return out.String(), nil
}

// sbinPath returns name itself if it is found in PATH, or its path in
// /usr/sbin or /sbin if it is there.
func sbinPath(name string) string {
	if _, err := exec.LookPath(name); err == nil {
		return name
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, name); exists(p) {
			return p
		}
	}
	return name
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// lookTool fails the test, with tooltest's message, when a tool is missing
// from PATH, /usr/sbin and /sbin.
func lookTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(sbinPath(name)); err != nil {
		t.Fatal(tooltest.Message(name))
	}
}

// mkfsFile creates a file of size bytes in dir and runs mkfs (a command
// line whose last argument is the file) on it, then opens it.
func mkfsFile(t testing.TB, dir, name string, size int64, mkfs ...string) (*sources.File, string) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	if len(mkfs) > 0 {
		lookTool(t, mkfs[0])
		tool(t, mkfs[0], append(mkfs[1:], path)...)
	}
	f, err := sources.OpenFile(path, sources.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, path
}

// memPart returns a Memory of size bytes with random data in its first
// and last bytes, so that detection finds nothing.
func memPart(t testing.TB, size int64, seed uint64) *sources.Memory {
	t.Helper()
	m, err := sources.NewMemory(size)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, min(size, 700))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	m.WriteAt(b, 0)
	m.WriteAt(b, size-int64(len(b)))
	return m
}

// writeImage writes src to a sparse file and returns its path.
func writeImage(t testing.TB, src sources.Source, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	zero := make([]byte, len(buf))
	for off := int64(0); off < src.Size(); off += int64(len(buf)) {
		p := buf[:min(int64(len(buf)), src.Size()-off)]
		if _, err := src.ReadAt(p, off); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(p, zero[:len(p)]) {
			continue
		}
		if _, err := f.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(src.Size()); err != nil {
		t.Fatal(err)
	}
	return path
}

// sfdiskTable is `sfdisk --json` output.
type sfdiskTable struct {
	PartitionTable struct {
		Label      string `json:"label"`
		ID         string `json:"id"`
		FirstLBA   int64  `json:"firstlba"`
		LastLBA    int64  `json:"lastlba"`
		SectorSize int64  `json:"sectorsize"`
		Partitions []struct {
			Node     string `json:"node"`
			Start    int64  `json:"start"`
			Size     int64  `json:"size"`
			Type     string `json:"type"`
			UUID     string `json:"uuid"`
			Name     string `json:"name"`
			Bootable bool   `json:"bootable"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func sfdiskJSON(t testing.TB, args ...string) sfdiskTable {
	t.Helper()
	lookTool(t, "sfdisk")
	out := tool(t, "sfdisk", append([]string{"--json"}, args...)...)
	var st sfdiskTable
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("sfdisk --json: %v\n%s", err, out)
	}
	return st
}

// blkid returns blkid -p's KEY=VALUE pairs for the image, or for the
// range [off, off+size) of it when size > 0.
func blkid(t testing.TB, path string, off, size int64) map[string]string {
	t.Helper()
	lookTool(t, "blkid")
	args := []string{"-p", "-o", "export"}
	if size > 0 {
		args = append(args, "-O", itoa(off), "-S", itoa(size))
	}
	out, _ := toolErr("blkid", append(args, path)...)
	kv := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = v
		}
	}
	return kv
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
