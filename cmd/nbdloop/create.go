package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/attach"
	"github.com/nbdloop/nbdloop/internal/bytesize"
)

// createHelp is the description of nbdloop create.
const createHelp = "Makes an empty disk of --size bytes in an S3 bucket, under the key prefix\n" +
	"PREFIX/: a manifest object (the size, the object size, the format's version)\n" +
	"and nothing else, since chunks never written are not stored. It refuses a\n" +
	"prefix that holds a disk or chunks of one. Attach it from any machine with\n" +
	"nbdloop attach s3://BUCKET/PREFIX/ (the slash makes it a disk); one machine at\n" +
	"a time writes it (see s3:// under SOURCE). Writes are cached in memory and\n" +
	"uploaded in the background, so a crash of the machine, or a kill -9 of its\n" +
	"server, loses the writes since the last flush (fsync, sync, umount, detach),\n" +
	"never those before it. The S3 client is configured as the AWS CLI's\n" +
	"(AWS_* variables, ~/.aws, AWS_PROFILE, AWS_ENDPOINT_URL)."

func createCommand() *cli.Command {
	return &cli.Command{
		Name:        "create",
		Usage:       "make an empty read-write disk in an S3 bucket",
		UsageText:   "nbdloop create --size SIZE [--object-size SIZE] s3://BUCKET/PREFIX",
		Description: createHelp,
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usageError("create: %v (see nbdloop create --help)", err)
		},
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "size", Usage: "the disk's size in `SIZE` bytes (a multiple of 512)"},
			&cli.StringFlag{Name: "object-size", Value: "4M", Usage: "bytes per chunk object, `SIZE` a power of 2 from 4K to 64M"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError("create: one s3://BUCKET/PREFIX expected (e.g. nbdloop create --size 100G s3://disks/vm1)")
			}
			if !c.IsSet("size") {
				return usageError("create: --size is required (e.g. --size 100G)")
			}
			size, err := bytesize.Parse(c.String("size"))
			if err != nil {
				return usageError("create: --size: %v", err)
			}
			osize, err := bytesize.Parse(c.String("object-size"))
			if err != nil {
				return usageError("create: --object-size: %v", err)
			}
			url, err := attach.CreateBucketDisk(c.Args().First(), size, osize)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "%s: %s in objects of %s (attach it: nbdloop attach %s)\n", url, bytesize.Format(size), bytesize.Format(osize), url)
			return nil
		},
	}
}
