package webhook

import (
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

// NormalizeHost returns the one spelling of a URL host (as url.URL.Hostname
// gives it: no brackets, no port) under which limits count it: lower case,
// without a trailing dot, a non-ASCII name in its ASCII (IDNA lookup
// profile, UTS #46) form, and an IP literal in its canonical form with an
// IPv4-mapped IPv6 address written as the IPv4 address it reaches. So
// "LOCALHOST.", "ｌｏｃａｌｈｏｓｔ" and "localhost" are one host, as are
// "::ffff:127.0.0.1" and "127.0.0.1".
//
// A name that IDNA cannot map is returned lower-cased and without its
// trailing dot rather than refused: CheckURL decides what may be stored,
// this only decides what counts as the same receiver.
func NormalizeHost(host string) string {
	if addr, err := netip.ParseAddr(host); err == nil {
		return addr.Unmap().WithZone("").String()
	}
	if !isASCII(host) {
		// ASCII names are left to lower-casing: the lookup profile refuses
		// '_', which real names carry and net/http dials as written.
		if mapped, err := idna.Lookup.ToASCII(host); err == nil {
			host = mapped
		}
	}
	return strings.TrimSuffix(strings.ToLower(host), ".")
}

// RegistrableDomain returns the registrable domain (public suffix plus one
// label, "evil.example" for "a.b.evil.example") of a host normalised by
// NormalizeHost: the unit one party controls, since whoever holds a domain
// can mint any number of names under it (wildcard DNS). A host that has none
// (an IP literal, a single label such as "localhost", a public suffix itself
// such as "github.io") is its own domain.
func RegistrableDomain(host string) string {
	if _, err := netip.ParseAddr(host); err == nil {
		return host
	}
	d, err := publicsuffix.EffectiveTLDPlusOne(host)
	if err != nil {
		return host
	}
	return d
}
