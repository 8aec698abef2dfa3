// Command benchreport turns the raw output of scripts/bench/measure.sh (fio
// JSON per device and workload, attach timings, a CPU profile) into the
// table `make bench` prints and a JSON summary.
//
// Usage: benchreport -raw DIR [-json FILE]
//
// It exits 1 when a measurement is missing (a device, a workload, an attach
// timing), 0 otherwise: the targets of issue 7 are reported as PASS/FAIL
// lines but do not change the exit status.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Device columns, in the order measure.sh runs them.
var deviceOrder = []string{"loop", "nbdloop-memory", "nbdloop-memory-errfilter", "nbdloop-file", "nbdkit-memory", "nbdkit-file", "qemu-nbd",
	"nbdloop-script", "nbdkit-script", "nbdloop-script-persistent"}

var deviceShort = map[string]string{
	"loop":           "loop",
	"nbdloop-memory": "nbdloop-mem",
	// memory:1G behind --filter error:file=/nonexistent-trigger,rate=1 (idle)
	"nbdloop-memory-errfilter": "mem+errfilt",
	"nbdloop-file":             "nbdloop-file",
	"nbdkit-memory":            "nbdkit-mem",
	"nbdkit-file":              "nbdkit-file",
	"qemu-nbd":                 "qemu-nbd",
	// scripts/examples/ramdisk.sh over the file: exec: (a fork per
	// request), the same under nbdkit sh, and file-persistent.py
	"nbdloop-script":            "script-exec",
	"nbdkit-script":             "nbdkit-sh",
	"nbdloop-script-persistent": "script-pers",
}

var workloadOrder = []string{
	"randread-4k-qd1", "randwrite-4k-qd1",
	"randread-4k-qd32", "randwrite-4k-qd32",
	"read-1m-qd8", "write-1m-qd8",
	"randrw-4k-qd32",
}

var workloadLabel = map[string]string{
	"randread-4k-qd1":   "4k randread QD1",
	"randwrite-4k-qd1":  "4k randwrite QD1",
	"randread-4k-qd32":  "4k randread QD32x2",
	"randwrite-4k-qd32": "4k randwrite QD32x2",
	"read-1m-qd8":       "1M seq read QD8",
	"write-1m-qd8":      "1M seq write QD8",
	"randrw-4k-qd32":    "4k randrw 70/30 QD32x2",
}

func label(w string) string {
	if l, ok := workloadLabel[w]; ok {
		return l
	}
	return w
}

// ratios are IOPS ratios (the same as MB/s ratios: one block size per row).
var ratioDefs = []struct{ Name, Num, Den string }{
	{"nbdloop-memory/nbdkit-memory", "nbdloop-memory", "nbdkit-memory"},
	{"nbdloop-file/qemu-nbd", "nbdloop-file", "qemu-nbd"},
	{"nbdloop-file/nbdkit-file", "nbdloop-file", "nbdkit-file"},
	{"nbdloop-memory/loop", "nbdloop-memory", "loop"},
	// The cost of an idle error filter (issue 6 item 8): > 1 means the filter is free.
	{"nbdloop-memory-errfilter/nbdloop-memory", "nbdloop-memory-errfilter", "nbdloop-memory"},
	// The same shell script under nbdloop and under nbdkit's sh plugin.
	{"nbdloop-script/nbdkit-script", "nbdloop-script", "nbdkit-script"},
}

type Dir struct {
	IOPS   float64 `json:"iops"`
	MBps   float64 `json:"mb_per_s"`
	P99us  float64 `json:"p99_us"`
	MeanUs float64 `json:"mean_us"`
}

type Result struct {
	IOPS   float64 `json:"iops"`
	MBps   float64 `json:"mb_per_s"` // 10^6 bytes per second
	P99us  float64 `json:"p99_us"`   // completion latency; the worse direction for mixed runs
	Read   *Dir    `json:"read,omitempty"`
	Write  *Dir    `json:"write,omitempty"`
	UsrCPU float64 `json:"fio_usr_cpu_pct"`
	SysCPU float64 `json:"fio_sys_cpu_pct"`
}

