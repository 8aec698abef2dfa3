package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Profile summarizes measure.sh's profile run: nbdloop memory, 4k randread
// QD32x2, with the CPU time of every process over a window (from /proc) and
// perf's hottest symbols.
type Profile struct {
	Name      string             `json:"name"`
	Fio       string             `json:"fio"`
	IOPS      float64            `json:"iops"`        // of the whole profile run (perf included)
	Requests  float64            `json:"window_iops"` // device requests completed per second in the window (/sys/block/DEV/stat)
	WindowS   float64            `json:"window_s"`
	CPUs      int                `json:"cpus"`
	Machine   map[string]float64 `json:"machine_pct"` // % of all CPUs: user, system, softirq, idle...
	Server    *ProcCPU           `json:"server,omitempty"`
	Processes []ProcCPU          `json:"processes"`          // busiest first
	Threads   []float64          `json:"server_threads_pct"` // the server's threads, % of one CPU, busiest first
	// Server events per second and per request (by the run's IOPS): syscr
	// and syscw of /proc/PID/io, its threads' context switches.
	EventsPerS   map[string]float64 `json:"server_events_per_s,omitempty"`
	EventsPerReq map[string]float64 `json:"server_events_per_request,omitempty"`
	PerfComm     []string           `json:"perf_comm,omitempty"`
	PerfSyms     []string           `json:"perf_symbols,omitempty"`
	PerfIncl     []string           `json:"perf_nbdloop_inclusive,omitempty"`
	Note         string             `json:"note,omitempty"`
}

// ProcCPU is one process's CPU use in % of one CPU (100 = a whole core).
type ProcCPU struct {
	Comm string  `json:"comm"`
	PID  int     `json:"pid"`
	CPU  float64 `json:"cpu_pct"`
	User float64 `json:"user_pct"`
	Sys  float64 `json:"sys_pct"`
}

type procTimes struct {
	comm       string
	utime, sys float64
}

func readProcs(path string) map[int]procTimes {
	m := map[int]procTimes{}
	b, err := os.ReadFile(path)
	if err != nil {
		return m
	}
	for _, l := range strings.Split(string(b), "\n") {
		lp, rp := strings.IndexByte(l, '('), strings.LastIndexByte(l, ')')
		if lp < 0 || rp < lp {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(l[:lp]))
		if err != nil {
			continue
		}
		f := strings.Fields(l[rp+1:]) // f[0] is field 3 (state)
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseFloat(f[11], 64) // field 14: utime
		s, _ := strconv.ParseFloat(f[12], 64) // field 15: stime
		m[pid] = procTimes{comm: l[lp+1 : rp], utime: u, sys: s}
	}
	return m
}

func readCPULine(path string) []float64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	l, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(l)
	if len(f) < 8 || f[0] != "cpu" {
		return nil
	}
	var v []float64
	for _, x := range f[1:] {
		n, _ := strconv.ParseFloat(x, 64)
		v = append(v, n)
	}
	return v
}

// readProfiles reads every profile/NAME/ that measure.sh wrote.
func readProfiles(dir string) []*Profile {
	es, _ := os.ReadDir(dir)
	var ps []*Profile
	for _, e := range es {
		if e.IsDir() {
			ps = append(ps, readProfile(filepath.Join(dir, e.Name())))
		}
	}
	// The order measure.sh runs them in: 4k first.
	sort.SliceStable(ps, func(i, j int) bool { return strings.Contains(ps[i].Name, "4k") && !strings.Contains(ps[j].Name, "4k") })
	return ps
}

