package attach

import (
	"fmt"
	"math"
	"os"

	"golang.org/x/sys/unix"

	"github.com/nbdloop/nbdloop/sources"
)

// A memory: device keeps its bytes in a memfd, an anonymous file in shared
// memory, rather than in the server's heap: the supervisor creates it and
// hands it to every server it starts, so a server that crashes and is
// restarted finds the RAM disk as it left it. Holes read as zeros without
// allocating, trim punches holes, and the file can be as large as the
// device (2^63-1 bytes). Once sized, it is sealed against shrinking and
// growing: its size is the device's, and nothing holding the descriptor (a
// restarted server, a program that maps it) sees it change under it.

// newMemfd creates an empty memfd for a memory: device; OpenSource sizes it.
func newMemfd(spec Spec) (*os.File, error) {
	fd, err := unix.MemfdCreate("nbdloop-"+spec.String(), unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("%s: creating the RAM disk (memfd_create): %w", spec, err)
	}
	return os.NewFile(uintptr(fd), spec.String()), nil
}

// openMemory serves a memory: spec from memfile, or from a new memfd when
// memfile is nil (a server without a supervisor). memfile is sized to the
// device here, so a restarted server checks the size it was given, and
// owned by the returned Source.
func openMemory(spec Spec, opts OpenOptions) (*Opened, error) {
	bs := opts.BlockSize
	size := spec.Size
	var warns []string
	if spec.Clamped {
		warns = append(warns, fmt.Sprintf("memory: size clamped to the maximum, %d bytes", int64(math.MaxInt64)))
	}
	if r := size % bs; r != 0 {
		size -= r
		warns = append(warns, fmt.Sprintf("memory:%d: size rounded down to %d bytes, a multiple of the %d-byte block size", spec.Size, size, bs))
	}
	if size == 0 {
		return nil, fmt.Errorf("memory:%d: smaller than one %d-byte block (give a larger size)", spec.Size, bs)
	}
	mf := opts.MemFile
	if mf == nil {
		var err error
		if mf, err = newMemfd(spec); err != nil {
			return nil, err
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(mf.Fd()), &st); err != nil {
		mf.Close()
		return nil, fmt.Errorf("memory:%d: %w", spec.Size, err)
	}
	switch {
	case st.Size == 0:
		if err := unix.Ftruncate(int(mf.Fd()), size); err != nil {
			mf.Close()
			return nil, fmt.Errorf("memory:%d: sizing the RAM disk: %w", spec.Size, err)
		}
	case st.Size != size:
		mf.Close()
		return nil, fmt.Errorf("memory:%d: the RAM disk handed down has %d bytes, not %d (detach the device)", spec.Size, st.Size, size)
	}
	// A memfd made by an older supervisor refuses seals (EPERM); it is
	// then written with pwrite(2), as before.
	unix.FcntlInt(mf.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW)
	f, err := sources.NewFile(mf, fmt.Sprintf("memory:%d", size), sources.FileOptions{ReadOnly: false})
	if err != nil {
		return nil, fmt.Errorf("memory:%d: %w", spec.Size, err)
	}
	var src sources.Source = f
	if opts.ReadOnly {
		src = readOnly{f}
	}
	return &Opened{Source: src, Desc: fmt.Sprintf("memory:%d", size), Format: "memory", Warnings: warns}, nil
}