type Target struct {
	Name  string  `json:"name"`
	Ratio string  `json:"ratio"`
	Load  string  `json:"workload"`
	Want  float64 `json:"want"`
	Got   float64 `json:"got"`
	State string  `json:"state"` // PASS, FAIL, MISSING
}

type Attach struct {
	AttachMs       []float64 `json:"attach_ms"`
	DetachMs       []float64 `json:"detach_ms"`
	MedianAttachMs float64   `json:"median_attach_ms"`
	MedianDetachMs float64   `json:"median_detach_ms"`
}

type Summary struct {
	Run       string                        `json:"run"`  // the raw folder's name: when the run started
	Date      string                        `json:"date"` // when this summary was written
	Meta      map[string]string             `json:"meta"`
	Devices   []string                      `json:"devices"`
	Workloads []string                      `json:"workloads"`
	Results   map[string]map[string]*Result `json:"results"` // workload -> device
	Ratios    map[string]map[string]float64 `json:"ratios"`  // workload -> ratio name
	Attach    map[string]*Attach            `json:"attach"`
	// RestartMs: kill -9 of the server to the first read served by the
	// next one, per kind (nbdloop-file, nbdloop-memory).
	RestartMs map[string][]float64 `json:"restart_ms,omitempty"`
	// Groups: the comparison groups of groups.sh.
	Groups   []*Group           `json:"groups,omitempty"`
	Profiles []*Profile         `json:"profiles,omitempty"`
	Targets  []Target           `json:"targets"`
	Missing  []string           `json:"missing"`
	FillMBps map[string]float64 `json:"fill_mb_per_s,omitempty"` // first writes to the memory disks
}

func main() {
	raw := flag.String("raw", "", "directory written by measure.sh")
	jsonOut := flag.String("json", "", "write the summary as JSON to `FILE`")
	flag.Parse()
	if *raw == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: benchreport -raw DIR [-json FILE]")
		os.Exit(2)
	}
	s, err := load(*raw)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	printReport(os.Stdout, s)
	if *jsonOut != "" {
		b, err := json.MarshalIndent(s, "", "  ")
		if err == nil {
			err = os.WriteFile(*jsonOut, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchreport:", err)
			os.Exit(1)
		}
	}
	if len(s.Missing) > 0 {
		os.Exit(1)
	}
}

func load(raw string) (*Summary, error) {
	s := &Summary{
		Date:     time.Now().Format(time.RFC3339),
		Results:  map[string]map[string]*Result{},
		Ratios:   map[string]map[string]float64{},
		Attach:   map[string]*Attach{},
		Missing:  []string{},
		FillMBps: map[string]float64{},
		Run:      filepath.Base(raw),
	}
	meta, err := readKV(filepath.Join(raw, "meta.txt"))
	if err != nil {
		// The measurements never started (failed boot, missing driver...):
		// report that as one missing measurement.
		s.Meta = map[string]string{}
		s.Missing = append(s.Missing, "everything: "+err.Error())
		return s, nil
	}
	s.Meta = meta
	s.Devices = strings.Fields(meta["devices"])
	s.Workloads = strings.Fields(meta["workloads"])
	byDevice := map[string]map[string]*Result{}
	for _, d := range s.Devices {
		rs, err := readFioGroups(filepath.Join(raw, "fio", d+".json"))
		if err != nil {
			s.Missing = append(s.Missing, fmt.Sprintf("%s: %v", d, err))
		}
		byDevice[d] = rs
	}
	for _, w := range s.Workloads {
		s.Results[w] = map[string]*Result{}
		for _, d := range s.Devices {
			if byDevice[d] == nil {
				continue // reported above
			}
			r := byDevice[d][w]
			if r == nil {
				s.Missing = append(s.Missing, fmt.Sprintf("%s %s: not in fio's output", d, w))
				continue
			}
			s.Results[w][d] = r
		}
		s.Ratios[w] = map[string]float64{}
		for _, rd := range ratioDefs {
			n, d := s.Results[w][rd.Num], s.Results[w][rd.Den]
			if n != nil && d != nil && d.IOPS > 0 {
				s.Ratios[w][rd.Name] = n.IOPS / d.IOPS
			}
		}
	}
	for _, d := range s.Devices {
		if r, err := readFio(filepath.Join(raw, "fio", d+"-fill.json")); err == nil {
			s.FillMBps[d] = r.MBps
		}
	}
	if b, err := os.ReadFile(filepath.Join(raw, "failures")); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l != "" {
				s.Missing = append(s.Missing, "measure.sh: "+l)
			}
		}
	}
	runs, _ := strconv.Atoi(meta["attach_runs"])
	if runs > 0 {
		if err := readAttach(filepath.Join(raw, "attach.tsv"), s.Attach); err != nil {
			s.Missing = append(s.Missing, "attach times: "+err.Error())
		}
		for _, k := range []string{"loop", "nbdloop-file", "nbdloop-memory", "nbdkit-file", "nbdkit-memory", "qemu-nbd"} {
			if a := s.Attach[k]; a == nil || len(a.AttachMs) < runs {
				s.Missing = append(s.Missing, "attach time of "+k)
			}
		}
	}
	if runs, _ := strconv.Atoi(meta["restart_runs"]); runs > 0 {
		s.RestartMs = map[string][]float64{}
		if err := readRestart(filepath.Join(raw, "restart.tsv"), s.RestartMs); err != nil {
			s.Missing = append(s.Missing, "restart gaps: "+err.Error())
		}
		for _, k := range []string{"nbdloop-file", "nbdloop-memory"} {
			if len(s.RestartMs[k]) < runs {
				s.Missing = append(s.Missing, "restart gaps of "+k)
			}
		}
	}
	s.Profiles = readProfiles(filepath.Join(raw, "profile"))
	s.Targets = targets(s)
	loadGroups(raw, meta, s)
	return s, nil
}