// readProfile reads one profile/NAME/ folder.
func readProfile(dir string) *Profile {
	p := &Profile{Name: filepath.Base(dir), Machine: map[string]float64{}}
	meta, _ := readKV(filepath.Join(dir, "meta.txt"))
	p.Fio = meta["fio"]
	tck, _ := strconv.ParseFloat(meta["clk_tck"], 64)
	if tck == 0 {
		tck = 100
	}
	us, _ := strconv.ParseFloat(meta["window_us"], 64)
	p.WindowS = us / 1e6
	p.CPUs, _ = strconv.Atoi(meta["cpus"])
	server, _ := strconv.Atoi(meta["server_pid"])
	if r, err := readFio(filepath.Join(dir, "fio.json")); err == nil {
		p.IOPS = r.IOPS
	}

	p.readMachine(dir)
	if p.WindowS > 0 {
		p.readProcesses(dir, tck, server)
		p.readThreads(dir, tck)
	}

	d0, d1 := readFields(filepath.Join(dir, "disk.before")), readFields(filepath.Join(dir, "disk.after"))
	if len(d0) > 4 && len(d1) > 4 && p.WindowS > 0 {
		p.Requests = (d1[0] + d1[4] - d0[0] - d0[4]) / p.WindowS // reads and writes completed
	}
	p.readCounters(dir)
	p.PerfComm = perfLines(filepath.Join(dir, "perf-comm.txt"), 12)
	p.PerfSyms = perfLines(filepath.Join(dir, "perf-symbols.txt"), 30)
	p.PerfIncl = perfLines(filepath.Join(dir, "perf-nbdloop-inclusive.txt"), 30)
	if p.PerfSyms == nil {
		if b, err := os.ReadFile(filepath.Join(dir, "perf.log")); err == nil {
			p.Note = strings.TrimSpace(string(b))
		}
	}
	return p
}

// readMachine reads the machine's CPU time by kind over the window
// (/proc/stat's cpu line at both ends) as % of all CPUs.
func (p *Profile) readMachine(dir string) {
	names := []string{"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}
	a, b := readCPULine(filepath.Join(dir, "stat.before")), readCPULine(filepath.Join(dir, "stat.after"))
	if a == nil || b == nil {
		return
	}
	var total float64
	for i := range names {
		if i < len(a) && i < len(b) {
			total += b[i] - a[i]
		}
	}
	for i, n := range names {
		if i < len(a) && i < len(b) && total > 0 {
			p.Machine[n] = 100 * (b[i] - a[i]) / total
		}
	}
}

// readProcesses reads the CPU time each process used in the window
// (tck ticks a second), busiest first; server is the server's pid.
func (p *Profile) readProcesses(dir string, tck float64, server int) {
	before, after := readProcs(filepath.Join(dir, "pids.before")), readProcs(filepath.Join(dir, "pids.after"))
	for pid, t1 := range after {
		t0, ok := before[pid]
		if !ok || t0.comm != t1.comm {
			continue
		}
		du, ds := (t1.utime-t0.utime)/tck, (t1.sys-t0.sys)/tck
		if du+ds <= 0 {
			continue
		}
		pc := ProcCPU{Comm: t1.comm, PID: pid, CPU: 100 * (du + ds) / p.WindowS, User: 100 * du / p.WindowS, Sys: 100 * ds / p.WindowS}
		p.Processes = append(p.Processes, pc)
		if pid == server {
			c := pc
			p.Server = &c
		}
	}
	sort.Slice(p.Processes, func(i, j int) bool { return p.Processes[i].CPU > p.Processes[j].CPU })
}

// readThreads reads the CPU time each of the server's threads used in the
// window (tck ticks a second), busiest first.
func (p *Profile) readThreads(dir string, tck float64) {
	tb, ta := readProcs(filepath.Join(dir, "server-threads.before")), readProcs(filepath.Join(dir, "server-threads.after"))
	for tid, t1 := range ta {
		if t0, ok := tb[tid]; ok {
			if d := (t1.utime + t1.sys - t0.utime - t0.sys) / tck; d > 0 {
				p.Threads = append(p.Threads, 100*d/p.WindowS)
			}
		}
	}
	sort.Sort(sort.Reverse(sort.Float64Slice(p.Threads)))
}

// readCounters reads the server's syscall counts (/proc/PID/io: syscr,
// syscw) and its threads' context switches (/proc/PID/task/*/status) at
// both ends of the window.
func (p *Profile) readCounters(dir string) {
	if p.WindowS <= 0 {
		return
	}
	io := func(when string) map[string]float64 {
		m := map[string]float64{}
		b, _ := os.ReadFile(filepath.Join(dir, "server-io."+when))
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok {
				if n, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					m[k] = n
				}
			}
		}
		return m
	}
	// path:voluntary_ctxt_switches:\tN, one line per thread and kind
	ctxt := func(when string) map[string]float64 {
		m := map[string]float64{}
		b, _ := os.ReadFile(filepath.Join(dir, "server-ctxt."+when))
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Split(l, ":")
			if len(f) != 3 {
				continue
			}
			if n, err := strconv.ParseFloat(strings.TrimSpace(f[2]), 64); err == nil {
				m[f[0]+" "+f[1]] = n
			}
		}
		return m
	}
	counts := map[string]float64{}
	i0, i1 := io("before"), io("after")
	for _, k := range []string{"syscr", "syscw"} {
		if v1, ok := i1[k]; ok {
			counts[k] = v1 - i0[k]
		}
	}
	c0, c1 := ctxt("before"), ctxt("after")
	for k, v1 := range c1 { // threads born in the window count from 0
		kind := "voluntary context switches"
		if strings.HasSuffix(k, " nonvoluntary_ctxt_switches") {
			kind = "involuntary context switches"
		}
		counts[kind] += v1 - c0[k]
	}
	if len(counts) == 0 {
		return
	}
	p.EventsPerS, p.EventsPerReq = map[string]float64{}, map[string]float64{}
	for ev, n := range counts {
		p.EventsPerS[ev] = n / p.WindowS
		if p.Requests > 0 {
			p.EventsPerReq[ev] = n / p.WindowS / p.Requests
		}
	}
}

