package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Group is one comparison group of groups.sh: a few ways of serving one
// image, on the group's own fio jobs.
type Group struct {
	Name    string                        `json:"name"`
	Kinds   []string                      `json:"kinds"`
	Jobs    []string                      `json:"jobs"`
	Results map[string]map[string]*Result `json:"results"` // job -> kind
	// PeakRSSKiB is the server's VmHWM after the jobs, per kind.
	PeakRSSKiB map[string]int64 `json:"peak_rss_kib"`
}

// groupTarget is a target of the issue that asked for a group: name,
// numerator kind, denominator kind, job, minimum ratio (IOPS).
type groupTarget struct {
	name, num, den, job string
	want                float64
}

// groupTargets are each group's targets.
var groupTargets = map[string][]groupTarget{
	"qcow2": {
		{"nbdloop qcow2 >= 1.0x qemu-nbd", "nbdloop-qcow2", "qemu-nbd-qcow2", "randread-4k-qd32", 1.0},
		{"nbdloop qcow2 >= 1.0x qemu-nbd", "nbdloop-qcow2", "qemu-nbd-qcow2", "randwrite-4k-qd32", 1.0},
		{"nbdloop qcow2 >= 1.0x qemu-nbd", "nbdloop-qcow2", "qemu-nbd-qcow2", "read-1m-qd8", 1.0},
		// The first job on a new image: every write allocates (issue 21's leftover).
		{"qcow2 allocating >= 1.0x qemu-nbd", "nbdloop-qcow2", "qemu-nbd-qcow2", "write-1m-qd8", 1.0},
	},
	"http": {
		{"nbdloop http >= 5x nbdkit curl", "nbdloop-http", "nbdkit-curl", "randread-4k-qd32", 5.0},
		{"nbdloop http >= 0.8x curl -o", "nbdloop-http", "curl-download", "read-full-1m-qd8", 0.8},
	},
	"s3": {
		{"nbdloop s3 writes >= 0.7x SDK upload", "nbdloop-s3", "sdk-upload", "write-1m-qd8", 0.7},
	},
	"xz": {
		{"nbdloop xz >= 1.5x nbdkit xz filter", "nbdloop-xz", "nbdkit-xz", "randread-4k-qd32", 1.5},
		{"nbdloop xz >= 1.0x nbdkit xz filter", "nbdloop-xz", "nbdkit-xz", "read-full-1m-qd8", 1.0},
	},
	"net-memory": netTargets("memory", "nbdkit"),
	"net-file":   netTargets("file", "nbdkit", "qemu-nbd"),
	// nbdcopy on the build machine (net_host.sh)
	"host-net-memory": hostNetTargets("memory", "nbdkit"),
	"host-net-file":   hostNetTargets("file", "nbdkit", "qemu-nbd"),
}

// loadGroups reads the groups that meta.txt names.
func loadGroups(raw string, meta map[string]string, s *Summary) {
	for _, g := range strings.Fields(meta["groups"]) {
		grp := &Group{
			Name: g, Kinds: strings.Fields(meta["group_"+g+"_kinds"]), Jobs: strings.Fields(meta["group_"+g+"_jobs"]),
			Results: map[string]map[string]*Result{}, PeakRSSKiB: map[string]int64{},
		}
		for _, j := range grp.Jobs {
			grp.Results[j] = map[string]*Result{}
		}
		for _, k := range grp.Kinds {
			jobs := grp.Jobs
			if v, ok := meta["group_"+g+"_"+k+"_jobs"]; ok { // a kind with fewer jobs
				jobs = strings.Fields(v)
			}
			rs, err := readFioGroups(filepath.Join(raw, "fio", "group-"+g+"-"+k+".json"))
			if err != nil {
				s.Missing = append(s.Missing, fmt.Sprintf("group %s, %s: %v", g, k, err))
				continue
			}
			for _, j := range jobs {
				if r := rs[j]; r != nil {
					grp.Results[j][k] = r
				} else {
					s.Missing = append(s.Missing, fmt.Sprintf("group %s, %s %s: not in fio's output", g, k, j))
				}
			}
		}
		if f, err := os.Open(filepath.Join(raw, "group-"+g+".tsv")); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				fs := strings.Split(sc.Text(), "\t")
				if len(fs) == 2 {
					if v, err := strconv.ParseInt(fs[1], 10, 64); err == nil {
						grp.PeakRSSKiB[fs[0]] = v
					}
				}
			}
			f.Close()
		}
		s.Groups = append(s.Groups, grp)
		for _, t := range groupTargets[g] {
			tg := Target{Name: t.name, Ratio: t.num + "/" + t.den, Load: t.job, Want: t.want, State: "MISSING"}
			n, d := grp.Results[t.job][t.num], grp.Results[t.job][t.den]
			if n != nil && d != nil && d.IOPS > 0 {
				tg.Got = n.IOPS / d.IOPS
				tg.State = "FAIL"
				if tg.Got >= t.want {
					tg.State = "PASS"
				}
			}
			s.Targets = append(s.Targets, tg)
		}
	}
}

// printGroups prints each group: IOPS and MB/s per job and kind, the first
// kind's ratio to each other kind, and the servers' peak memory.
func printGroups(w io.Writer, s *Summary) {
	for _, g := range s.Groups {
		fmt.Fprintf(w, "\nGroup %s (IOPS / MB/s; ratio: %s over each other kind)\n", g.Name, first(g.Kinds))
		fmt.Fprintf(w, "  %-20s", "")
		for _, k := range g.Kinds {
			fmt.Fprintf(w, " %22s", k)
		}
		fmt.Fprintln(w)
		for _, j := range g.Jobs {
			fmt.Fprintf(w, "  %-20s", j)
			for _, k := range g.Kinds {
				cell := "-"
				if r := g.Results[j][k]; r != nil {
					cell = thousands(r.IOPS) + " / " + mbps(r.MBps)
				}
				fmt.Fprintf(w, " %22s", cell)
			}
			fmt.Fprintln(w)
			base := g.Results[j][first(g.Kinds)]
			for _, k := range g.Kinds[1:] {
				if r := g.Results[j][k]; base != nil && r != nil && r.IOPS > 0 {
					fmt.Fprintf(w, "  %-20s %s / %s = %.2fx\n", "", first(g.Kinds), k, base.IOPS/r.IOPS)
				}
			}
		}
		fmt.Fprintf(w, "  %-20s", "peak server RSS")
		for _, k := range g.Kinds {
			cell := "-"
			if v, ok := g.PeakRSSKiB[k]; ok {
				cell = fmt.Sprintf("%d MiB", v>>10)
			}
			fmt.Fprintf(w, " %22s", cell)
		}
		fmt.Fprintln(w)
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
