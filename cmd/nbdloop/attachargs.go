package main

import (
	"errors"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/nbdloop/nbdloop/attach"
)

// attachConfig turns attach arguments that do not come from nbdloop's own
// command line (an nbdtab line, a mount helper's options) into a Config,
// through the attach command's flags and checks, so that they mean exactly
// what they mean to `nbdloop attach`. --run, --foreground and --json ask
// for what only a command line can do and are refused.
func attachConfig(args []string) (attach.Config, error) {
	var cfg attach.Config
	cmd := attachCommand()
	cmd.Action = func(c *cli.Context) error {
		for _, f := range []string{"run", "foreground", "json"} {
			if c.IsSet(f) {
				return usageError("--%s is for the command line only", f)
			}
		}
		var err error
		cfg, err = configFromFlags(c)
		return err
	}
	app := &cli.App{
		Name: "nbdloop", Commands: []*cli.Command{cmd}, Writer: io.Discard, ErrWriter: io.Discard,
		HideHelpCommand: true, ExitErrHandler: func(*cli.Context, error) {},
	}
	if err := app.Run(append([]string{"nbdloop", "attach"}, args...)); err != nil {
		return cfg, err
	}
	if cfg.Source == "" {
		return cfg, errors.New("no SOURCE")
	}
	return cfg, nil
}
