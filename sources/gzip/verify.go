package gzip

import (
	"bufio"
	"bytes"
	"io"

	"github.com/klauspost/compress/flate"
)

// verifyLen is how much output after a checkpoint is used to check it.
const verifyLen = 4096

// pendingCP is a checkpoint waiting for the output that follows it.
type pendingCP struct {
	idx    int
	uoff   int64
	window []byte
	expect []byte
}

// copyVerifying is io.Copy from the member's inflater to w that also hands
// each pending checkpoint the verifyLen bytes that follow it, calling done
// once they are there. base is the member's uncompressed offset. It stops
// early when *stop is set.
func copyVerifying(w io.Writer, r io.Reader, base int64, pending *[]*pendingCP, stop *error, buf []byte, done func(*pendingCP)) (int64, error) {
	var n int64
	for *stop == nil {
		k, err := r.Read(buf)
		if k > 0 {
			w.Write(buf[:k])
			pos := base + n // uncompressed offset of buf[0]
			n += int64(k)
			// Checkpoints are recorded during Read, at or after what it
			// has returned before.
			keep := (*pending)[:0]
			for _, pc := range *pending {
				need := pc.uoff + int64(len(pc.expect))
				if need >= pos && need < pos+int64(k) {
					end := min(int64(k), need-pos+int64(verifyLen-len(pc.expect)))
					pc.expect = append(pc.expect, buf[need-pos:end]...)
				}
				if len(pc.expect) >= verifyLen {
					done(pc)
				} else {
					keep = append(keep, pc)
				}
			}
			*pending = keep
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// fixDecoder is what fixCheckpoint reuses from one checkpoint to the next.
type fixDecoder struct {
	in  *bufio.Reader
	fr  io.Reader
	got []byte
}

func newFixDecoder() *fixDecoder {
	return &fixDecoder{in: bufio.NewReaderSize(nil, 64<<10), fr: flate.NewReader(nil), got: make([]byte, verifyLen)}
}

// fixCheckpoint makes sure decoding resumes correctly at cp: it decodes
// the bytes that follow from cp's offset, and from up to 8 bytes before it,
// and keeps the offset that reproduces them. (klauspost/compress v1.20.4
// reports the compressed offset too far after stored blocks: dataBlock adds
// the bytes already in its bit buffer to roffset a second time.)
func fixCheckpoint(d *fixDecoder, r io.ReaderAt, size int64, cp *checkpoint, window, expect []byte) bool {
	got := d.got[:len(expect)]
	for back := int64(0); back <= 8 && cp.coff-back >= 0; back++ {
		at := cp.coff - back
		d.in.Reset(io.NewSectionReader(r, at, size-at))
		err := d.fr.(interface {
			ResetCP(io.Reader, flate.InflateCheckpoint) error
		}).ResetCP(d.in, flate.InflateCheckpoint{UncompressedOffset: cp.uoff, CompressedOffset: at, BitOffset: cp.bit, Window: window})
		if err != nil {
			continue
		}
		n, _ := io.ReadFull(d.fr, got)
		if n == len(expect) && bytes.Equal(got, expect) {
			cp.coff = at
			return true
		}
	}
	return false
}
