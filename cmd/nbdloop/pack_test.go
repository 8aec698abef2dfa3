package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// TestPack runs `nbdloop pack` and checks the output with the real tools;
// not a terminal, so progress comes as lines.
func TestPack(t *testing.T) {
	tooltest.Require(t, "xz", "zstd")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	data := bytes.Repeat([]byte("nbdloop pack test data, "), 200000) // 4.6 MiB
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		out    string
		check  []string // decompressor command that writes the data to stdout
		blocks string   // in the summary line
	}{
		{name: "xz, flags after IMAGE", args: []string{"pack", img, "-o", "OUT", "--level", "0", "--block-size", "1M"}, out: "a.xz", check: []string{"xz", "-dc"}, blocks: "5 xz blocks"},
		{name: "zstd, flags before IMAGE", args: []string{"pack", "-T", "2", "--output", "OUT", img}, out: "b.zst", check: []string{"zstd", "-dc"}, blocks: "5 zstd blocks"},
		{name: "--format", args: []string{"pack", "--format", "zstd", img, "-o", "OUT"}, out: "c.bin", check: []string{"zstd", "-dc"}, blocks: "5 zstd blocks"},
		{name: "repack a compressed image", args: []string{"pack", filepath.Join(dir, "b.zst"), "-o", "OUT", "--level=1"}, out: "d.xz", check: []string{"xz", "-dc"}, blocks: "2 xz blocks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(dir, tt.out)
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				args[i] = strings.ReplaceAll(a, "OUT", out)
			}
			code, stdout, stderr := runArgs(t, args...)
			if code != 0 || stdout != "" {
				t.Fatalf("nbdloop %v = %d, stdout %q, stderr %q", args, code, stdout, stderr)
			}
			if !strings.Contains(stderr, "nbdloop: pack: 100% (4.6M of 4.6M)") || !strings.Contains(stderr, tt.blocks) {
				t.Errorf("stderr = %q, want progress lines and %q", stderr, tt.blocks)
			}
			cmd := exec.Command(tt.check[0], append(tt.check[1:], out)...)
			got, err := cmd.Output()
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("%v %s: %v, or the output differs from the image", tt.check, out, err)
			}
		})
	}
}

