//go:build !race

package imagetest

const raceFactor = 1
