package webhook

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/idna"
)

// maxURLLen bounds stored webhook URLs; browsers and most servers cope
// with 2 KiB, and nothing legitimate needs more.
const maxURLLen = 2048

// URLError says why a webhook URL was refused. Reason reads as the end of a
// sentence whose subject is the URL ("must use http or https"), so the
// caller can prefix it with its own field name. It never contains the full
// URL (which may carry credentials in its query), only the host when the
// host is the problem and the caller wrote it.
//
// Detail, when set, says what the server found out on its own (the address
// a name resolves to): what an operator needs and a client must not see,
// since it maps the inside of previewd's network. It is not part of Error;
// log it, never return it.
type URLError struct {
	Reason string
	Detail string
}

// Error returns Reason.
func (e *URLError) Error() string { return e.Reason }

// CheckURL validates a webhook URL before it is stored; see CheckedURL,
// whose result a caller that stores the URL should keep instead of raw.
func CheckURL(ctx context.Context, raw string, allowPrivate bool, resolver *net.Resolver) error {
	_, err := CheckedURL(ctx, raw, allowPrivate, resolver)
	return err
}

// CheckedURL validates a URL that previewd will post to, or make CSM fetch,
// and returns the form to store and use: raw itself when its host is ASCII,
// otherwise raw with the host in its ASCII (IDNA) form, the name that was
// checked and that net/http would dial anyway.
//
// Syntactic checks, always applied: at most 2048 bytes, absolute, scheme
// http or https, a host, no user info, a valid port, and a host that is
// either a standard IP literal or a plausible DNS name. IPv4 written in
// non-standard notation (decimal "2130706433", octal "0177.0.0.1", hex
// "0x7f.1", short "127.1", leading zeros, a trailing dot) is refused
// outright, because net/url, Go's resolver, the C resolver and the
// receiver's proxies disagree about what those spellings mean. A non-ASCII
// host is mapped with IDNA's lookup profile (UTS #46, as net/http and
// browsers do) first, and every later check sees the mapped name: so
// "ⓛⓞⓒⓐⓛⓗⓞⓢⓣ" is judged as "localhost", and a host that maps to an IP
// address ("127。0。0。1", full-width digits) or does not map at all is
// refused, allowPrivate or not: nobody writes an address that way by
// accident.
//
// Unless allowPrivate is set, the address policy (IsPublic) is applied too:
// an IP literal must be public; "localhost" and names under ".localhost"
// are refused without resolving; any other name is resolved with resolver
// (nil means net.DefaultResolver) and refused if ANY address is non-public.
// If resolution fails the URL is accepted: a name that does not resolve
// today may resolve tomorrow, and Sender re-applies the policy to the
// address it actually dials, which is the check that matters.
//
// Refusals are returned as *URLError; a refusal found by resolving has the
// generic Reason "must resolve to a public address" and the name and
// address in Detail.
func CheckedURL(ctx context.Context, raw string, allowPrivate bool, resolver *net.Resolver) (string, error) {
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	return checkedURL(ctx, raw, allowPrivate, resolver)
}

// checkURL is CheckURL with an optional resolver: nil skips name
// resolution, which Sender does because its dialer checks the real peer.
func checkURL(ctx context.Context, raw string, allowPrivate bool, resolver *net.Resolver) error {
	_, err := checkedURL(ctx, raw, allowPrivate, resolver)
	return err
}

