package main

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/attach"
	"github.com/nbdloop/nbdloop/internal/bytesize"
)

func resizeCommand() *cli.Command {
	return &cli.Command{
		Name:      "resize",
		Usage:     "make an attached device take its file's new size (losetup -c)",
		UsageText: "nbdloop resize [--json] DEVICE",
		Description: "Gives DEVICE the current size of the file it serves (after truncate -s, or an\n" +
			"extended logical volume), as losetup -c does, without detaching it: its server\n" +
			"hands over to a new one that serves the new size and tells the kernel\n" +
			"(NBD_CMD_RECONFIGURE); I/O pauses meanwhile, as in a restart. --offset and\n" +
			"--sizelimit apply as at attach. Raw files and block devices only: compressed\n" +
			"files, qcow2, VMDK, memory: and composite devices keep their size. A file\n" +
			"system on the device does not grow by itself (resize2fs, xfs_growfs).",
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usageError("resize: %v (see nbdloop resize --help)", err)
		},
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print the device as a JSON object"},
		},
		BashComplete: completeDevices,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError("resize: one DEVICE expected (e.g. nbdloop resize /dev/nbd0)")
			}
			if _, ok := attach.ParseUblkDevice(c.Args().First()); ok {
				return usageError("resize: %s: nbdloop resizes nbd devices only, a ublk device keeps the size it was attached with (detach it and attach again, or attach with --driver nbd)", c.Args().First())
			}
			idx, err := attach.ParseDevice(c.Args().First())
			if err != nil {
				return usageError("resize: %v", err)
			}
			if err := requireRoot("resize"); err != nil {
				return err
			}
			d, err := attach.Resize(context.Background(), idx)
			if err != nil {
				return err
			}
			if c.Bool("json") {
				printDevice(c, d)
				return nil
			}
			fmt.Fprintf(c.App.Writer, "%s: %s (%d bytes)\n", d.Name, bytesize.Format(d.Size), d.Size)
			return nil
		},
	}
}
