package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// printReport prints the tables `make bench` shows.
func printReport(w io.Writer, s *Summary) {
	if len(s.Devices) > 0 {
		printDevices(w, s)
	}
	if len(s.Attach) > 0 {
		printAttach(w, s)
	}
	printGroups(w, s)
	if len(s.RestartMs) > 0 {
		printRestart(w, s)
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
		printTargets(w, s)
	}
}

// printDevices prints how the devices were measured, then a table each of
// IOPS, MB/s, latency and the ratios.
func printDevices(w io.Writer, s *Summary) {
	m := s.Meta
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

// printAttach prints the median attach and detach time of each kind.
func printAttach(w io.Writer, s *Summary) {
	fmt.Fprintf(w, "\nAttach: wall time to a usable device, median of %s (detach alongside)\n", s.Meta["attach_runs"])
	for _, k := range attachKinds {
		a := s.Attach[k]
		if a == nil {
			fmt.Fprintf(w, "  %-16s  -\n", k)
			continue
		}
		fmt.Fprintf(w, "  %-16s %7.0f ms   (detach %5.0f ms)   %s\n", k, a.MedianAttachMs, a.MedianDetachMs, attachCommand[k])
	}
}

// printRestart prints the median and longest restart gap of each kind.
func printRestart(w io.Writer, s *Summary) {
	fmt.Fprintf(w, "\nRestart gap: kill -9 of the server to the first 4 KiB read served by the next (median, max of %s)\n", s.Meta["restart_runs"])
	for _, k := range restartKinds {
		v := s.RestartMs[k]
		if len(v) == 0 {
			fmt.Fprintf(w, "  %-16s  -\n", k)
			continue
		}
		fmt.Fprintf(w, "  %-16s %7.0f ms   (max %5.0f ms)\n", k, median(v), slices.Max(v))
	}
}

// printTargets prints each target's state and ratio.
func printTargets(w io.Writer, s *Summary) {
	fmt.Fprintln(w, "\nTargets (issue 7, issue 6 item 8 for the idle error filter, issue 21 for ublk and the NBD leftovers; informative, they do not fail make bench):")
	for _, t := range s.Targets {
		got := "-"
		if t.State != "MISSING" {
			got = fmt.Sprintf("%.2fx", t.Got)
		}
		fmt.Fprintf(w, "%-7s %-40s %-24s %7s (want >= %.2fx)\n", t.State, t.Name+",", label(t.Load)+":", got, t.Want)
	}
}

// columns are the devices measured: in deviceOrder, unknown ones last.
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

// table prints the figure cell gives for each workload and device.
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

// ratioTable prints the ratios of ratioDefs for each workload.
func ratioTable(w io.Writer, s *Summary) {
	// Only the ratios of devices that were measured (a subset run has few).
	var defs []string
	for _, rd := range ratioDefs {
		for _, wl := range s.Workloads {
			if _, ok := s.Ratios[wl][rd.Name]; ok {
				defs = append(defs, rd.Name)
				break
			}
		}
	}
	fmt.Fprintf(w, "\nRatios (IOPS; > 1 means the first is faster)\n%-24s", "")
	for _, rd := range ratioDefs {
		if slices.Contains(defs, rd.Name) {
			fmt.Fprintf(w, " %26s", short(rd.Num)+" / "+short(rd.Den))
		}
	}
	fmt.Fprintln(w)
	for _, wl := range s.Workloads {
		fmt.Fprintf(w, "%-24s", label(wl))
		for _, rd := range ratioDefs {
			if !slices.Contains(defs, rd.Name) {
				continue
			}
			v := "-"
			if g, ok := s.Ratios[wl][rd.Name]; ok {
				v = fmt.Sprintf("%.2fx", g)
			}
			fmt.Fprintf(w, " %26s", v)
		}
		fmt.Fprintln(w)
	}
}

// short is device d's column heading.
func short(d string) string {
	if x, ok := deviceShort[d]; ok {
		return x
	}
	return d
}

// thousands formats v rounded, with commas between thousands.
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

// mbps formats MB/s: one decimal below 100.
func mbps(v float64) string {
	if v < 100 {
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// latency formats microseconds, as ms from 1000 up.
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
