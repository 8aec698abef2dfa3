package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
)

// fioDir is one direction of a job in fio's JSON output.
type fioDir struct {
	IOPS    float64 `json:"iops"`
	BwBytes float64 `json:"bw_bytes"`
	ClatNs  struct {
		Mean       float64            `json:"mean"`
		Percentile map[string]float64 `json:"percentile"`
	} `json:"clat_ns"`
}

// fioOutput is the part of fio's JSON output that the report reads.
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
