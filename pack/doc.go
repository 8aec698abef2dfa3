// Package pack compresses a disk image into a random-access-friendly file:
// `nbdloop pack IMAGE -o OUT.xz` or `-o OUT.zst`.
//
// The image is cut into blocks of Options.BlockSize uncompressed bytes,
// compressed in parallel on all cores (Options.Workers) and written in
// order, so that nbdloop (or nbdkit's xz filter) can decode any block on
// its own:
//
//   - xz: one stream of LZMA2 blocks whose headers carry both sizes (as
//     multi-threaded xz writes them, so xz -T0 also decompresses it in
//     parallel), a CRC64 check per block, then the index. Compressed with
//     github.com/ulikunitz/xz/lzma (its hash-table matcher);
//     Options.Level 0..9 picks the dictionary size of xz's presets, capped
//     at the block size, and nothing else: levels whose dictionaries are
//     capped to the same size give the same output, and no level matches
//     xz(1)'s of the same number. ulikunitz/xz compresses at a few MiB/s
//     per core, several times slower than xz(1).
//   - zstd: the seekable format: one frame per block (with its content
//     size and checksum) and a seek table in a final skippable frame, which
//     ordinary zstd tools skip. Compressed with
//     github.com/klauspost/compress/zstd at Options.Level (zstd's 1..22
//     scale, mapped to the encoder's four speeds).
//
// Both outputs decompress with the standard xz and zstd tools.
package pack
