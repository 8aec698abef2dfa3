package main

// Dir is one direction (read or write) of a Result.
type Dir struct {
	IOPS   float64 `json:"iops"`
	MBps   float64 `json:"mb_per_s"`
	P99us  float64 `json:"p99_us"`
	MeanUs float64 `json:"mean_us"`
}

// Result is one fio job (a workload) on one device.
type Result struct {
	IOPS   float64 `json:"iops"`
	MBps   float64 `json:"mb_per_s"` // 10^6 bytes per second
	P99us  float64 `json:"p99_us"`   // completion latency; the worse direction for mixed runs
	Read   *Dir    `json:"read,omitempty"`
	Write  *Dir    `json:"write,omitempty"`
	UsrCPU float64 `json:"fio_usr_cpu_pct"`
	SysCPU float64 `json:"fio_sys_cpu_pct"`
}

// Target is one target of the issues and whether the run met it.
type Target struct {
	Name  string  `json:"name"`
	Ratio string  `json:"ratio"`
	Load  string  `json:"workload"`
	Want  float64 `json:"want"`
	Got   float64 `json:"got"`
	State string  `json:"state"` // PASS, FAIL, MISSING
}

// Attach holds one kind's attach and detach times in ms.
type Attach struct {
	AttachMs       []float64 `json:"attach_ms"`
	DetachMs       []float64 `json:"detach_ms"`
	MedianAttachMs float64   `json:"median_attach_ms"`
	MedianDetachMs float64   `json:"median_detach_ms"`
}

// Summary is what one run measured, as -json writes it.
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