// checkedURL is CheckedURL with an optional resolver (see checkURL).
func checkedURL(ctx context.Context, raw string, allowPrivate bool, resolver *net.Resolver) (string, error) {
	u, err := parseWebhookURL(raw)
	if err != nil {
		return "", err
	}
	host := u.Hostname()
	if addr, err := netip.ParseAddr(host); err == nil {
		if !allowPrivate && !IsPublic(addr) {
			return "", &URLError{Reason: "host " + host + " is not a public address"}
		}
		return raw, nil
	}
	out := raw
	if !isASCII(host) {
		mapped, err := idna.Lookup.ToASCII(host)
		if err != nil {
			return "", &URLError{Reason: "host is not a valid international domain name"}
		}
		if _, err := netip.ParseAddr(mapped); err == nil || endsInNumber(mapped) {
			return "", &URLError{Reason: "host is an IP address in look-alike characters; write IPv4 as four decimal octets"}
		}
		host = mapped
		if p := u.Port(); p != "" {
			u.Host = host + ":" + p
		} else {
			u.Host = host
		}
		if out = u.String(); len(out) > maxURLLen {
			return "", &URLError{Reason: "must be at most " + strconv.Itoa(maxURLLen) + " bytes long once its host is in ASCII form"}
		}
	}
	if endsInNumber(host) {
		return "", &URLError{Reason: "host " + host + " is not a standard IP address; write IPv4 as four decimal octets"}
	}
	if !validHostname(host) {
		return "", &URLError{Reason: "host is not a valid host name"}
	}
	if allowPrivate {
		return out, nil
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return "", &URLError{Reason: "host " + host + " is not a public address"}
	}
	if resolver == nil {
		return out, nil
	}
	addrs, err := resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return out, nil // See CheckedURL: the dial-time check still protects.
	}
	for _, a := range addrs {
		if !IsPublic(a.Unmap()) {
			return "", &URLError{
				Reason: "must resolve to a public address",
				Detail: "host " + host + " resolves to " + a.Unmap().String() + ", which is not a public address",
			}
		}
	}
	return out, nil
}

// parseWebhookURL applies the syntactic checks and returns the parsed URL,
// whose Hostname is the host without brackets or port, percent-decoded as
// net/http will dial it.
func parseWebhookURL(raw string) (*url.URL, error) {
	if len(raw) > maxURLLen {
		return nil, &URLError{Reason: "must be at most " + strconv.Itoa(maxURLLen) + " bytes long"}
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the input; keep it out of the message.
		return nil, &URLError{Reason: "is not a valid URL"}
	}
	if !u.IsAbs() {
		return nil, &URLError{Reason: "must be an absolute URL"}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, &URLError{Reason: "must use http or https"}
	}
	if u.User != nil {
		return nil, &URLError{Reason: "must not contain user info"}
	}
	if u.Opaque != "" || u.Hostname() == "" {
		return nil, &URLError{Reason: "must have a host"}
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, &URLError{Reason: "must have a port between 1 and 65535"}
		}
	}
	return u, nil
}

// isASCII reports whether s is all ASCII. ASCII hosts are not mapped:
// net/http dials them as written, and mapping would refuse names with '_'
// that resolve today.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// endsInNumber reports whether the last label of host is numeric (decimal
// digits, or 0x followed by hex digits). This is the WHATWG URL rule for
// "this host is an IPv4 address", so any such host that did not parse as a
// standard dotted quad is an unusual IPv4 spelling.
func endsInNumber(host string) bool {
	host = strings.TrimSuffix(host, ".")
	last := host[strings.LastIndexByte(host, '.')+1:]
	if last == "" {
		return false
	}
	digits := "0123456789"
	if len(last) >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X') {
		last, digits = last[2:], "0123456789abcdefABCDEF"
	}
	for _, c := range last {
		if !strings.ContainsRune(digits, c) {
			return false
		}
	}
	return true
}

// validHostname reports whether host looks like a DNS name: labels of
// ASCII letters, digits, '-' and '_', 1..63 bytes each, at most 253 bytes,
// an optional trailing dot. It keeps stray syntax (':', '%', '*', '[') out
// of the resolver. IDNs reach it in their ASCII form (see CheckedURL).
func validHostname(host string) bool {
	host = strings.TrimSuffix(host, ".")
	if host == "" || len(host) > 253 {
		return false
	}
	for label := range strings.SplitSeq(host, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			default:
				return false
			}
		}
	}
	return true
}
