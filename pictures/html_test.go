package pictures

import (
	"context"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/internal/tooltest"
)

// browser returns the path of a Chromium that chromedp can drive; the
// test fails without one (scripts/install-deps.sh installs it).
func browser(t *testing.T) string {
	t.Helper()
	return tooltest.RequireAny(t, "chromium-headless-shell", "headless-shell", "chromium", "google-chrome")
}

// TestHTMLInBrowser opens the page in a real headless browser: it loads
// with no console error or exception, its canvas shows the write colour at
// the superblock's pixel for the whole run and the read colour in the
// first frame (the write comes last), and the pointer over that pixel names the
// offset and the write.
func TestHTMLInBrowser(t *testing.T) {
	const size, side, frames = 1 << 20, 64, 5 // 256-byte pixels
	log := writeLog(t, []request.Request{
		req(request.OpRead, 512<<10, 4096, 0),
		req(request.OpRead, 0, 4096, 10*time.Millisecond),
		req(request.OpFlush, 0, 0, 500*time.Millisecond),
		req(request.OpWrite, 1024, 1024, time.Second), // the ext4 superblock
	})
	page := filepath.Join(t.TempDir(), "run.html")
	f, err := os.Create(page)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteHTML(f, strings.NewReader(string(log)), Options{DeviceSize: size, Side: side, Frames: frames, Title: "superblock <test>"}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	l, _ := NewLayout(size, side)
	sb, _ := l.Pixel(1024)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser(t)), chromedp.NoSandbox, chromedp.Headless)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	// Subscribe before loading, so no message is lost; the page's own
	// console.info marks the end.
	messages := chromedp.Console(ctx)
	// drain reports what the page wrote to its console as errors or
	// warnings, and its exceptions, up to a marker it writes now.
	drain := func() {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`console.info("end of test")`)); err != nil {
			t.Errorf("writing the end marker: %v", err)
			return
		}
		for m, err := range messages {
			if err != nil {
				t.Errorf("reading the console: %v", err)
				return
			}
			if m.Type == chromedp.ConsoleInfo && m.Text == "end of test" {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.IsException() {
				t.Errorf("page console: %s:%d: %s", m.URL, m.Line+1, m)
			}
		}
	}
	fatal := func(format string, args ...any) {
		t.Helper()
		drain()
		t.Fatalf(format, args...)
	}
	pixel := func(x, y int) (color.Color, error) {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[[]int](fmt.Sprintf(
			`Array.from(document.getElementById("c").getContext("2d").getImageData(%d, %d, 1, 1).data.slice(0, 3))`, x, y)))
		if err != nil || len(v) != 3 {
			return nil, fmt.Errorf("getImageData(%d, %d) = %v, %v", x, y, v, err)
		}
		return color.RGBA{uint8(v[0]), uint8(v[1]), uint8(v[2]), 0xff}, nil
	}
	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+page)); err != nil {
		fatal("loading %s: %v", page, err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](fmt.Sprintf("window.nbdloopShown === %d", frames), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		fatal("waiting for the whole run to be drawn: %v", err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		fatal("%v", err)
	}
	if title != "superblock <test>" {
		t.Errorf("title = %q, want the one given", title)
	}
	whole, err := pixel(sb.X, sb.Y)
	if err != nil {
		fatal("%v", err)
	}
	if c, lv, _ := Classify(whole); c != ClassWrite || lv != levels {
		t.Errorf("whole run: superblock pixel %v = %v, %v level %d, want write level %d", sb, whole, c, lv, levels)
	}
	// The pointer over the superblock's pixel (the page has a margin: ask
	// where the canvas is).
	rect, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](`(r => [r.left, r.top])(document.getElementById("c").getBoundingClientRect())`))
	if err != nil || len(rect) != 2 {
		fatal("canvas position: %v, %v", rect, err)
	}
	if err := chromedp.Do(ctx, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, rect[0]+float64(sb.X)+0.5, rect[1]+float64(sb.Y)+0.5)); err != nil {
		fatal("%v", err)
	}
	readout, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("readout")))
	if err != nil {
		fatal("%v", err)
	}
	if !strings.Contains(readout, "offset 1024-1279") || !strings.Contains(readout, "write") {
		t.Errorf("readout under the pointer = %q, want offset 1024-1279 and write", readout)
	}
	// The first frame: the read of 0..4095, the write has not happened yet.
	if err := chromedp.Do(ctx,
		chromedp.Evaluate[chromedp.Void](`(s => { s.value = "0"; s.dispatchEvent(new Event("input")); })(document.getElementById("slider"))`),
		chromedp.Poll[chromedp.Void]("window.nbdloopShown === 0", chromedp.WithPollingTimeout(20*time.Second)),
	); err != nil {
		fatal("moving the slider to frame 1: %v", err)
	}
	first, err := pixel(sb.X, sb.Y)
	if err != nil {
		fatal("%v", err)
	}
	if c, _, _ := Classify(first); c != ClassRead {
		t.Errorf("frame 1: superblock pixel %v = %v, a %v, want read (the write comes in the last frame)", sb, first, c)
	}
	drain()
}
