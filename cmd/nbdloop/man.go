package main

import "github.com/urfave/cli/v2"

// manPage renders nbdloop(8) from the same command and flag definitions that
// produce --help, so the two cannot drift; `make man` writes it to
// man/nbdloop.8 and a test checks that the committed page is current.
func manPage(app *cli.App) (string, error) {
	return app.ToManWithSection(8)
}
