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
	// TLS is set for nbds:// and nbds+unix://: the connection must be
	// upgraded with NBD_OPT_STARTTLS before any other option, or fail.
	// The fields below are its query parameters, and are empty without it.
	TLS bool
	// TLSCertificates is tls-certificates=DIR: the directory of
	// ca-cert.pem, client-cert.pem and client-key.pem (nbdkit's and
	// libnbd's layout); "" leaves the choice to the caller.
	TLSCertificates string
	// TLSHostname is tls-hostname=NAME: the name the server's certificate
	// must carry, in place of the URI's host.
	TLSHostname string
	// TLSNoVerify is tls-verify-peer=false (or 0): the server's
	// certificate is not checked at all.
	TLSNoVerify bool
}

// ErrTLSUnsupported is returned by ParseURI for the TLS features the
// client does not speak: pre-shared keys (tls-psk-file, a user name),
// anonymous TLS (tls-type=anon).
var ErrTLSUnsupported = errors.New("only X.509 certificates are supported for TLS (tls-certificates=DIR)")

// usage is the forms of an NBD URI, for error messages.
const usage = "nbd[s]://HOST[:PORT]/EXPORT or nbd[s]+unix:///EXPORT?socket=PATH"

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
// nbd+unix:///[EXPORT]?socket=PATH, and their TLS forms nbds:// and
// nbds+unix:// with the query parameters tls-certificates=DIR,
// tls-hostname=NAME, tls-verify-peer=true|false (or 1|0) and
// tls-type=x509. Errors are one line that starts with s. A query
// parameter the client does not know is refused, as doc/uri.md asks, and
// so is a tls- parameter without a TLS scheme (nbd:// is plain text);
// pre-shared keys and anonymous TLS are refused with ErrTLSUnsupported.
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
	case "nbd", "nbd+unix", "nbds", "nbds+unix":
	case "":
		return fail("not an NBD URI (%s)", usage)
	default:
		return fail("the %s:// scheme is not supported (%s)", u.Scheme, usage)
	}
	if u.Opaque != "" {
		return fail("no // after %s: (%s)", u.Scheme, usage)
	}
	if u.User != nil {
		return URI{}, fmt.Errorf("%s: a user name is for pre-shared TLS keys (remove %s@): %w", s, u.User.Username(), ErrTLSUnsupported)
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
	q, err := uriQuery(s, u, export)
	if err != nil {
		return URI{}, err
	}
	var uri URI
	if strings.HasSuffix(u.Scheme, "+unix") {
		uri, err = unixURI(s, u, export, q.socket)
	} else {
		uri, err = tcpURI(s, u, export)
	}
	uri.TLS = strings.HasPrefix(u.Scheme, "nbds")
	uri.TLSCertificates, uri.TLSHostname, uri.TLSNoVerify = q.certificates, q.hostname, q.noVerify
	return uri, err
}

// uriFail is the one-line error of URI s.
func uriFail(s, format string, args ...any) error {
	return fmt.Errorf("%s: "+format, append([]any{s}, args...)...)
}

// query is what the query of an NBD URI says.
type query struct {
	socket       string
	certificates string
	hostname     string
	noVerify     bool
}

// uriQuery reads the query of u (URI s): socket= for the Unix schemes,
// the tls- parameters for the TLS schemes, nothing else.
func uriQuery(s string, u *url.URL, export string) (query, error) {
	var out query
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return out, uriFail(s, "bad query: %v", err)
	}
	unix, tls := strings.HasSuffix(u.Scheme, "+unix"), strings.HasPrefix(u.Scheme, "nbds")
	for key, vals := range q {
		if len(vals) != 1 {
			return out, uriFail(s, "%s= is given %d times (give it once)", key, len(vals))
		}
		v := vals[0]
		switch {
		case key == "socket" && unix:
			if v == "" {
				return out, uriFail(s, "give one socket=PATH")
			}
			out.socket = v
		case key == "socket":
			return out, uriFail(s, "socket= applies to %s+unix:// (%s+unix:///%s?socket=PATH)", u.Scheme, u.Scheme, export)
		case key == "tls-psk-file":
			return out, fmt.Errorf("%s: tls-psk-file: %w", s, ErrTLSUnsupported)
		case strings.HasPrefix(key, "tls-") && !tls:
			return out, uriFail(s, "%s= applies to TLS, which %s:// does not use (nbds%s://...)", key, u.Scheme, strings.TrimPrefix(u.Scheme, "nbd"))
		case key == "tls-certificates":
			if v == "" {
				return out, uriFail(s, "tls-certificates= names no directory")
			}
			out.certificates = v
		case key == "tls-hostname":
			if v == "" {
				return out, uriFail(s, "tls-hostname= names no host")
			}
			out.hostname = v
		case key == "tls-verify-peer":
			switch strings.ToLower(v) {
			case "1", "true", "yes", "on":
			case "0", "false", "no", "off":
				out.noVerify = true
			default:
				return out, uriFail(s, "tls-verify-peer=%s: give true or false (1 or 0)", v)
			}
		case key == "tls-type":
			if strings.ToLower(v) != "x509" {
				return out, fmt.Errorf("%s: tls-type=%s: %w", s, v, ErrTLSUnsupported)
			}
		default:
			return out, uriFail(s, "unknown query parameter %q", key)
		}
	}
	return out, nil
}

// unixURI is the nbd[s]+unix URI s (parsed as u) with its socket.
func unixURI(s string, u *url.URL, export, socket string) (URI, error) {
	if u.Host != "" {
		return URI{}, uriFail(s, "a Unix socket URI names no host (%s:///%s?socket=PATH)", u.Scheme, export)
	}
	if socket == "" {
		return URI{}, uriFail(s, "no socket given (%s:///%s?socket=PATH)", u.Scheme, export)
	}
	if socket[0] == 0 {
		socket = "@" + socket[1:]
	}
	return URI{Network: "unix", Address: socket, Export: export}, nil
}

// tcpURI is the nbd[s] URI s (parsed as u): its host and port.
func tcpURI(s string, u *url.URL, export string) (URI, error) {
	host := u.Hostname()
	if host == "" {
		return URI{}, uriFail(s, "no host given (%s://HOST[:PORT]/EXPORT)", u.Scheme)
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
	scheme := "nbd"
	if u.TLS {
		scheme = "nbds"
	}
	var q []string
	if u.Network == "unix" {
		socket := u.Address
		if strings.HasPrefix(socket, "@") {
			socket = "\x00" + socket[1:]
		}
		q = append(q, "socket="+queryEscape(socket))
	}
	if u.TLSCertificates != "" {
		q = append(q, "tls-certificates="+queryEscape(u.TLSCertificates))
	}
	if u.TLSHostname != "" {
		q = append(q, "tls-hostname="+queryEscape(u.TLSHostname))
	}
	if u.TLSNoVerify {
		q = append(q, "tls-verify-peer=false")
	}
	query := ""
	if len(q) > 0 {
		query = "?" + strings.Join(q, "&")
	}
	if u.Network == "unix" {
		return scheme + "+unix://" + path + query
	}
	return scheme + "://" + u.Address + path + query
}

// queryEscape escapes a query value, leaving '/' and ':', which may stand
// in a query as they are (RFC 3986).
func queryEscape(v string) string {
	return strings.NewReplacer("%2F", "/", "%3A", ":").Replace(url.QueryEscape(v))
}
