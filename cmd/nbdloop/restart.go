package main

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/attach"
)

func restartCommand() *cli.Command {
	return &cli.Command{
		Name:      "restart",
		Usage:     "restart the server of an attached device without detaching it",
		UsageText: "nbdloop restart [--force] DEVICE",
		Description: "Starts a new server for DEVICE with the source and options it was attached with,\n" +
			"and hands it to the kernel with NBD_CMD_RECONFIGURE (a ublk device: with ublk's user\n" +
			"recovery): a mounted file system on the device carries on. The supervisor does this by itself when a server dies; use\n" +
			"restart when it gave up (list shows the device dead, with the reason in --json),\n" +
			"after the supervisor itself was killed, or to replace a running server (it is asked\n" +
			"to flush and hand over). A memory: device whose server and supervisor are both gone\n" +
			"has lost its contents: restart refuses it unless --force (it comes back empty).",
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usageError("restart: %v (see nbdloop restart --help)", err)
		},
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "force", Usage: "restart a memory: device whose contents are lost (it comes back empty)"},
			&cli.BoolFlag{Name: "json", Usage: "print the device as a JSON object"},
		},
		BashComplete: completeDevices,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError("restart: one DEVICE expected (e.g. nbdloop restart /dev/nbd0)")
			}
			restart := attach.Restart
			idx, ok := attach.ParseUblkDevice(c.Args().First())
			if ok {
				restart = attach.RestartUblk
			} else {
				var err error
				if idx, err = attach.ParseDevice(c.Args().First()); err != nil {
					return usageError("restart: %v", err)
				}
			}
			if err := requireRoot("restart"); err != nil {
				return err
			}
			d, err := restart(context.Background(), idx, c.Bool("force"))
			if err != nil {
				return err
			}
			if c.Bool("json") {
				printDevice(c, d)
				return nil
			}
			fmt.Fprintf(c.App.Writer, "%s: restarted (server pid %d, restart %d)\n", d.Name, d.PID, d.Restarts)
			return nil
		},
	}
}
