//go:build race

package imagetest

// raceFactor: the race detector makes allocations bigger and more
// frequent (sync.Pool drops items at random, among others); measured
// bounds are widened by this factor under it.
const raceFactor = 4
