// Package kerneltest holds nbdloop's tests against the real Linux NBD
// driver. They are built only with the "kernel" build tag, run as root, and
// fail (never skip) when the driver is missing: `make check` compiles them
// with `go test -c -tags kernel` and runs them inside the VM harness
// (scripts/vm) on hosts without the driver, or natively as root where
// `modprobe nbd` works. scripts/kernel-tests.sh runs them in order:
// TestNoDriver first, before nbd.ko is loaded, then every TestKernel*.
package kerneltest
