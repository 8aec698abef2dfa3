package sources

// Hooks for the external tests, which cannot reach unexported names because
// they import sourcetest, which imports this package.

// MemoryPageSize is the allocation unit of Memory.
const MemoryPageSize = memPageSize

// DisableFallocate makes f behave as on a filesystem without
// fallocate PUNCH_HOLE and ZERO_RANGE, so that Zero writes zeros.
func DisableFallocate(f *File) {
	f.noPunch.Store(true)
	f.noZeroRange.Store(true)
}

// DirectIOLayout returns the file offsets served with O_DIRECT and the
// alignment used, or ok false if f is not in direct I/O mode.
func DirectIOLayout(f *File) (start, end, align int64, ok bool) {
	if f.dio == nil {
		return 0, 0, 0, false
	}
	return f.dio.start, f.dio.end, f.dio.align, true
}

// SetDatasync makes f's Flush call fn instead of fdatasync(2).
func SetDatasync(f *File, fn func(fd int) error) { f.datasync = fn }
