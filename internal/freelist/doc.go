// Package freelist keeps values for reuse, as sync.Pool does, but never
// drops them: a user that gives back what it takes allocates nothing once
// warm, whatever the garbage collector or the race detector do (sync.Pool
// drops values at every collection, and at random under -race). It holds
// at most as many values as were ever taken at once.
package freelist
