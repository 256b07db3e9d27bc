package webhook_test

import (
	"testing"

	"github.com/previewd/previewd/webhook"
)

func TestNormalizeHost(t *testing.T) {
	tests := []struct {
		name, host, want string
	}{
		{name: "plain", host: "example.com", want: "example.com"},
		{name: "upper case", host: "EXAMPLE.COM", want: "example.com"},
		{name: "mixed case", host: "LocalHost", want: "localhost"},
		{name: "trailing dot", host: "example.com.", want: "example.com"},
		{name: "upper case and trailing dot", host: "LOCALHOST.", want: "localhost"},
		{name: "full-width letters", host: "ｌｏｃａｌｈｏｓｔ", want: "localhost"},
		{name: "ideographic full stop", host: "evil。example", want: "evil.example"},
		{name: "ideographic full stop at the end", host: "EVIL.example。", want: "evil.example"},
		{name: "unicode label", host: "Bücher.example", want: "xn--bcher-kva.example"},
		{name: "punycode as written", host: "XN--BCHER-KVA.example", want: "xn--bcher-kva.example"},
		{name: "underscore kept", host: "A_B.example", want: "a_b.example"},
		{name: "ipv4", host: "127.0.0.1", want: "127.0.0.1"},
		{name: "ipv4-mapped ipv6", host: "::ffff:127.0.0.1", want: "127.0.0.1"},
		{name: "ipv6 long form", host: "2001:0DB8:0000::0001", want: "2001:db8::1"},
		{name: "ipv6 zone dropped", host: "fe80::1%eth0", want: "fe80::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := webhook.NormalizeHost(tt.host); got != tt.want {
				t.Errorf("NormalizeHost(%q) = %q, want %q", tt.host, got, tt.want)
			}
		})
	}
}

func TestRegistrableDomain(t *testing.T) {
	tests := []struct {
		name, host, want string
	}{
		{name: "wildcard names share one", host: "a.evil.example", want: "evil.example"},
		{name: "deeper", host: "x.y.evil.example", want: "evil.example"},
		{name: "the domain itself", host: "evil.example", want: "evil.example"},
		{name: "two-label suffix", host: "hooks.shop.co.uk", want: "shop.co.uk"},
		{name: "private suffix: each user its own", host: "alice.github.io", want: "alice.github.io"},
		{name: "public suffix alone", host: "github.io", want: "github.io"},
		{name: "single label", host: "localhost", want: "localhost"},
		{name: "ipv4", host: "127.0.0.1", want: "127.0.0.1"},
		{name: "ipv6", host: "2001:db8::1", want: "2001:db8::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := webhook.RegistrableDomain(tt.host); got != tt.want {
				t.Errorf("RegistrableDomain(%q) = %q, want %q", tt.host, got, tt.want)
			}
		})
	}
}
