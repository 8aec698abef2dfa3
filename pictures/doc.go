// Package pictures draws how a device was used, from the request log that
// the log filter writes (filters.Log): the device is laid out as a square
// along a Hilbert curve, so that nearby offsets stay nearby on the picture,
// and each pixel is coloured by the kind of the last request that touched
// its bytes (read, write, trim/zero: what the run left there) and
// brightened by how many did. Flushes, which have no offset, are ticks on a
// time strip under the square.
//
// Three outputs share one layout (Layout): WritePNG draws a heat map of the
// whole run; WriteGIF an animation of it, one frame per slice of time or of
// requests; WriteHTML one self-contained page (no network) with the frames
// on a canvas, a time slider and the offset and operation under the
// pointer. The log is read twice (once to find its time span and the
// device size, once to draw), record by record: memory is bounded by the
// picture and the number of frames, never by the length of the log.
//
// Hilbert and HilbertXY map between curve indices and grid positions;
// Reader parses log lines, whose op names are those of request.Op (the
// server's and the filters' vocabulary); Classify tells which kind of
// request a colour of the palette stands for (tests and the HTML page use
// it).
//
// Errors carry no "pictures:" prefix; the caller names the log or the
// output in front (draw: LOG: line 3: ...). The ones a caller gives advice
// about are values to test with errors.Is and errors.As, not by their
// text: ErrEmptyLog, ErrUnknownSize, *LineError.
package pictures
