// Package tooltest makes a test that runs an external tool (qemu-img, xz,
// zstd, sgdisk, a headless Chromium, ...) fail with one clear message when
// the tool is missing: the tool's name, the Debian package that provides it
// (read from the `check COMMAND PACKAGE` lines of scripts/install-deps.sh)
// and the script that installs them all. It is imported only from _test.go
// files.
//
// A missing tool fails the test; it never skips it, so that `make check`
// cannot pass on a machine that lacks a tool. `make check` runs
// scripts/install-deps.sh first; a plain `go test ./...` on a machine
// without the tools says what to install instead of failing obscurely.
//
// kerneltest's TestDepsInstalled counts the names given to Require, and
// the first name given to RequireAny (the one to install; the others are
// accepted alternatives), as commands the tests run, so each must have its
// line in install-deps.sh.
package tooltest