func readKV(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m, nil
}

type fioDir struct {
	IOPS    float64 `json:"iops"`
	BwBytes float64 `json:"bw_bytes"`
	ClatNs  struct {
		Mean       float64            `json:"mean"`
		Percentile map[string]float64 `json:"percentile"`
	} `json:"clat_ns"`
}

type fioOutput struct {
	Jobs []struct {
		Jobname string  `json:"jobname"`
		Error   int     `json:"error"`
		Read    fioDir  `json:"read"`
		Write   fioDir  `json:"write"`
		UsrCPU  float64 `json:"usr_cpu"`
		SysCPU  float64 `json:"sys_cpu"`
	} `json:"jobs"`
}

// readFioGroups reads one fio JSON output: a Result per job (one per
// group with group_reporting), by job name. A job that failed or did no I/O
// is left out.
func readFioGroups(path string) (map[string]*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("no fio output")
		}
		return nil, err
	}
	// fio may print notes before its JSON.
	if i := bytes.IndexByte(b, '{'); i > 0 {
		b = b[i:]
	}
	var f fioOutput
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("fio output: %v", err)
	}
	if len(f.Jobs) == 0 {
		return nil, fmt.Errorf("fio output has no job")
	}
	m := map[string]*Result{}
	for _, j := range f.Jobs {
		if j.Error != 0 {
			continue
		}
		r := &Result{UsrCPU: j.UsrCPU, SysCPU: j.SysCPU}
		for i, fd := range []fioDir{j.Read, j.Write} {
			if fd.IOPS <= 0 {
				continue
			}
			d := &Dir{IOPS: fd.IOPS, MBps: fd.BwBytes / 1e6, P99us: fd.ClatNs.Percentile["99.000000"] / 1e3, MeanUs: fd.ClatNs.Mean / 1e3}
			if i == 0 {
				r.Read = d
			} else {
				r.Write = d
			}
			r.IOPS += d.IOPS
			r.MBps += d.MBps
			r.P99us = math.Max(r.P99us, d.P99us)
		}
		if r.IOPS > 0 {
			m[j.Jobname] = r
		}
	}
	return m, nil
}

// readFio reads a fio output of one job.
func readFio(path string) (*Result, error) {
	m, err := readFioGroups(path)
	if err != nil {
		return nil, err
	}
	for _, r := range m {
		return r, nil
	}
	return nil, fmt.Errorf("fio did no I/O")
}