func readFields(path string) []float64 {
	b, _ := os.ReadFile(path)
	var v []float64
	for _, f := range strings.Fields(string(b)) {
		n, _ := strconv.ParseFloat(f, 64)
		v = append(v, n)
	}
	return v
}

// perfLines returns the first n sample lines of a perf report --stdio.
func perfLines(path string, n int) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		out = append(out, strings.TrimRight(l, " "))
		if len(out) == n {
			break
		}
	}
	return out
}

func printProfile(w io.Writer, p *Profile) {
	dev, load := "nbdloop memory", p.Name
	if l, ok := strings.CutPrefix(p.Name, "ublk-"); ok {
		dev, load = "ublk memory", l
	}
	fmt.Fprintf(w, "\nProfile: %s, %s: %s requests/s in a %.1f s window (%s IOPS over the whole run, perf included), %d CPUs\n",
		dev, label(load), thousands(p.Requests), p.WindowS, thousands(p.IOPS), p.CPUs)
	if len(p.Machine) > 0 {
		fmt.Fprintf(w, "  machine (%% of all CPUs): user %.0f, system %.0f, softirq %.0f, irq %.0f, iowait %.0f, idle %.0f\n",
			p.Machine["user"]+p.Machine["nice"], p.Machine["system"], p.Machine["softirq"], p.Machine["irq"], p.Machine["iowait"], p.Machine["idle"])
	}
	if p.Server != nil {
		fmt.Fprintf(w, "  nbdloop server (pid %d): %.0f%% of a CPU (user %.0f, sys %.0f)", p.Server.PID, p.Server.CPU, p.Server.User, p.Server.Sys)
		if len(p.Threads) > 0 {
			fmt.Fprintf(w, "; %d threads ran, busiest:", len(p.Threads))
			for i, t := range p.Threads {
				if i == 8 {
					break
				}
				fmt.Fprintf(w, " %.0f%%", t)
			}
		}
		fmt.Fprintln(w)
	}
	if len(p.Processes) > 0 {
		fmt.Fprintln(w, "  busiest processes (% of one CPU):")
		for i, pc := range p.Processes {
			if i == 8 {
				break
			}
			fmt.Fprintf(w, "    %-24s %6d %5.0f%%  (user %.0f, sys %.0f)\n", pc.Comm, pc.PID, pc.CPU, pc.User, pc.Sys)
		}
	}
	if len(p.EventsPerReq) > 0 {
		e := p.EventsPerReq
		fmt.Fprintf(w, "  server per request: %.2f read-type + %.2f write-type syscalls (/proc/PID/io), %.2f + %.2f (involuntary) context switches\n",
			e["syscr"], e["syscw"], e["voluntary context switches"], e["involuntary context switches"])
	}
	if len(p.PerfComm) > 0 {
		fmt.Fprintln(w, "  perf, samples by command and object (all CPUs):")
		for _, l := range p.PerfComm {
			fmt.Fprintln(w, "  "+l)
		}
	}
	if len(p.PerfSyms) > 0 {
		fmt.Fprintln(w, "  perf, hottest symbols (all CPUs; raw reports in the raw folder's profile/):")
		for _, l := range p.PerfSyms {
			fmt.Fprintln(w, "  "+l)
		}
	}
	if len(p.PerfIncl) > 0 {
		fmt.Fprintln(w, "  perf, the nbdloop process: inclusive share of its functions (children; % of all samples):")
		for _, l := range p.PerfIncl {
			fmt.Fprintln(w, "  "+l)
		}
	}
	if p.Note != "" {
		fmt.Fprintln(w, "  "+p.Note)
	}
}
