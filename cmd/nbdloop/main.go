// Command nbdloop attaches files, RAM disks, disk images (qcow2, VMDK),
// compressed files (xz, gzip, zstd), programs and composites of them
// (concatenations, partitioned disks) to Linux NBD devices, like losetup
// does for loop devices, with the NBD server running in nbdloop's own
// background process.
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/attach"
)

// version is set by the Makefile (-ldflags "-X main.version=...").
var version = "dev"

// Exit statuses, documented in the man page's EXIT STATUS section.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// The kernel records the thread that sent NBD_CMD_CONNECT as the device's
// pid (/sys/block/nbdN/pid shows a thread id). Locking the main goroutine to
// the main thread makes that the process id for both the background server
// and --foreground, which connect from the main goroutine.
func init() { runtime.LockOSThread() }

func main() {
	if len(os.Args) > 1 && os.Args[1] == attach.ServeCommand {
		os.Exit(attach.RunServerProcess())
	}
	if len(os.Args) > 1 && os.Args[1] == attach.SuperviseCommand {
		os.Exit(attach.RunSupervisor())
	}
	if len(os.Args) > 1 && os.Args[1] == attach.NetServeCommand {
		os.Exit(attach.RunNetServer())
	}
	if len(os.Args) > 1 && os.Args[1] == attach.NetSupervisorCommand {
		os.Exit(attach.RunNetSupervisor())
	}
	if filepath.Base(os.Args[0]) == mountHelperName {
		os.Exit(runMountHelper(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run executes the command line and returns the exit status; errors are
// printed here once, as one line.
func run(args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	if len(args) == 1 {
		args = append(args, "list") // as losetup lists its devices
	}
	err := app.Run(permuteArgs(app, args))
	if err == nil {
		return exitOK
	}
	if ec, ok := err.(cli.ExitCoder); ok {
		if msg := ec.Error(); msg != "" {
			fmt.Fprintf(stderr, "nbdloop: %s\n", msg)
		}
		return ec.ExitCode()
	}
	fmt.Fprintf(stderr, "nbdloop: %s\n", oneLine(err.Error()))
	return exitError
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// usageError marks bad command lines (exit status 2).
func usageError(format string, a ...any) error {
	return cli.Exit(oneLine(fmt.Sprintf(format, a...)), exitUsage)
}
