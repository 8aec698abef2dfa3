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
	"encoding/json"
	"flag"
	"fmt"
	"os"
)

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
