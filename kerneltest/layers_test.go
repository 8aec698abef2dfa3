package kerneltest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"path"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/nbdloop/nbdloop"

// layer is one row of the import arrows: the module packages that match
// pkg (a path relative to the module root; "X/..." matches X's subpackages,
// not X) may import, outside their tests, only the module packages that
// match one of may. Standard library and other modules are not checked.
type layer struct {
	pkg string
	may []string
}

// layers are the arrows cmd -> attach -> filters, nbd, kernel, ublk -> sources ->
// internal, with pack and pictures used by cmd only: a package imports only
// what lies below it, never its own layer's siblings and never upward.
// Every package of the module must match exactly one row, so a new package
// has to be placed here.
var layers = []layer{
	{pkg: "cmd/...", may: []string{"attach", "attach/...", "filters", "nbd", "nbd/...", "kernel", "ublk", "pack", "pictures", "sources", "sources/...", "internal/..."}},
	{pkg: "attach", may: []string{"attach/...", "filters", "nbd", "nbd/...", "kernel", "ublk", "sources", "sources/...", "internal/..."}},
	// Parts of attach, if it is cut into packages: they serve attach, so
	// they may import each other but not attach itself.
	{pkg: "attach/...", may: []string{"attach/...", "filters", "nbd", "nbd/...", "kernel", "ublk", "sources", "sources/...", "internal/..."}},
	{pkg: "filters", may: []string{"sources", "internal/..."}},
	{pkg: "nbd", may: []string{"sources", "internal/..."}},
	// The remote Source is built on the client.
	{pkg: "nbd/...", may: []string{"nbd", "sources", "internal/..."}},
	{pkg: "kernel", may: []string{"sources", "internal/..."}},
	// The ublk server: a Source served through io_uring commands.
	{pkg: "ublk", may: []string{"sources", "internal/..."}},
	{pkg: "pack", may: []string{"sources", "sources/...", "internal/..."}},
	{pkg: "pictures", may: []string{"internal/..."}},
	// Formats and helpers under sources see the Source contract and the
	// helpers under sources/internal, never each other's formats.
	{pkg: "sources/internal/...", may: []string{"sources", "sources/internal/...", "internal/..."}},
	// Objects in S3 buckets are read as URLs' objects are: through
	// httpsrc's Fetcher, cache and retries.
	{pkg: "sources/s3src", may: []string{"sources", "sources/httpsrc", "sources/internal/...", "internal/..."}},
	{pkg: "sources/...", may: []string{"sources", "sources/internal/...", "internal/..."}},
	{pkg: "sources", may: []string{"internal/..."}},
	// Test helpers may use the one that requires tools.
	{pkg: "internal/tlstest", may: []string{"internal/tooltest"}},
	{pkg: "internal/nbdtest", may: []string{"internal/tooltest"}},
	{pkg: "internal/nginxtest", may: []string{"internal/tooltest"}},
	// Leaves: the shared vocabulary (sizes, requests) imports nothing of
	// the module.
	{pkg: "internal/...", may: nil},
	// Test-only and tool packages: anything below the command.
	{pkg: "kerneltest", may: []string{"attach", "attach/...", "filters", "nbd", "nbd/...", "kernel", "ublk", "pack", "pictures", "sources", "sources/...", "internal/..."}},
	{pkg: "scripts/...", may: []string{"attach", "attach/...", "filters", "nbd", "nbd/...", "kernel", "ublk", "pack", "pictures", "sources", "sources/...", "internal/..."}},
}

// match reports whether the relative package path rel matches pattern.
func match(pattern, rel string) bool {
	if dir, ok := strings.CutSuffix(pattern, "/..."); ok {
		return strings.HasPrefix(rel, dir+"/")
	}
	return rel == pattern
}

// rowOf returns the first row whose pkg matches rel (rows are ordered from
// the most specific), or false.
func rowOf(rows []layer, rel string) (layer, bool) {
	for _, l := range rows {
		if match(l.pkg, rel) {
			return l, true
		}
	}
	return layer{}, false
}

// checkArrows returns one line per broken arrow of graph (relative package
// path -> the relative paths of the module packages it imports): an import
// that its row does not allow, or a package that no row places.
func checkArrows(rows []layer, graph map[string][]string) []string {
	var bad []string
	for pkg, imports := range graph {
		row, ok := rowOf(rows, pkg)
		if !ok {
			bad = append(bad, pkg+": no row of layers places this package: add one (what it may import)")
			continue
		}
	next:
		for _, imp := range imports {
			for _, m := range row.may {
				if match(m, imp) {
					continue next
				}
			}
			bad = append(bad, pkg+" imports "+imp+": against the arrows (row "+row.pkg+" may import only "+strings.Join(row.may, ", ")+")")
		}
	}
	sort.Strings(bad)
	return bad
}

