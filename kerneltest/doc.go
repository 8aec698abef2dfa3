// Package kerneltest holds nbdloop's tests against the real Linux NBD
// driver. They are built only with the "kernel" build tag, run as root, and
// fail (never skip) when the driver is missing: `make check` compiles them
// with `go test -c -tags kernel` and runs them inside the VM harness
// (scripts/vm) on hosts without the driver, once on Debian 12's Linux 6.1
// and once on Debian 13's Linux 6.12 (every test on both), or natively as
// root where `modprobe nbd` works. scripts/kernel-tests.sh runs them in
// order: TestNoDriver first, before nbd.ko is loaded, then every
// TestKernel*.
//
// Two tests of the whole repository run without the tag, in plain
// `go test ./...`: TestDepsInstalled (scripts/install-deps.sh checks every
// command the tests run) and TestImportArrows (the packages import along
// the arrows cmd -> attach -> filters, nbd, kernel -> sources -> internal,
// table in layers_test.go).
package kerneltest
