// Package bytesize is nbdloop's one vocabulary for byte counts: the SIZE
// grammar that every option, SOURCE, filter value and exec: program reply
// is read with, and the two ways sizes are printed.
//
// Parse reads the grammar of losetup(8) and the rest of util-linux: decimal
// digits, then optionally B, or K, M, G, T, P or E, alone or followed by
// "iB" for powers of 1024, or followed by "B" for powers of 1000 ("1K" and
// "1KiB" are 1024, "1KB" is 1000; letters in either case). Its errors are
// values (ErrEmpty, ErrSyntax, *SuffixError, ErrTooLarge) so that callers
// word them for their context without looking at the text.
//
// Format prints a size the compact way `list`, `top` and `pack` show it
// (1.5G, like lsblk); Words prints the same figure for prose and error
// messages (1.5 GiB, 512 bytes).
//
// The errors of this package carry no "bytesize:" prefix: the caller, who
// knows what the size was for, names it (--offset "12Q": unknown suffix).
package bytesize