func readAttach(path string, m map[string]*Attach) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), "\t")
		if len(fs) != 3 || fs[0] == "kind" {
			continue
		}
		a, err1 := strconv.ParseFloat(fs[1], 64)
		d, err2 := strconv.ParseFloat(fs[2], 64)
		if err1 != nil || err2 != nil {
			continue
		}
		x := m[fs[0]]
		if x == nil {
			x = &Attach{}
			m[fs[0]] = x
		}
		x.AttachMs = append(x.AttachMs, a)
		x.DetachMs = append(x.DetachMs, d)
	}
	for _, x := range m {
		x.MedianAttachMs = median(x.AttachMs)
		x.MedianDetachMs = median(x.DetachMs)
	}
	return sc.Err()
}

// readRestart reads restart.tsv: kind, gap in ms.
func readRestart(path string, m map[string][]float64) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(b), "\n") {
		fs := strings.Split(l, "\t")
		if len(fs) != 2 || fs[0] == "kind" {
			continue
		}
		if ms, err := strconv.ParseFloat(fs[1], 64); err == nil {
			m[fs[0]] = append(m[fs[0]], ms)
		}
	}
	return nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	c := append([]float64(nil), v...)
	sort.Float64s(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

func targets(s *Summary) []Target {
	var ts []Target
	add := func(name, ratio, w string, want float64) {
		t := Target{Name: name, Ratio: ratio, Load: w, Want: want, State: "MISSING"}
		if g, ok := s.Ratios[w][ratio]; ok {
			t.Got = g
			t.State = "FAIL"
			if g >= want {
				t.State = "PASS"
			}
		}
		ts = append(ts, t)
	}
	for _, w := range []string{"randread-4k-qd32", "randwrite-4k-qd32"} {
		add("nbdloop memory >= 1.5x nbdkit memory", "nbdloop-memory/nbdkit-memory", w, 1.5)
	}
	for _, w := range []string{"read-1m-qd8", "write-1m-qd8"} {
		add("nbdloop memory >= 1.0x nbdkit memory", "nbdloop-memory/nbdkit-memory", w, 1.0)
	}
	for _, w := range s.Workloads {
		add("nbdloop file >= 1.0x qemu-nbd", "nbdloop-file/qemu-nbd", w, 1.0)
	}
	add("nbdloop memory >= 40% of loop", "nbdloop-memory/loop", "randread-4k-qd32", 0.4)
	// Issue 6 item 8: an error filter whose trigger file does not exist.
	add("idle error filter >= 0.95x plain memory", "nbdloop-memory-errfilter/nbdloop-memory", "randread-4k-qd32", 0.95)
	return ts
}

// --- output ---------------------------------------------------------------

func printReport(w io.Writer, s *Summary) {
	m := s.Meta
	if len(s.Devices) > 0 {
		fmt.Fprintf(w, "\nnbdloop benchmarks: %s, kernel %s, %s CPUs, %s connections for nbdloop and nbd-client,\n",
			m["mode"], m["kernel"], m["cpus"], m["connections"])
		fmt.Fprintf(w, "fio libaio direct=1, %s s per job after a %s s ramp, on the first %s of 1 GiB devices (filled first).\n",
			m["runtime_s"], m["ramp_s"], m["span"])
		if m["mode"] == "vm" {
			fmt.Fprintln(w, "Under qemu TCG the absolute figures mean little; compare ratios, and expect +-10-20% noise between runs.")
		}
		table(w, s, "IOPS", func(r *Result) string { return thousands(r.IOPS) })
		table(w, s, "MB/s", func(r *Result) string { return mbps(r.MBps) })
		table(w, s, "p99 completion latency (mixed: the worse direction)", func(r *Result) string { return latency(r.P99us) })
		ratioTable(w, s)
	}
	if len(s.Attach) > 0 {
		fmt.Fprintf(w, "\nAttach: wall time to a usable device, median of %s (detach alongside)\n", m["attach_runs"])
		for _, k := range []string{"loop", "nbdloop-file", "nbdloop-memory", "nbdkit-file", "nbdkit-memory", "qemu-nbd"} {
			a := s.Attach[k]
			if a == nil {
				fmt.Fprintf(w, "  %-16s  -\n", k)
				continue
			}
			what := map[string]string{
				"loop":           "losetup -f --show FILE",
				"nbdloop-file":   "nbdloop attach FILE",
				"nbdloop-memory": "nbdloop attach memory:1G",
				"nbdkit-file":    "nbdkit -U file FILE; nbd-client",
				"nbdkit-memory":  "nbdkit -U memory 1G; nbd-client",
				"qemu-nbd":       "qemu-nbd -c DEV -f raw FILE",
			}[k]
			fmt.Fprintf(w, "  %-16s %7.0f ms   (detach %5.0f ms)   %s\n", k, a.MedianAttachMs, a.MedianDetachMs, what)
		}
	}
	printGroups(w, s)
	if len(s.RestartMs) > 0 {
		fmt.Fprintf(w, "\nRestart gap: kill -9 of the server to the first 4 KiB read served by the next (median, max of %s)\n", m["restart_runs"])
		for _, k := range []string{"nbdloop-file", "nbdloop-memory"} {
			v := s.RestartMs[k]
			if len(v) == 0 {
				fmt.Fprintf(w, "  %-16s  -\n", k)
				continue
			}
			fmt.Fprintf(w, "  %-16s %7.0f ms   (max %5.0f ms)\n", k, median(v), slices.Max(v))
		}
	}
	for _, p := range s.Profiles {
		printProfile(w, p)
	}
	if len(s.Missing) > 0 {
		fmt.Fprintln(w, "\nMissing measurements:")
		for _, x := range s.Missing {
			fmt.Fprintln(w, "  "+x)
		}
	}
	if len(s.Targets) > 0 {
		fmt.Fprintln(w, "\nTargets (issue 7, and issue 6 item 8 for the idle error filter; informative, they do not fail make bench):")
		for _, t := range s.Targets {
			got := "-"
			if t.State != "MISSING" {
				got = fmt.Sprintf("%.2fx", t.Got)
			}
			fmt.Fprintf(w, "%-7s %-40s %-24s %7s (want >= %.2fx)\n", t.State, t.Name+",", label(t.Load)+":", got, t.Want)
		}
	}
}

func columns(s *Summary) []string {
	var cs []string
	for _, d := range deviceOrder {
		for _, x := range s.Devices {
			if x == d {
				cs = append(cs, d)
			}
		}
	}
	for _, x := range s.Devices { // unknown ones last
		if _, ok := deviceShort[x]; !ok {
			cs = append(cs, x)
		}
	}
	return cs
}

func table(w io.Writer, s *Summary, title string, cell func(*Result) string) {
	cs := columns(s)
	fmt.Fprintf(w, "\n%s\n%-24s", title, "")
	for _, d := range cs {
		fmt.Fprintf(w, " %12s", short(d))
	}
	fmt.Fprintln(w)
	for _, wl := range s.Workloads {
		fmt.Fprintf(w, "%-24s", label(wl))
		for _, d := range cs {
			v := "-"
			if r := s.Results[wl][d]; r != nil {
				v = cell(r)
			}
			fmt.Fprintf(w, " %12s", v)
		}
		fmt.Fprintln(w)
	}
}

func ratioTable(w io.Writer, s *Summary) {
	fmt.Fprintf(w, "\nRatios (IOPS; > 1 means the first is faster)\n%-24s", "")
	for _, rd := range ratioDefs {
		fmt.Fprintf(w, " %26s", short(rd.Num)+" / "+short(rd.Den))
	}
	fmt.Fprintln(w)
	for _, wl := range s.Workloads {
		fmt.Fprintf(w, "%-24s", label(wl))
		for _, rd := range ratioDefs {
			v := "-"
			if g, ok := s.Ratios[wl][rd.Name]; ok {
				v = fmt.Sprintf("%.2fx", g)
			}
			fmt.Fprintf(w, " %26s", v)
		}
		fmt.Fprintln(w)
	}
}

func short(d string) string {
	if x, ok := deviceShort[d]; ok {
		return x
	}
	return d
}

func thousands(v float64) string {
	n := int64(math.Round(v))
	str := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range str {
		if i > 0 && (len(str)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func mbps(v float64) string {
	if v < 100 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func latency(us float64) string {
	switch {
	case us >= 10000:
		return fmt.Sprintf("%.0f ms", us/1000)
	case us >= 1000:
		return fmt.Sprintf("%.1f ms", us/1000)
	default:
		return fmt.Sprintf("%.0f us", us)
	}
}
