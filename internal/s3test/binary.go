package s3test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Version is the SeaweedFS module version that scripts/install-seaweedfs.sh
// builds (its version= line says the same; TestScriptVersion holds them
// together).
const Version = "v0.0.0-20261109003541-7506e5f91cd6"

// Binary returns the path of the weed binary: $NBDLOOP_WEED when set, else
// where scripts/install-seaweedfs.sh caches it for the checkout that holds
// the current directory ($NBDLOOP_SEAWEEDFS_CACHE, the checkout's
// .cache/seaweedfs, or the user's cache directory for a checkout under
// /tmp, /run or /var/tmp). The error says what to run.
func Binary() (string, error) {
	if p := os.Getenv("NBDLOOP_WEED"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("NBDLOOP_WEED=%s: %v (unset it to use the binary scripts/install-seaweedfs.sh builds)", p, err)
		}
		return p, nil
	}
	repo, err := repoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(cacheDir(repo), "weed-"+Version)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("SeaweedFS's weed not found at %s: the test runs it as its S3 server; run scripts/install-seaweedfs.sh (scripts/install-deps.sh, as root, runs it), which builds it from its Go module", p)
	}
	return p, nil
}

// cacheDir is install-seaweedfs.sh's cache directory for the checkout at
// repo.
func cacheDir(repo string) string {
	if d := os.Getenv("NBDLOOP_SEAWEEDFS_CACHE"); d != "" {
		if abs, err := filepath.Abs(d); err == nil {
			return abs
		}
		return d
	}
	for _, hidden := range []string{"/tmp/", "/run/", "/var/tmp/"} {
		if strings.HasPrefix(repo+"/", hidden) {
			base := os.Getenv("XDG_CACHE_HOME")
			if base == "" {
				home := os.Getenv("HOME")
				if home == "" {
					home = "/root"
				}
				base = filepath.Join(home, ".cache")
			}
			return filepath.Join(base, "nbdloop", "seaweedfs")
		}
	}
	return filepath.Join(repo, ".cache", "seaweedfs")
}

// repoRoot is the directory with go.mod above the current directory,
// symbolic links resolved (as the script's realpath does).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	if d, err := filepath.EvalSymlinks(dir); err == nil {
		dir = d
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the current directory: run the test from the checkout, or set NBDLOOP_WEED to the weed binary")
		}
		dir = parent
	}
}
