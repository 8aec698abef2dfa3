package vmdk

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
)

// newCID writes a new random CID into the descriptor: the CID identifies
// the disk's contents, and delta disks record their parent's in parentCID.
// A descriptor without a CID line, or an embedded one with no room left,
// is left alone.
func (d *Disk) newCID() error {
	raw := d.descRaw
	if i := bytes.IndexByte(raw, 0); i >= 0 {
		raw = raw[:i]
	}
	if raw == nil {
		return nil
	}
	cid := d.desc.CID
	for cid == d.desc.CID || cid == NoParent {
		cid = rand.Uint32()
	}
	var out []byte
	at := 0
	for l := range strings.Lines(string(raw)) {
		if k, _, ok := strings.Cut(strings.TrimSpace(l), "="); ok && strings.TrimSpace(k) == "CID" {
			eol := l[len(strings.TrimRight(l, "\r\n")):]
			out = fmt.Appendf(append([]byte(nil), raw[:at]...), "CID=%08x%s", cid, eol)
			out = append(out, raw[at+len(l):]...)
			break
		}
		at += len(l)
	}
	if out == nil {
		return nil
	}
	switch {
	case d.descSparse != nil:
		if int64(len(out)) > d.descMax {
			return nil
		}
		buf := make([]byte, max(len(out), len(raw)))
		copy(buf, out)
		if _, err := d.descSparse.f.WriteAt(buf, d.descOff); err != nil {
			return fmt.Errorf("%s: writing the new CID into the descriptor: %w", d.path, err)
		}
	default:
		f, err := os.OpenFile(d.descFile, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("writing the new CID into the descriptor: %w", err)
		}
		defer f.Close()
		if _, err := f.WriteAt(out, 0); err != nil {
			return fmt.Errorf("writing the new CID into the descriptor: %w", err)
		}
		if err := f.Truncate(int64(len(out))); err != nil {
			return fmt.Errorf("writing the new CID into the descriptor: %w", err)
		}
	}
	d.desc.CID = cid
	return nil
}
