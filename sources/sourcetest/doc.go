// Package sourcetest checks that a sources.Source keeps the Source contract,
// in the spirit of testing/iotest and testing/fstest: every backend and
// filter calls Run (or RunSparse) from its own tests.
//
//	func TestMemoryConformance(t *testing.T) {
//		sourcetest.RunSparse(t, func(t *testing.T) sources.Source {
//			m, err := sources.NewMemory(1 << 20)
//			if err != nil {
//				t.Fatal(err)
//			}
//			return m
//		}, 1<<20, sourcetest.Zeros{})
//	}
//
// The checks, one sub-test each: Size; Caps is stable; reads at random
// offsets and lengths (aligned or not) against the reference bytes; reads at
// the end boundary; errors, not panics, for reads and writes outside the
// source (overflowing offsets included); zero-length calls; parallel reads
// when Caps().Parallel; for writable sources, writes read back (at random
// unaligned ranges, and that the source does not keep p), concurrent writes,
// zeros and trims to adjacent disjoint ranges when Caps().Parallel, Zero
// reading back zeros, Trim reading back old bytes or zeros; for read-only
// sources, ErrReadOnly from every modifying call; Flush; a second Close that
// does not panic.
//
// Random choices come from a fixed seed per sub-test, so a failure repeats.
// With -short, fewer random requests are made.
package sourcetest
