// Package nginxtest runs Debian's nginx for tests: a web server on a free
// loopback port, serving the files of a directory with the range requests
// and ETags of a real server, stopped when the test ends. It is imported
// only from _test.go files.
//
// nginx must be installed (scripts/install-deps.sh, package nginx): a
// missing tool fails the test with internal/tooltest's message, it does not
// skip it.
package nginxtest
