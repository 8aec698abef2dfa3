package main

import (
	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/attach"
	"github.com/nbdloop/nbdloop/internal/bytesize"
)

// The flags of devices made of several files (--concat, --partitions) and
// of partition views (--partition); compositeHelp explains them.

func concatFlag() cli.Flag {
	return &cli.BoolFlag{Name: "concat", Usage: "serve the SOURCEs one after the other as one device (see COMPOSITE DEVICES)"}
}

func partitionsFlag() cli.Flag {
	return &cli.BoolFlag{Name: "partitions", Usage: "build a partitioned disk with one partition per SOURCE, in order (see COMPOSITE DEVICES)"}
}

func tableFlag() cli.Flag {
	return &cli.StringFlag{Name: "table", Usage: "partition table of --partitions: `gpt` (the default) or mbr"}
}

func alignFlag() cli.Flag {
	return &cli.StringFlag{Name: "align", Usage: "start the partitions of --partitions at multiples of `SIZE` (a power of two)", DefaultText: "1M"}
}

func typeFlag() cli.Flag {
	return &cli.StringSliceFlag{Name: "type", Usage: "partition type for --partitions: `N=TYPE` or FILE=TYPE (repeatable); TYPE is linux, swap, esp, msdata, bios, lvm, raid, luks, home, a gdisk code (8200), a GPT type GUID or an MBR ID (0x82)", DefaultText: "detected from the content"}
}

func espFlag() cli.Flag {
	return &cli.BoolFlag{Name: "esp", Usage: "with --partitions, FAT file systems get the EFI system partition type (not Microsoft basic data)"}
}

func partitionFlag() cli.Flag {
	return &cli.IntFlag{Name: "partition", Usage: "serve only partition `N` of SOURCE, found in its MBR or GPT (logical partitions count from 5)"}
}

// multiSource reports whether the command line asks for a device made of
// several SOURCEs.
func multiSource(c *cli.Context) bool {
	return c.Bool("concat") || c.Bool("partitions")
}

// compositeFromFlags fills cfg's composite fields; Config.Validate checks
// them against the rest.
func compositeFromFlags(c *cli.Context, cfg *attach.Config) error {
	switch {
	case c.Bool("concat") && c.Bool("partitions"):
		return usageError("attach: --concat and --partitions exclude each other")
	case c.Bool("concat"):
		cfg.Layout = attach.LayoutConcat
	case c.Bool("partitions"):
		cfg.Layout = attach.LayoutPartitions
	}
	if cfg.Layout != "" {
		cfg.Sources = c.Args().Slice()
	}
	cfg.Table = c.String("table")
	if s := c.String("align"); s != "" {
		a, err := bytesize.Parse(s)
		if err != nil {
			return usageError("attach: --align %q: %v", s, err)
		}
		cfg.Align = a
	}
	cfg.Types = c.StringSlice("type")
	cfg.ESP = c.Bool("esp")
	cfg.Partition = c.Int("partition")
	if c.IsSet("partition") && cfg.Partition < 1 {
		return usageError("attach: --partition %d: partitions are numbered from 1", cfg.Partition)
	}
	return nil
}
