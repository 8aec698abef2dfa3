// Package request is the one vocabulary for an NBD request as nbdloop serves
// it: its kind (Op), its command flags (Flags) and the record of one served
// request (Request).
//
// The nbd server decodes Op and Flags from the wire and, after each reply,
// passes a Request to its observer; the log and stats filters (package
// filters) are such observers, and the error and delay filters name the
// kinds of request they act on with Op; package pictures reads the log
// filter's op names back with ParseOp. Op and Flags hold the NBD protocol's
// numbers (NBD_CMD_*, NBD_CMD_FLAG_*), so the wire converts directly and no
// layer has a copy of its own.
//
// The package imports only the standard library, so every layer may import
// it.
package request
