package nbd

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/nbdloop/nbdloop/internal/request"
	"github.com/nbdloop/nbdloop/sources"
)

// maxClientExtents bounds the descriptors kept from one block status
// reply; the rest are read and dropped, and Extents asks again from where
// the kept ones end.
const maxClientExtents = 4096

// blockStatusMax is the most one NBD_CMD_BLOCK_STATUS asks about.
const blockStatusMax = 1 << 40

// clientExtent is one block status descriptor, as a reply gave it.
type clientExtent struct {
	length uint64
	flags  uint64
}

// Extents reports the export's holes, zeros and data over
// [off, off+length) as sources.Extenter does: from NBD_CMD_BLOCK_STATUS
// when the server selected base:allocation (ExportInfo.BaseAllocation),
// asking again from where each reply ends, and otherwise as all data.
// A descriptor with NBD_STATE_HOLE and NBD_STATE_ZERO is a hole, one with
// NBD_STATE_ZERO zeros, any other data (a hole the server does not say
// reads as zeros is data as far as a Source can tell).
func (c *Client) Extents(off, length int64, fn func(sources.Extent) bool) error {
	if err := sources.CheckRange(off, length, c.info.Size); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	if !c.info.BaseAllocation {
		fn(sources.Extent{Off: off, Length: length, Kind: sources.ExtentData})
		return nil
	}
	end := off + length
	// Requests start and end on the server's blocks; what lies outside
	// [off, end) is not reported.
	mb := int64(c.info.MinBlock)
	var exts []clientExtent
	for off < end {
		at := off / mb * mb
		n := min((end+mb-1)/mb*mb, c.info.Size, at+blockStatusMax) - at
		var err error
		if exts, err = c.blockStatus(at, n, exts[:0]); err != nil {
			return err
		}
		for _, e := range exts {
			next := at + int64(min(e.length, uint64(end-at)))
			if next > off {
				if !fn(sources.Extent{Off: off, Length: next - off, Kind: extentKind(e.flags)}) {
					return nil
				}
				off = next
			}
			if at = next; at == end {
				break
			}
		}
	}
	return nil
}

// extentKind is the kind of a base:allocation descriptor's flags.
func extentKind(flags uint64) sources.ExtentKind {
	switch {
	case flags&(StateHole|StateZero) == StateHole|StateZero:
		return sources.ExtentHole
	case flags&StateZero != 0:
		return sources.ExtentZero
	}
	return sources.ExtentData
}

// blockStatus sends one NBD_CMD_BLOCK_STATUS of [off, off+length), on the
// server's blocks, and returns the descriptors of its reply (at least
// one), appended to exts.
func (c *Client) blockStatus(off, length int64, exts []clientExtent) ([]clientExtent, error) {
	cl := c.pool.Get().(*call)
	cl.exts = exts
	err := c.doCall(cl, request.OpBlockStatus, 0, off, uint64(length), nil, nil)
	exts, cl.exts = cl.exts, nil
	c.pool.Put(cl)
	return exts, err
}

// blockStatusChunk reads an NBD_REPLY_TYPE_BLOCK_STATUS_EXT chunk for cl:
// the context must be base:allocation's, the count must match the length,
// and no descriptor may be empty. Descriptors past maxClientExtents are
// read and dropped.
func (c *Client) blockStatusChunk(cl *call, h ExtChunkHeader) error {
	if cl.op != request.OpBlockStatus || h.Length < 8+16 || (h.Length-8)%16 != 0 || h.Length > 8+16<<20 {
		return fmt.Errorf("a block status chunk of %d bytes", h.Length)
	}
	var b [16]byte
	if _, err := io.ReadFull(c.br, b[:8]); err != nil {
		return err
	}
	id, count := binary.BigEndian.Uint32(b[0:4]), binary.BigEndian.Uint32(b[4:8])
	switch {
	case id != c.info.MetaContextID:
		return fmt.Errorf("block status for context %d, not base:allocation's %d", id, c.info.MetaContextID)
	case uint64(count) != (h.Length-8)/16:
		return fmt.Errorf("a block status chunk of %d bytes says %d descriptors", h.Length, count)
	}
	for range count {
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return err
		}
		e := clientExtent{length: binary.BigEndian.Uint64(b[0:8]), flags: binary.BigEndian.Uint64(b[8:16])}
		if e.length == 0 {
			return fmt.Errorf("an empty block status descriptor")
		}
		if len(cl.exts) < maxClientExtents {
			cl.exts = append(cl.exts, e)
		}
	}
	return nil
}
