package main

import (
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdloop/nbdloop/pictures"
)

const drawTestLog = `{"time":"2026-11-26T12:00:00Z","conn":0,"op":"write","offset":1024,"length":1024,"flags":"","latency_us":12.5,"error":""}
{"time":"2026-11-26T12:00:01Z","conn":1,"op":"flush","offset":0,"length":0,"flags":"","latency_us":3,"error":""}
`

// TestDraw: flags go before or after LOG; the picture's kind follows the
// name; the write is where the superblock is.
func TestDraw(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "mkfs.jsonl")
	if err := os.WriteFile(log, []byte(drawTestLog), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"draw", log, "-o", filepath.Join(dir, "a.png"), "--device-size", "1M", "--image-size=64"},
		{"draw", "--image-size", "64", "--device-size=1M", "--output", filepath.Join(dir, "b.png"), log},
	} {
		if code, stdout, stderr := runArgs(t, args...); code != 0 || stdout != "" || stderr != "" {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, stdout, stderr)
		}
	}
	for _, name := range []string{"a.png", "b.png"} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		l, _ := pictures.NewLayout(1<<20, 64)
		p, _ := l.Pixel(1024)
		if c, _, _ := pictures.Classify(img.At(p.X, p.Y)); c != pictures.ClassWrite {
			t.Errorf("%s: pixel %v of offset 1024 is %v, want write", name, p, c)
		}
	}
	for _, name := range []string{"c.gif", "d.html"} {
		if code, _, stderr := runArgs(t, "draw", "--frames", "3", log, "-o", filepath.Join(dir, name)); code != 0 {
			t.Errorf("draw -o %s: exit %d: %s", name, code, stderr)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 5 {
		t.Errorf("%d files in the directory, want the log and 4 pictures (no temporary files left)", len(ents))
	}
}

func TestDrawErrors(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "x.jsonl")
	os.WriteFile(log, []byte(drawTestLog), 0o644)
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte("not json\n"), 0o644)
	flushes := filepath.Join(dir, "flushes.jsonl")
	os.WriteFile(flushes, []byte(strings.SplitAfter(drawTestLog, "\n")[1]), 0o644)
	out := filepath.Join(dir, "out.png")
	huge := filepath.Join(dir, "huge.jsonl")
	os.WriteFile(huge, []byte(drawTestLog+`{"time":"2026-11-26T12:00:02Z","conn":0,"op":"read","offset":9223372036854775808,"length":4096}`+"\n"), 0o644)
	exists := filepath.Join(dir, "exists.png")
	os.WriteFile(exists, []byte("not a picture"), 0o644)
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"draw"}, exitUsage, "draw: no LOG given"},
		{[]string{"draw", log}, exitUsage, "draw: no output given (add -o OUT.png, OUT.gif or OUT.html)"},
		{[]string{"draw", log, "-o", "x.jpg"}, exitUsage, "draw: x.jpg: unknown kind of picture (name it .png, .gif or .html)"},
		{[]string{"draw", log, log, "-o", out}, exitUsage, "draw: one LOG expected"},
		{[]string{"draw", log, "-o"}, exitUsage, "draw: flag needs an argument: -o"},
		{[]string{"draw", log, "-o", out, "--image-size", "100"}, exitUsage, "draw: --image-size 100: not a power of two from 16 to 4096"},
		{[]string{"draw", log, "-o", out, "--frames", "0"}, exitUsage, "draw: --frames 0: out of range 1..1000"},
		{[]string{"draw", log, "-o", out, "--by", "size"}, exitUsage, `draw: --by "size": use time or requests`},
		{[]string{"draw", log, "-o", out, "--device-size", "1Q"}, exitUsage, `draw: --device-size "1Q": not a size`},
		{[]string{"draw", log, "-o", out, "--delay", "1ms"}, exitUsage, "draw: --delay 1ms: at least 10ms"},
		{[]string{"draw", filepath.Join(dir, "missing"), "-o", out}, exitError, "draw: open " + filepath.Join(dir, "missing") + ": no such file or directory"},
		{[]string{"draw", dir, "-o", out}, exitError, "draw: " + dir + ": not a regular file (LOG is read twice: save it to a file first)"},
		{[]string{"draw", bad, "-o", out}, exitError, "draw: " + bad + ": line 1: invalid character 'o' in literal null (expecting 'u') (is it a file written by --filter log:file=...?)"},
		{[]string{"draw", flushes, "-o", out}, exitError, "draw: " + flushes + ": the log has only flushes: the device size is unknown (give --device-size)"},
		{[]string{"draw", log, "-o", filepath.Join(dir, "no", "out.png")}, exitError, "draw: " + filepath.Join(dir, "no", "out.png") + ": no such file or directory"},
		{[]string{"draw", huge, "-o", out}, exitError, "draw: " + huge + ": line 3: offset 9223372036854775808, length 4096: past 2^63-1 bytes, the largest device (is it a file written by --filter log:file=...?)"},
		{[]string{"draw", log, "-o", exists}, exitError, "draw: " + exists + ": already exists (remove it, or add --force)"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runArgs(t, tt.args...)
			if code != tt.code || stdout != "" || !strings.Contains(stderr, tt.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d and one line with %q", code, stdout, stderr, tt.code, tt.want)
			}
		})
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("%s exists after failed draws", out)
	}
	if b, _ := os.ReadFile(exists); string(b) != "not a picture" {
		t.Errorf("%s was overwritten without --force", exists)
	}
	if code, _, stderr := runArgs(t, "draw", log, "-o", exists, "--force"); code != exitOK {
		t.Errorf("draw --force over an existing output: exit %d, %s", code, stderr)
	} else if f, err := os.Open(exists); err != nil {
		t.Error(err)
	} else if _, err := png.Decode(f); err != nil {
		t.Errorf("draw --force: %s is not the picture: %v", exists, err)
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, ".*")); len(tmps) > 0 {
		t.Errorf("temporary files left: %q", tmps)
	}
}
