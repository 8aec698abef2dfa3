package attach

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestPinned: an attach request names its files by absolute paths and
// records what they are, so that a restart from another directory serves
// the same files and one replaced under the same name is refused.
func TestPinned(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, f := range []string{"disk.img", "b.img", "run.sh"} {
		if err := os.WriteFile(f, make([]byte, 4096), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		cfg   Config
		want  Config
		files []string
	}{
		{
			name:  "file and filters",
			cfg:   Config{Source: "disk.img", Filters: []string{"log:file=req.jsonl", "error:file=/t/e0", "cow"}},
			want:  Config{Source: dir + "/disk.img", Filters: []string{"log:file=" + dir + "/req.jsonl", "error:file=/t/e0", "cow"}},
			files: []string{dir + "/disk.img"},
		},
		{
			name:  "exec",
			cfg:   Config{Source: "exec:run.sh,persistent"},
			want:  Config{Source: "exec:" + dir + "/run.sh,persistent"},
			files: []string{dir + "/run.sh"},
		},
		{
			name: "composite",
			cfg:  Config{Source: "disk.img", Composite: Composite{Layout: "partitions", Sources: []string{"disk.img", "file:b.img", "memory:1M"}, Types: []string{"1=linux", "./b.img=swap", "disk.img=esp"}}},
			want: Config{Source: dir + "/disk.img", Composite: Composite{Layout: "partitions", Sources: []string{dir + "/disk.img", dir + "/b.img", "memory:1M"},
				Types: []string{"1=linux", dir + "/b.img=swap", "disk.img=esp"}}},
			files: []string{dir + "/disk.img", dir + "/b.img"},
		},
		{name: "memory", cfg: Config{Source: "memory:1G"}, want: Config{Source: "memory:1G"}},
		{name: "nbd+unix, relative socket", cfg: Config{Source: "nbd+unix:///e?socket=run/s.sock"}, want: Config{Source: "nbd+unix:///e?socket=" + dir + "/run/s.sock"}},
		{name: "nbd+unix, absolute socket", cfg: Config{Source: "nbd+unix:///?socket=/run/s"}, want: Config{Source: "nbd+unix:///?socket=/run/s"}},
		{name: "nbds+unix, relative socket and certificates", cfg: Config{Source: "nbds+unix:///e?socket=s&tls-certificates=pki&tls-hostname=h"},
			want: Config{Source: "nbds+unix:///e?socket=" + dir + "/s&tls-certificates=" + dir + "/pki&tls-hostname=h"}},
		{name: "nbds, relative certificates", cfg: Config{Source: "nbds://h/e?tls-certificates=pki"}, want: Config{Source: "nbds://h:10809/e?tls-certificates=" + dir + "/pki"}},
		{name: "nbd+unix, abstract socket", cfg: Config{Source: "nbd+unix:///?socket=%00x"}, want: Config{Source: "nbd+unix:///?socket=%00x"}},
		{name: "nbd", cfg: Config{Source: "nbd://h/e", Composite: Composite{Layout: "concat", Sources: []string{"nbd://h:99/", "disk.img"}}},
			want:  Config{Source: "nbd://h:10809/e", Composite: Composite{Layout: "concat", Sources: []string{"nbd://h:99/", dir + "/disk.img"}}},
			files: []string{dir + "/disk.img"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.pinned()
			if err != nil {
				t.Fatal(err)
			}
			var paths []string
			for _, f := range got.Files {
				paths = append(paths, f.Path)
			}
			got.Files = nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("pinned = %+v\nwant %+v", got, tt.want)
			}
			if !reflect.DeepEqual(paths, tt.files) {
				t.Errorf("files %q, want %q", paths, tt.files)
			}
		})
	}
	cfg, _ := Config{Source: "disk.img"}.pinned()
	if err := checkFiles(cfg.Files); err != nil {
		t.Fatalf("the same file refused: %v", err)
	}
	// Replaced under the same name (as an editor or a careless cp does).
	if err := os.WriteFile("new.img", make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename("new.img", "disk.img"); err != nil {
		t.Fatal(err)
	}
	err := checkFiles(cfg.Files)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "disk.img")+": is another file than when the device was attached") {
		t.Fatalf("a replaced file: %v", err)
	}
}
