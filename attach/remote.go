package attach

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"

	"github.com/nbdloop/nbdloop/nbd"
	"github.com/nbdloop/nbdloop/nbd/remote"
	"github.com/nbdloop/nbdloop/sources"
)

// nbd://HOST[:PORT]/EXPORT and nbd+unix:///EXPORT?socket=PATH serve an
// export of a remote NBD server (nbd/remote), and nbds:// and nbds+unix://
// the same over TLS (remotetls.go). There is no local file to pin or
// lock; a relative socket path and tls-certificates directory are made
// absolute when the request is pinned, so that a restarted server finds
// the same ones.

// parseRemoteSpec parses an NBD URI; the Spec's Path is its canonical
// form (the port and the socket path as the URI's String writes them).
func parseRemoteSpec(s string) (Spec, error) {
	u, err := nbd.ParseURI(s)
	if err != nil {
		return Spec{}, err
	}
	return Spec{Kind: KindNBD, Path: u.String(), Remote: u}, nil
}

// remoteAbsolute returns spec with a relative Unix socket path and
// tls-certificates directory made absolute against wd.
func remoteAbsolute(spec Spec, wd string) Spec {
	r := &spec.Remote
	if r.Network == "unix" && !filepath.IsAbs(r.Address) && r.Address[0] != '@' {
		r.Address = filepath.Join(wd, r.Address)
	}
	if r.TLSCertificates != "" && !filepath.IsAbs(r.TLSCertificates) {
		r.TLSCertificates = filepath.Join(wd, r.TLSCertificates)
	}
	spec.Path = r.String()
	return spec
}

// openRemote connects to the export. A size that is not a multiple of
// the block size is rounded down, as for exec:, since the server decides
// it, not the user.
func openRemote(spec Spec, opts OpenOptions) (*Opened, error) {
	ropts := remote.Options{ReadOnly: opts.ReadOnly, RetryWindow: opts.RemoteRetry, Logf: opts.Logf}
	if spec.Remote.TLS {
		cfg, err := clientTLSConfig(spec.Remote)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", spec, err)
		}
		ropts.TLSConfig = cfg
	}
	src, err := remote.Open(context.Background(), spec.Remote, ropts)
	if err != nil {
		hint := ""
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			hint = " (is the server running?)"
		}
		return nil, fmt.Errorf("%s: %w%s", spec, err, hint)
	}
	bs := opts.BlockSize
	if m := int64(src.Info().MinBlock); m > bs {
		src.Close()
		hint := fmt.Sprintf("attach with -b %d", m)
		if m > 4096 {
			hint = "nbdloop's block size is at most 4096"
		}
		return nil, fmt.Errorf("%s: the server's minimum block size is %d bytes, more than the %d-byte block size (%s)", spec, m, bs, hint)
	}
	size := src.Size()
	var s sources.Source = src
	var warns []string
	if r := size % bs; r != 0 {
		if size < bs {
			src.Close()
			return nil, fmt.Errorf("%s: the export has %d bytes, less than one %d-byte block", spec, size, bs)
		}
		w, err := sources.NewWindow(src, 0, size-r)
		if err != nil {
			src.Close()
			return nil, fmt.Errorf("%s: %w", spec, err)
		}
		s = w
		warns = append(warns, fmt.Sprintf("%s: size %d rounded down to %d bytes, a multiple of the %d-byte block size", spec, size, size-r, bs))
	}
	return &Opened{Source: s, Desc: spec.String(), Format: "nbd", Warnings: warns}, nil
}
