package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPack runs `nbdloop pack` and checks the output with the real tools;
// not a terminal, so progress comes as lines.
func TestPack(t *testing.T) {
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
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{name: "no output", args: []string{"pack", img}, code: exitUsage, want: "pack: no output given (add -o OUT.xz or -o OUT.zst)"},
		{name: "no image", args: []string{"pack", "-o", "x.xz"}, code: exitUsage, want: "pack: no IMAGE given"},
		{name: "two images", args: []string{"pack", img, img, "-o", "x.xz"}, code: exitUsage, want: "pack: one IMAGE expected"},
		{name: "unknown extension", args: []string{"pack", img, "-o", "x.bin"}, code: exitUsage, want: "x.bin: cannot tell the format from the name (end it in .xz or .zst, or give --format)"},
		{name: "bad format", args: []string{"pack", "--format", "lz4", img, "-o", "x.xz"}, code: exitUsage, want: `pack: --format "lz4": use xz or zstd`},
		{name: "bad level", args: []string{"pack", img, "-o", filepath.Join(dir, "l.xz"), "--level", "12"}, code: exitError, want: "xz level must be from 0 to 9"},
		{name: "output exists", args: []string{"pack", img, "-o", exists}, code: exitError, want: exists + ": already exists (remove it, or add --force)"},
		{name: "missing image", args: []string{"pack", filepath.Join(dir, "nope.img"), "-o", filepath.Join(dir, "n.xz")}, code: exitError, want: "no such file or directory (check the path)"},
		{name: "late unknown flag", args: []string{"pack", img, "--bogus"}, code: exitUsage, want: "pack: flag provided but not defined: -bogus"},
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
}
