package webhook

import "net/netip"

// Address blocks webhooks may not reach. They are read-only after package
// initialisation. Sources: the IANA IPv4 and IPv6 Special-Purpose Address
// Registries, plus ranges that embed or hide an IPv4 address.
var (
	nonPublic4 = []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),       // "this network", unspecified
		netip.MustParsePrefix("10.0.0.0/8"),      // private
		netip.MustParsePrefix("100.64.0.0/10"),   // CGNAT shared space (cloud metadata lives here too)
		netip.MustParsePrefix("127.0.0.0/8"),     // loopback
		netip.MustParsePrefix("169.254.0.0/16"),  // link-local, incl. 169.254.169.254 metadata
		netip.MustParsePrefix("172.16.0.0/12"),   // private
		netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
		netip.MustParsePrefix("192.0.2.0/24"),    // documentation TEST-NET-1
		netip.MustParsePrefix("192.88.99.0/24"),  // deprecated 6to4 relay anycast
		netip.MustParsePrefix("192.168.0.0/16"),  // private
		netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
		netip.MustParsePrefix("198.51.100.0/24"), // documentation TEST-NET-2
		netip.MustParsePrefix("203.0.113.0/24"),  // documentation TEST-NET-3
		netip.MustParsePrefix("224.0.0.0/4"),     // multicast
		netip.MustParsePrefix("240.0.0.0/4"),     // reserved, incl. 255.255.255.255 broadcast
	}

	// nonPublic6 documents the IPv6 blocks. Most lie outside 2000::/3 and are
	// refused by the global-unicast test anyway; they are listed so the
	// policy reads as one table and survives a change to that test.
	nonPublic6 = []netip.Prefix{
		netip.MustParsePrefix("::/96"),          // unspecified, loopback, deprecated IPv4-compatible
		netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64: the embedded IPv4 is site-specific
		netip.MustParsePrefix("100::/64"),       // discard-only
		netip.MustParsePrefix("2001::/23"),      // IETF protocol assignments: Teredo 2001::/32 (client IPv4 obfuscated), benchmarking, ORCHID, ORCHIDv2 2001:20::/28
		netip.MustParsePrefix("2001:db8::/32"),  // documentation
		netip.MustParsePrefix("3fff::/20"),      // documentation
		netip.MustParsePrefix("5f00::/16"),      // SRv6 SIDs
		netip.MustParsePrefix("fc00::/7"),       // unique local
		netip.MustParsePrefix("fe80::/10"),      // link-local
		netip.MustParsePrefix("fec0::/10"),      // deprecated site-local
		netip.MustParsePrefix("ff00::/8"),       // multicast
	}

	globalUnicast6 = netip.MustParsePrefix("2000::/3")
	nat64WellKnown = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour      = netip.MustParsePrefix("2002::/16")
)

// IsPublic reports whether addr is a globally routable unicast address that
// webhooks may reach. It fails closed: invalid addresses, addresses with a
// zone, and IPv6 outside global unicast 2000::/3 are refused. IPv6 forms
// that carry an IPv4 address (IPv4-mapped, NAT64 64:ff9b::/96, 6to4) are
// judged by that IPv4 address, because that is where packets end up.
func IsPublic(addr netip.Addr) bool {
	if !addr.IsValid() || addr.Zone() != "" {
		return false
	}
	if addr.Is4() || addr.Is4In6() {
		return isPublic4(addr.Unmap())
	}
	b := addr.As16()
	switch {
	case nat64WellKnown.Contains(addr):
		return isPublic4(netip.AddrFrom4([4]byte(b[12:16])))
	case sixToFour.Contains(addr):
		return isPublic4(netip.AddrFrom4([4]byte(b[2:6])))
	case !globalUnicast6.Contains(addr):
		return false
	}
	for _, p := range nonPublic6 {
		if p.Contains(addr) {
			return false
		}
	}
	return true
}

// isPublic4 applies the IPv4 table to a 4-byte address.
func isPublic4(a netip.Addr) bool {
	for _, p := range nonPublic4 {
		if p.Contains(a) {
			return false
		}
	}
	return true
}
