//go:build kernel

package kerneltest

import (
	"encoding/json"
	"fmt"
	"image/gif"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/pictures"
)

// TestKernelPicturesMkfs: mkfs.ext4 on a memory device with the log
// filter, detach, nbdloop draw: the PNG shows a write where the ext4
// superblock is (byte 1024), and the GIF has the frames asked for.
func TestKernelPicturesMkfs(t *testing.T) {
	requireDriver(t)
	dir := scratch(t)
	log := filepath.Join(dir, "mkfs.jsonl")
	dev := attachDev(t, "--filter", "log:file="+log, "memory:256M")
	must(t, "mkfs.ext4", "-q", "-F", dev)
	detach(t, dev)
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"op":"write"`) {
		t.Fatalf("the log has no write:\n%.2000s", b)
	}
	out := filepath.Join(dir, "mkfs.png")
	must(t, nbdloop(t), "draw", log, "-o", out, "--image-size", "256")
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	// The device size is derived from the log: mkfs.ext4 discards the whole
	// device first, so it is 256 MiB exactly (1 KiB a pixel).
	l, err := pictures.NewLayout(256<<20, 256)
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds() != l.Bounds {
		t.Fatalf("%s is %v, want %v (device size not 256 MiB?)", out, img.Bounds(), l.Bounds)
	}
	p, _ := l.Pixel(1024)
	if c, lv, _ := pictures.Classify(img.At(p.X, p.Y)); c != pictures.ClassWrite {
		t.Errorf("superblock pixel %v (byte 1024) is %v level %d, want write", p, c, lv)
	}
	// Somewhere else mkfs did not write: the middle of the first block
	// group's data, trimmed only.
	q, _ := l.Pixel(100 << 20)
	if c, _, _ := pictures.Classify(img.At(q.X, q.Y)); c == pictures.ClassWrite {
		t.Errorf("pixel %v of byte 100 MiB is a write, want the discard only", q)
	}

	anim := filepath.Join(dir, "mkfs.gif")
	must(t, nbdloop(t), "draw", "--frames", "12", "--image-size", "64", log, "-o", anim)
	f, err = os.Open(anim)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gif.DecodeAll(f)
	f.Close()
	if err != nil {
		t.Fatalf("%s: %v", anim, err)
	}
	if len(g.Image) != 12 {
		t.Errorf("%s has %d frames, want 12", anim, len(g.Image))
	}
	requireClean(t, "pictures")
}

// TestKernelPicturesTop: nbdloop top --once on a device being written
// shows a write rate, bytes per second and writes on its map.
func TestKernelPicturesTop(t *testing.T) {
	requireDriver(t)
	dev := attachDev(t, "--filter", "stats", "memory:64M")
	writer := exec.Command("/bin/sh", "-c", "while :; do dd if=/dev/zero of="+dev+" bs=64k count=1024 oflag=direct status=none || exit 1; done")
	// Its own process group, so that stopping it stops dd too: a dd left
	// writing would fail its I/O at detach.
	writer.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	stop := func() {
		syscall.Kill(-writer.Process.Pid, syscall.SIGKILL)
		writer.Wait()
	}
	defer stop()
	// top --once shows the interval from the statistics it finds to the
	// next ones the server writes: wait until the statistics count the
	// writer's writes, so that the writer is at work through that interval.
	waitFor(t, 30*time.Second, "the statistics of "+dev+" to count writes", func() error {
		var s struct {
			Ops []struct {
				Op    string `json:"op"`
				Count uint64 `json:"count"`
			} `json:"ops"`
		}
		r := run(t, nbdloop(t), "stats", "--json", dev)
		if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
			return fmt.Errorf("stats --json: exit %d, %v: %s", r.code, err, r.stderr)
		}
		for _, o := range s.Ops {
			if o.Op == "write" && o.Count > 0 {
				return nil
			}
		}
		return fmt.Errorf("stats --json: %s", r.stdout)
	})
	out := must(t, nbdloop(t), "top", "--once", dev)
	t.Logf("nbdloop top --once %s:\n%s", dev, out)
	var rate, mib float64
	found := false
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 9 && f[0] == "write" {
			rate, _ = strconv.ParseFloat(f[1], 64)
			mib, _ = strconv.ParseFloat(f[2], 64)
			found = true
		}
	}
	if !found || rate <= 0 || mib <= 0 {
		t.Errorf("top shows write rate %v req/s, %v MiB/s, want both above 0", rate, mib)
	}
	if !strings.Contains(out, "W") && !strings.Contains(out, "w ") {
		t.Errorf("top's map shows no write")
	}
	if !strings.Contains(out, dev+"  up ") {
		t.Errorf("top's header does not name %s", dev)
	}
	stop()
	detach(t, dev)
	requireClean(t, "top")
}
