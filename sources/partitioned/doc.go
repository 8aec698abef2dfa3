// Package partitioned builds partitioned disks from files and reads the
// partition tables of disk images.
//
// New makes a Disk, a sources.Source whose partitions are other Sources
// (files) and whose GPT or MBR tables are synthesized in memory, after
// nbdkit's partitioning plugin: `nbdloop attach --partitions boot.img
// swap.img root.img`. Read parses the GPT or MBR (logical partitions
// included) of an existing image, and OpenPartition exposes one partition
// of it as a sources.Window: `nbdloop attach --partition 2 disk.img`.
//
// The files are split by concern as in nbdkit: gpt.go and mbr.go hold the
// on-disk structures, guid.go the mixed-endian GUIDs, types.go the partition
// types (names, GPT GUIDs, MBR IDs), detect.go the content detection that
// picks a type for each file, disk.go the builder and read.go the reader.
//
// # Errors
//
// Errors say what is wrong with the table, the partition or the type, and
// carry no "partitioned:" prefix: users never name this package, so the
// caller, which knows what they asked for, adds the "what:" in front
// (attach: "partitions: ...", "--type 2=swap: ...", "disk.img: ..."), and
// never has to strip anything. Callers that word a case their own way test
// for it with errors.Is or errors.As (ErrNoTable, ErrTooLarge,
// *NoPartitionError), not by the text.
package partitioned