// moduleGraph lists the module's packages with `go list -json ./...` and
// returns each one's imports of other module packages (tests excluded),
// as paths relative to the module root.
func moduleGraph(t *testing.T) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = repoRoot(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -json ./...: %v: %s", err, stderr.String())
	}
	graph := map[string][]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list -json: %v", err)
		}
		rel, ok := relative(p.ImportPath)
		if !ok {
			continue
		}
		graph[rel] = []string{}
		for _, imp := range p.Imports {
			if r, ok := relative(imp); ok {
				graph[rel] = append(graph[rel], r)
			}
		}
	}
	return graph
}

// relative returns a module package's path relative to the module root.
func relative(importPath string) (string, bool) {
	if importPath == module {
		return ".", true
	}
	rel, ok := strings.CutPrefix(importPath, module+"/")
	return path.Clean(rel), ok
}

// TestImportArrows holds the module's layering: every package's imports
// (outside its tests) follow the rows of layers, so nothing imports upward
// (sources importing attach, nbd importing filters, ...).
func TestImportArrows(t *testing.T) {
	graph := moduleGraph(t)
	for _, must := range []string{"cmd/nbdloop", "attach", "nbd", "sources", "sources/xz"} {
		if _, ok := graph[must]; !ok {
			t.Fatalf("go list found no package %s: the listing is broken (found %d packages)", must, len(graph))
		}
	}
	for _, b := range checkArrows(layers, graph) {
		t.Error(b)
	}
}

// TestCheckArrows: the checker itself, on made-up graphs, catches upward
// and sideways imports and unplaced packages, and passes the allowed arrows.
func TestCheckArrows(t *testing.T) {
	for _, tc := range []struct {
		name  string
		graph map[string][]string
		want  []string // substrings, one per reported line, in order
	}{
		{
			name: "the allowed arrows",
			graph: map[string][]string{
				"cmd/nbdloop":                 {"attach", "pack", "pictures", "sources"},
				"attach":                      {"filters", "nbd", "kernel", "sources", "sources/xz", "internal/bytesize"},
				"filters":                     {"sources", "internal/request"},
				"nbd":                         {"sources", "internal/request"},
				"sources/xz":                  {"sources", "sources/internal/lzma2", "internal/bytesize"},
				"sources/internal/blockcache": {"sources"},
				"sources":                     {"internal/bytesize"},
				"internal/bytesize":           {},
				"pictures":                    {"internal/request"},
			},
		},
		{
			name:  "sources imports attach",
			graph: map[string][]string{"sources": {"attach"}},
			want:  []string{"sources imports attach: against the arrows"},
		},
		{
			name:  "a format imports the nbd server",
			graph: map[string][]string{"sources/qcow2": {"sources", "nbd"}},
			want:  []string{"sources/qcow2 imports nbd"},
		},
		{
			name:  "siblings: nbd imports filters",
			graph: map[string][]string{"nbd": {"filters"}},
			want:  []string{"nbd imports filters"},
		},
		{
			name:  "one format imports another",
			graph: map[string][]string{"sources/vmdk": {"sources/qcow2"}},
			want:  []string{"sources/vmdk imports sources/qcow2"},
		},
		{
			name:  "a leaf imports sources",
			graph: map[string][]string{"internal/bytesize": {"sources"}},
			want:  []string{"internal/bytesize imports sources"},
		},
		{
			name:  "attach imports the command's packages",
			graph: map[string][]string{"attach": {"pictures", "pack"}},
			want:  []string{"attach imports pack", "attach imports pictures"},
		},
		{
			name:  "a part of attach imports attach",
			graph: map[string][]string{"attach/daemon": {"attach", "attach/host"}},
			want:  []string{"attach/daemon imports attach:"},
		},
		{
			name:  "a package without a row",
			graph: map[string][]string{"remote": {}},
			want:  []string{"remote: no row of layers places this package"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := checkArrows(layers, tc.graph)
			if len(got) != len(tc.want) {
				t.Fatalf("checkArrows = %q, want %d lines like %q", got, len(tc.want), tc.want)
			}
			for i := range got {
				if !strings.Contains(got[i], tc.want[i]) {
					t.Errorf("line %d = %q, want it to contain %q", i, got[i], tc.want[i])
				}
			}
		})
	}
}
