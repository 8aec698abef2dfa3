package nbd

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// DefaultPort is the NBD port assigned by IANA, used when a URI names none.
const DefaultPort = 10809

// URI is an NBD URI (the NBD project's doc/uri.md): where a server listens
// and which of its exports to use.
type URI struct {
	// Network is "tcp" (nbd://) or "unix" (nbd+unix://).
	Network string
	// Address is host:port for "tcp" and the socket's path for "unix"
	// (an abstract socket's name starts with '@', as net.Dial has it).
	Address string
	// Export is the export name: the URI's path without its first '/',
	// decoded; "" asks for the server's default export.
	Export string
}

// ErrTLSUnsupported is returned by ParseURI for the TLS schemes (nbds://,
// nbds+unix://) and TLS parameters, which the client does not speak yet.
var ErrTLSUnsupported = errors.New("TLS (nbds://) is not supported yet: use nbd:// on a trusted network, or tunnel it through ssh")

// IsURI reports whether s is written as an NBD URI (its scheme is one of
// nbd, nbds, nbd+unix, nbds+unix, nbd+vsock, any case), valid or not.
func IsURI(s string) bool {
	scheme, _, ok := strings.Cut(s, "://")
	if !ok {
		return false
	}
	switch strings.ToLower(scheme) {
	case "nbd", "nbds", "nbd+unix", "nbds+unix", "nbd+vsock", "nbds+vsock":
		return true
	}
	return false
}

// ParseURI parses an NBD URI: nbd://HOST[:PORT][/EXPORT] or
// nbd+unix:///[EXPORT]?socket=PATH. Errors are one line that starts with
// s. The TLS schemes are refused with ErrTLSUnsupported, and so is any
// query parameter the client does not know, as doc/uri.md asks.
func ParseURI(s string) (URI, error) {
	fail := func(format string, args ...any) (URI, error) {
		return URI{}, fmt.Errorf("%s: "+format, append([]any{s}, args...)...)
	}
	u, err := url.Parse(s)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fail("not a valid URI: %v", err)
	}
	switch u.Scheme = strings.ToLower(u.Scheme); u.Scheme {
	case "nbd", "nbd+unix":
	case "nbds", "nbds+unix":
		return URI{}, fmt.Errorf("%s: %w", s, ErrTLSUnsupported)
	case "":
		return fail("not an NBD URI (nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH)")
	default:
		return fail("the %s:// scheme is not supported (nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH)", u.Scheme)
	}
	if u.Opaque != "" {
		return fail("no // after %s: (nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH)", u.Scheme)
	}
	if u.User != nil {
		return fail("a user name applies to TLS, which is not supported yet (remove %s@)", u.User.Username())
	}
	if u.Fragment != "" || strings.HasSuffix(s, "#") {
		return fail("an NBD URI has no #fragment (remove it)")
	}
	export := strings.TrimPrefix(u.Path, "/")
	if len(export) > MaxNameLength {
		return fail("the export name is %d bytes, over the protocol's limit of %d", len(export), MaxNameLength)
	}
	if strings.IndexByte(export, 0) >= 0 {
		return fail("the export name contains a NUL byte")
	}
	socket, err := uriSocket(s, u, export)
	if err != nil {
		return URI{}, err
	}
	if u.Scheme == "nbd+unix" {
		return unixURI(s, u, export, socket)
	}
	return tcpURI(s, u, export)
}

// uriFail is the one-line error of URI s.
func uriFail(s, format string, args ...any) error {
	return fmt.Errorf("%s: "+format, append([]any{s}, args...)...)
}

// uriSocket reads the query of u (URI s): socket= for nbd+unix, nothing
// else.
func uriSocket(s string, u *url.URL, export string) (string, error) {
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return "", uriFail(s, "bad query: %v", err)
	}
	var socket string
	for key, vals := range q {
		switch {
		case key == "socket" && u.Scheme == "nbd+unix":
			if len(vals) != 1 || vals[0] == "" {
				return "", uriFail(s, "give one socket=PATH")
			}
			socket = vals[0]
		case key == "socket":
			return "", uriFail(s, "socket= applies to nbd+unix:// (nbd+unix:///%s?socket=PATH)", export)
		case strings.HasPrefix(key, "tls-"):
			return "", fmt.Errorf("%s: %s: %w", s, key, ErrTLSUnsupported)
		default:
			return "", uriFail(s, "unknown query parameter %q", key)
		}
	}
	return socket, nil
}

// unixURI is the nbd+unix URI s (parsed as u) with its socket.
func unixURI(s string, u *url.URL, export, socket string) (URI, error) {
	if u.Host != "" {
		return URI{}, uriFail(s, "a Unix socket URI names no host (nbd+unix:///%s?socket=PATH)", export)
	}
	if socket == "" {
		return URI{}, uriFail(s, "no socket given (nbd+unix:///%s?socket=PATH)", export)
	}
	if socket[0] == 0 {
		socket = "@" + socket[1:]
	}
	return URI{Network: "unix", Address: socket, Export: export}, nil
}

// tcpURI is the nbd URI s (parsed as u): its host and port.
func tcpURI(s string, u *url.URL, export string) (URI, error) {
	host := u.Hostname()
	if host == "" {
		return URI{}, uriFail(s, "no host given (nbd://HOST[:PORT]/EXPORT)")
	}
	port := DefaultPort
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return URI{}, uriFail(s, "port %s is out of range (1-65535)", p)
		}
		port = n
	} else if strings.HasSuffix(u.Host, ":") {
		return URI{}, uriFail(s, "empty port after the colon (omit it for %d)", DefaultPort)
	}
	return URI{Network: "tcp", Address: net.JoinHostPort(host, strconv.Itoa(port)), Export: export}, nil
}

// String renders u as a URI that ParseURI reads back as u.
func (u URI) String() string {
	path := (&url.URL{Path: "/" + u.Export}).EscapedPath()
	if u.Network == "unix" {
		socket := u.Address
		if strings.HasPrefix(socket, "@") {
			socket = "\x00" + socket[1:]
		}
		// '/' and ':' may stand in a query as they are (RFC 3986).
		q := strings.NewReplacer("%2F", "/", "%3A", ":").Replace(url.QueryEscape(socket))
		return "nbd+unix://" + path + "?socket=" + q
	}
	return "nbd://" + u.Address + path
}
