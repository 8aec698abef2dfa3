// Package blockcache serves random reads from a compressed image that is
// split into independently decodable segments (xz blocks, zstd frames, gzip
// checkpoint intervals). The format packages describe the segments and open a
// decoder for one; the Cache does the rest, for every connection at once:
//
//   - Decoded bytes are kept in chunks of Options.Chunk bytes (1 MiB) in one
//     LRU cache whose memory, decoders included, stays within Options.Budget.
//     All-zero chunks cost no memory.
//   - Different segments decode in parallel; a segment is never decoded twice
//     at once: a reader that needs a chunk that a running decode will produce
//     waits for it, and is served as soon as that chunk is out, not when the
//     segment is done.
//   - A decode of a large segment stops once its readers are served and parks
//     its decoder, so a later read further into the segment continues from
//     there instead of starting over (sequential reads through a large block
//     decode it once). Small segments are decoded to their end.
//   - When reads run sequentially, the segments ahead are decoded in the
//     background, up to Options.Readahead at once (all cores by default).
//   - With Options.OpenRun (segments that are slices of one stream: a
//     remote object in blocks), the segments ahead of a sequential reader
//     are fetched in runs instead: one decoder (one request) for many
//     segments, each published as it arrives, so a reader waits for its own
//     segment, not for the run's end. A run is as long as what is ahead of
//     the reader already (the window grows while reads stay in order), at
//     least Readahead chunks and at most Options.RunMax, and runs go on
//     being started while there is room for a whole one within Readahead
//     times RunMax (and half the budget) ahead of the reader: that many
//     runs in flight at once. A run that fails
//     fails the reads waiting on the segment it broke in; the segments
//     after it are fetched on demand again.
//   - A segment marked Spill (a whole image in one block) is decoded once, in
//     the background from the start, into a sparse temporary file; a read
//     waits until the decoder has passed its range. The spill file is
//     bounded (see Options.SpillLimit): a Spill segment larger than the
//     bound is refused by New, and a decode that would write past it fails.
//
// Lend hands out a range as slices of the cached chunks themselves, for a
// reply written without a copy: the chunks stay pinned (not evicted, not
// reused, still charged to the budget) until the loan is released. A
// decode writes into the buffer of the chunk its reservation evicted
// (ReadAt also pins the chunk it copies from), so a cache that streams
// through its budget reuses its memory instead of allocating.
//
// Memory: a decoder starts only when its memory (Segment.Mem) and a chunk
// fit in the budget (a decoder that reports its real memory once opened, see
// MemReader, is charged that instead, and waits for room like a new one) after evicting what can be evicted; otherwise it waits
// for a running one to end. Chunks that readers are waiting for are never
// evicted before they have them (so decodes cannot thrash). The budget is
// exceeded only by one decoder when nothing else runs, by the chunks
// readers are waiting for or hold lent, and by one spare chunk (the buffer
// of a chunk that decoded to zeros, or of a failed decode, kept for the
// next decode).
//
// Errors: chunks are published as they are decoded, so a read can be
// served before the decoder has reached the segment's end and verified its
// checksum. A decode that fails drops every chunk of its segment, and the
// segment then fails every read (it is not decoded again), unless
// Options.Transient says that failures pass (a network): then only the
// reads waiting on that decode fail, and the next one tries again.
package blockcache
