package remote

import (
	"github.com/nbdloop/nbdloop/nbd"
	"github.com/nbdloop/nbdloop/sources"
)

// Extents reports the remote export's holes, zeros and data as its server
// tells them (nbd.Client.Extents: NBD_CMD_BLOCK_STATUS where the server
// agreed to extended headers and base:allocation, all data otherwise).
// A connection lost midway is waited for like any request, and the report
// goes on from where it stopped, so no extent is reported twice.
func (s *Source) Extents(off, length int64, fn func(sources.Extent) bool) error {
	if err := sources.CheckRange(off, length, s.info.Size); err != nil {
		return err
	}
	end := off + length
	stopped := false
	return s.call(func(c *nbd.Client) error {
		if stopped || off == end {
			return nil
		}
		return c.Extents(off, end-off, func(e sources.Extent) bool {
			off = e.End()
			stopped = !fn(e)
			return !stopped
		})
	})
}
