package webhook_test

import (
	"net/netip"
	"testing"

	"github.com/previewd/previewd/webhook"
)

func TestIsPublic(t *testing.T) {
	tests := []struct {
		name string
		addr string
		want bool
	}{
		// Public.
		{"google dns", "8.8.8.8", true},
		{"cloudflare dns", "1.1.1.1", true},
		{"cloudflare dns v6", "2606:4700:4700::1111", true},
		{"6to4 of public v4", "2002:0808:0808::1", true},
		{"mapped public v4", "::ffff:8.8.8.8", true},
		{"nat64 of public v4", "64:ff9b::808:808", true},
		{"just outside 172.16/12", "172.32.0.1", true},
		{"just outside 100.64/10", "100.128.0.1", true},

		// IPv4 special purpose.
		{"unspecified v4", "0.0.0.0", false},
		{"this network", "0.1.2.3", false},
		{"loopback", "127.0.0.1", false},
		{"loopback high", "127.255.255.254", false},
		{"private 10/8", "10.0.0.1", false},
		{"private 172.16/12", "172.16.0.1", false},
		{"private 172.16/12 top", "172.31.255.255", false},
		{"private 192.168/16", "192.168.1.1", false},
		{"link-local", "169.254.1.1", false},
		{"cloud metadata", "169.254.169.254", false},
		{"cgnat", "100.64.0.1", false},
		{"cgnat alibaba metadata", "100.100.100.200", false},
		{"benchmarking", "198.18.0.1", false},
		{"benchmarking upper", "198.19.255.255", false},
		{"ietf protocol assignments", "192.0.0.8", false},
		{"documentation 192.0.2", "192.0.2.1", false},
		{"documentation 198.51.100", "198.51.100.7", false},
		{"documentation 203.0.113", "203.0.113.9", false},
		{"6to4 relay anycast", "192.88.99.1", false},
		{"multicast", "224.0.0.1", false},
		{"multicast upper", "239.255.255.250", false},
		{"reserved", "240.0.0.1", false},
		{"broadcast", "255.255.255.255", false},

		// IPv6 special purpose.
		{"unspecified v6", "::", false},
		{"loopback v6", "::1", false},
		{"link-local v6", "fe80::1", false},
		{"ula fc", "fc00::1", false},
		{"ula fd", "fd12:3456:789a::1", false},
		{"site-local", "fec0::1", false},
		{"multicast v6", "ff02::1", false},
		{"multicast v6 global", "ff0e::1", false},
		{"documentation 2001:db8", "2001:db8::1", false},
		{"documentation 3fff", "3fff::1", false},
		{"discard-only", "100::1", false},
		{"teredo", "2001:0:4136:e378:8000:63bf:3fff:fdd2", false},
		{"orchidv2", "2001:20::1", false},
		{"benchmarking v6", "2001:2::1", false},
		{"srv6 sid", "5f00::1", false},
		{"unallocated outside 2000::/3", "4000::1", false},

		// IPv6 carrying IPv4.
		{"mapped loopback", "::ffff:127.0.0.1", false},
		{"mapped private", "::ffff:10.1.2.3", false},
		{"mapped metadata", "::ffff:169.254.169.254", false},
		{"compatible loopback", "::127.0.0.1", false},
		{"compatible public (deprecated form)", "::8.8.8.8", false},
		{"nat64 loopback", "64:ff9b::7f00:1", false},
		{"nat64 private", "64:ff9b::a00:1", false},
		{"nat64 local-use", "64:ff9b:1::808:808", false},
		{"6to4 of loopback", "2002:7f00:0001::1", false},
		{"6to4 of private", "2002:c0a8:0101::1", false},
		{"6to4 of metadata", "2002:a9fe:a9fe::1", false},

		// Zones.
		{"zoned link-local", "fe80::1%eth0", false},
		{"zoned global", "2606:4700:4700::1111%eth0", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := netip.MustParseAddr(tt.addr)
			if got := webhook.IsPublic(addr); got != tt.want {
				t.Errorf("IsPublic(%s) = %v, want %v", addr, got, tt.want)
			}
		})
	}
	if webhook.IsPublic(netip.Addr{}) {
		t.Error("IsPublic(zero Addr) = true")
	}
}
