package main

import (
	"os"
	"runtime/debug"
	"strconv"
	"time"
)

// manStampInfo is what the man page's .TH line says of the build: its date
// (YYYY-MM-DD, or "") and nbdloop's version.
type manStampInfo struct {
	date, version string
}

// manStamp returns the page's date and version. The version is
// main.version (the Makefile sets it). The date is SOURCE_DATE_EPOCH's when
// that is set (reproducible builds; `make man` sets it to the date of the
// last commit that changed the help texts, so that the checked-in page
// changes only with them), else the date of the commit the binary was
// built from, else none.
func manStamp() manStampInfo {
	return manStampInfo{date: manDate(os.Getenv("SOURCE_DATE_EPOCH"), buildTime()), version: version}
}

// manDate is the page's date: epoch (seconds, as SOURCE_DATE_EPOCH) if it
// is a number, else built, in UTC.
func manDate(epoch string, built time.Time) string {
	if epoch != "" {
		if s, err := strconv.ParseInt(epoch, 10, 64); err == nil {
			return time.Unix(s, 0).UTC().Format(time.DateOnly)
		}
	}
	if built.IsZero() {
		return ""
	}
	return built.UTC().Format(time.DateOnly)
}

// buildTime is the time of the commit the binary was built from (zero when
// the build did not record it).
func buildTime() time.Time {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return time.Time{}
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.time" {
			t, _ := time.Parse(time.RFC3339, s.Value)
			return t
		}
	}
	return time.Time{}
}