func TestPackErrors(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	os.WriteFile(img, make([]byte, 4096), 0o644)
	exists := filepath.Join(dir, "exists.xz")
	os.WriteFile(exists, nil, 0o644)
	xzImg := filepath.Join(dir, "self.xz")
	if code, _, stderr := runArgs(t, "pack", img, "-o", xzImg); code != 0 {
		t.Fatal(stderr)
	}
	xzSum := fileSum(t, xzImg)
	link := filepath.Join(dir, "link.xz")
	os.Symlink(xzImg, link)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{name: "no output", args: []string{"pack", img}, code: exitUsage, want: "pack: no output given (add OUT or -o OUT: a name ending in .xz or .zst, or - for standard output)"},
		{name: "no image", args: []string{"pack", "-o", "x.xz"}, code: exitUsage, want: "pack: no IMAGE given"},
		{name: "two images", args: []string{"pack", img, img, "-o", "x.xz"}, code: exitUsage, want: "pack: one IMAGE expected"},
		{name: "unknown extension", args: []string{"pack", img, "-o", "x.bin"}, code: exitUsage, want: "x.bin: cannot tell the format from the name (end it in .xz or .zst, or give --format)"},
		{name: "bad format", args: []string{"pack", "--format", "lz4", img, "-o", "x.xz"}, code: exitUsage, want: `pack: --format "lz4": use xz or zstd`},
		{name: "bad level", args: []string{"pack", img, "-o", filepath.Join(dir, "l.xz"), "--level", "12"}, code: exitUsage, want: "pack: --level 12: xz levels are 0 to 9 (e.g. --level 6)"},
		{name: "bad zstd level", args: []string{"pack", img, "-o", filepath.Join(dir, "l.zst"), "--level", "0"}, code: exitUsage, want: "pack: --level 0: zstd levels are 1 to 22 (e.g. --level 3)"},
		{name: "output exists", args: []string{"pack", img, "-o", exists}, code: exitError, want: exists + ": already exists (remove it, or add --force)"},
		{name: "missing image", args: []string{"pack", filepath.Join(dir, "nope.img"), "-o", filepath.Join(dir, "n.xz")}, code: exitError, want: "no such file or directory (check the path)"},
		{name: "late unknown flag", args: []string{"pack", img, "--bogus"}, code: exitUsage, want: "pack: flag provided but not defined: -bogus"},
		{name: "onto itself", args: []string{"pack", xzImg, "-o", xzImg, "--force"}, code: exitError, want: xzImg + ": is the image being packed"},
		{name: "onto itself through a symlink", args: []string{"pack", xzImg, "-o", link, "--force"}, code: exitError, want: link + ": is the image being packed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runArgs(t, tt.args...)
			if code != tt.code || !strings.Contains(stderr, tt.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("nbdloop %v = %d, stderr %q; want %d and one line containing %q", tt.args, code, stderr, tt.code, tt.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "l.xz")); err == nil {
		t.Error("a failed pack left its output behind")
	}
	if fileSum(t, xzImg) != xzSum {
		t.Error("pack onto itself changed the image")
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, ".*.tmp")); len(tmps) > 0 {
		t.Errorf("temporary files left: %q", tmps)
	}
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// TestPackInterrupted: pack stopped by SIGINT or SIGTERM at random points
// leaves the input unchanged and no output, partial or temporary, and a
// re-run succeeds. With --force over an existing output, that output is
// either the old one, untouched, or the complete new one.
func TestPackInterrupted(t *testing.T) {
	tooltest.Require(t, "zstd")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	data := make([]byte, 64<<20)
	rand.NewChaCha8([32]byte{1}).Read(data)
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	imgSum := fileSum(t, img)
	rng := rand.New(rand.NewPCG(3, 4))
	for i, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGINT, syscall.SIGTERM} {
		force := i >= 2
		out := filepath.Join(dir, fmt.Sprintf("out%d.zst", i))
		oldOut := []byte("the old output")
		if force {
			os.WriteFile(out, oldOut, 0o644)
		}
		args := []string{"nbdloop", "pack", "--threads", "1", img, "-o", out}
		if force {
			args = append(args, "--force")
		}
		cmd := exec.Command(exe, args[1:]...)
		cmd.Args[0] = "nbdloop"
		cmd.Env = append(os.Environ(), asMainEnv+"=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(10+rng.IntN(150)) * time.Millisecond)
		cmd.Process.Signal(sig)
		err := cmd.Wait()
		if fileSum(t, img) != imgSum {
			t.Fatalf("%v: the input changed", sig)
		}
		if tmps, _ := filepath.Glob(filepath.Join(dir, ".*.tmp")); len(tmps) > 0 {
			t.Fatalf("%v: temporary files left: %q", sig, tmps)
		}
		// The output is the old one (or none), or the whole new one when
		// the signal came after pack had put it in place.
		b, rerr := os.ReadFile(out)
		complete := false
		if rerr == nil && !bytes.Equal(b, oldOut) {
			z, zerr := exec.Command("zstd", "-dc", out).Output()
			if zerr != nil || !bytes.Equal(z, data) {
				t.Fatalf("%v (pack: %v): the output is %d bytes and not the whole image: %s", sig, err, len(b), stderr.String())
			}
			complete = true
		}
		switch {
		case complete:
			t.Logf("%v came after the output was in place", sig)
		case force && !bytes.Equal(b, oldOut):
			t.Fatalf("%v: the old output is gone although pack failed: %v, %s", sig, err, stderr.String())
		}
		if code, _, se := runArgs(t, append(args[1:], "--force")...); code != 0 {
			t.Fatalf("re-run after %v: %s", sig, se)
		}
		if z, err := exec.Command("zstd", "-dc", out).Output(); err != nil || !bytes.Equal(z, data) {
			t.Fatalf("re-run after %v: zstd -dc gives %d bytes (%v)", sig, len(z), err)
		}
	}
}
