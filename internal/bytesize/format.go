package bytesize

import (
	"fmt"
	"strings"
)

// Format renders n the compact way `list` shows sizes, like lsblk: the
// largest binary unit (K, M, G, T, P, E) that keeps at least one digit
// before the point, one decimal below 100 unless it is zero: 512B, 1.5G,
// 10G, 150G, 8E.
func Format(n int64) string {
	num, unit := scale(n, false)
	if unit == 0 {
		return num + "B"
	}
	return num + string(unit)
}

// Words renders n as Format does, for prose and error messages: with a
// space and IEC units (512 bytes, 1.5 MiB, 64 MiB, 8 EiB), and with the
// ".0" of a figure that is not whole kept, so that a limit one byte short
// of 4 MiB reads 4.0 MiB next to the 4 MiB it refuses.
func Words(n int64) string {
	num, unit := scale(n, true)
	if unit == 0 {
		return num + " bytes"
	}
	return num + " " + string(unit) + "iB"
}

// scale returns the figure of n and its unit letter, 0 for bytes. With
// inexact, a figure below 100 that is not a whole number of units keeps its
// ".0".
func scale(n int64, inexact bool) (string, byte) {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%d", n), 0
	}
	f := float64(n)
	u := -1
	for f >= 1024 && u < len(units)-1 {
		f /= 1024
		u++
	}
	if f >= 100 {
		return fmt.Sprintf("%.0f", f), units[u]
	}
	// One decimal, dropped when it rounds to zero: 1G, not 1.0G (1G+1,
	// 2^63-1024 bytes) nor 100.0G (99.96G).
	s := fmt.Sprintf("%.1f", f)
	if inexact && n&(1<<(10*(u+1))-1) != 0 && len(s) < len("100.0") {
		return s, units[u]
	}
	return strings.TrimSuffix(s, ".0"), units[u]
}
