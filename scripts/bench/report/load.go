package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// load reads the raw folder measure.sh wrote into a Summary. What is
// missing from it is listed in Summary.Missing, not returned as an error.
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
	s.loadResults(raw)
	s.loadFills(raw)
	s.loadFailures(raw)
	s.loadAttach(raw)
	s.loadRestart(raw)
	s.Profiles = readProfiles(filepath.Join(raw, "profile"))
	s.Targets = targets(s)
	loadGroups(raw, meta, s)
	return s, nil
}

// loadResults reads each device's fio output into Results, by workload,
// and computes the Ratios.
func (s *Summary) loadResults(raw string) {
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
}

// loadFills reads the speed of the devices' first writes, where measured.
func (s *Summary) loadFills(raw string) {
	for _, d := range s.Devices {
		if r, err := readFio(filepath.Join(raw, "fio", d+"-fill.json")); err == nil {
			s.FillMBps[d] = r.MBps
		}
	}
}

// loadFailures lists what measure.sh said it could not do.
func (s *Summary) loadFailures(raw string) {
	if b, err := os.ReadFile(filepath.Join(raw, "failures")); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l != "" {
				s.Missing = append(s.Missing, "measure.sh: "+l)
			}
		}
	}
}

// loadAttach reads the attach and detach times, when meta.txt says they
// were measured, and lists the kinds with fewer than attach_runs.
func (s *Summary) loadAttach(raw string) {
	runs, _ := strconv.Atoi(s.Meta["attach_runs"])
	if runs <= 0 {
		return
	}
	if err := readAttach(filepath.Join(raw, "attach.tsv"), s.Attach); err != nil {
		s.Missing = append(s.Missing, "attach times: "+err.Error())
	}
	for _, k := range attachKinds {
		if a := s.Attach[k]; a == nil || len(a.AttachMs) < runs {
			s.Missing = append(s.Missing, "attach time of "+k)
		}
	}
}

// loadRestart reads the restart gaps, when meta.txt says they were
// measured, and lists the kinds with fewer than restart_runs.
func (s *Summary) loadRestart(raw string) {
	runs, _ := strconv.Atoi(s.Meta["restart_runs"])
	if runs <= 0 {
		return
	}
	s.RestartMs = map[string][]float64{}
	if err := readRestart(filepath.Join(raw, "restart.tsv"), s.RestartMs); err != nil {
		s.Missing = append(s.Missing, "restart gaps: "+err.Error())
	}
	for _, k := range restartKinds {
		if len(s.RestartMs[k]) < runs {
			s.Missing = append(s.Missing, "restart gaps of "+k)
		}
	}
}

// readKV reads a file of KEY=VALUE lines.
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

// readAttach reads attach.tsv (kind, attach ms, detach ms) into m and
// sets the medians.
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

// median is the median of v (0 when v is empty).
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
