package webhook_test

import (
	"context"
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/webhook"
)

func TestCheckURL(t *testing.T) {
	resolver := fakeResolver(t, map[string][]netip.Addr{
		"public.example.":   {netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("2606:4700:4700::1111")},
		"private.example.":  {netip.MustParseAddr("10.0.0.5")},
		"metadata.example.": {netip.MustParseAddr("169.254.169.254")},
		"mixed.example.":    {netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("127.0.0.1")},
		"v6local.example.":  {netip.MustParseAddr("fd00::1")},
	})

	tests := []struct {
		name         string
		url          string
		allowPrivate bool
		wantErr      string // substring of the URLError reason; "" means accepted
		wantDetail   string // substring of the URLError detail, for refusals found by resolving
	}{
		{name: "https public ip", url: "https://8.8.8.8/hook"},
		{name: "http public ip with port", url: "http://1.1.1.1:8080/hook?x=1"},
		{name: "uppercase scheme", url: "HTTPS://8.8.8.8/"},
		{name: "ipv6 literal public", url: "https://[2606:4700:4700::1111]:443/hook"},
		{name: "public name", url: "https://public.example/hook"},
		{name: "public name, trailing dot", url: "https://public.example./hook"},
		{name: "unresolvable name is accepted", url: "https://nowhere.example/hook"},

		{name: "ftp", url: "ftp://8.8.8.8/file", wantErr: "must use http or https"},
		{name: "file", url: "file:///etc/passwd", wantErr: "must use http or https"},
		{name: "javascript", url: "javascript:alert(1)", wantErr: "must use http or https"},
		{name: "gopher", url: "gopher://8.8.8.8:70/_", wantErr: "must use http or https"},
		{name: "relative", url: "/hook", wantErr: "must be an absolute URL"},
		{name: "scheme-relative", url: "//8.8.8.8/hook", wantErr: "must be an absolute URL"},
		{name: "empty", url: "", wantErr: "must be an absolute URL"},
		{name: "userinfo", url: "https://user:pass@8.8.8.8/", wantErr: "must not contain user info"},
		{name: "userinfo without password", url: "https://user@public.example/", wantErr: "must not contain user info"},
		{name: "missing host", url: "https:///hook", wantErr: "must have a host"},
		{name: "port only", url: "https://:443/hook", wantErr: "must have a host"},
		{name: "opaque", url: "http:8.8.8.8", wantErr: "must have a host"},
		{name: "port zero", url: "https://8.8.8.8:0/", wantErr: "port between"},
		{name: "port too big", url: "https://8.8.8.8:70000/", wantErr: "port between"},
		{name: "too long", url: "https://public.example/" + strings.Repeat("a", 2048), wantErr: "at most 2048"},
		{name: "unparsable", url: "https://bad host/", wantErr: "not a valid URL"},
		{name: "bad host characters", url: "https://exa*mple.com/", wantErr: "not a valid host name"},

		{name: "decimal ipv4", url: "http://2130706433/", wantErr: "not a standard IP address"},
		{name: "octal ipv4", url: "http://0177.0.0.1/", wantErr: "not a standard IP address"},
		{name: "hex ipv4", url: "http://0x7f.1/", wantErr: "not a standard IP address"},
		{name: "hex whole ipv4", url: "http://0x7f000001/", wantErr: "not a standard IP address"},
		{name: "short ipv4", url: "http://127.1/", wantErr: "not a standard IP address"},
		{name: "leading zeros", url: "http://127.000.000.001/", wantErr: "not a standard IP address"},
		{name: "trailing dot ipv4", url: "http://127.0.0.1./", wantErr: "not a standard IP address"},
		{name: "odd spelling of a public ipv4", url: "http://134744072/", wantErr: "not a standard IP address"},
		{name: "percent-encoded loopback", url: "http://%31%32%37.0.0.1/", wantErr: "not a valid URL"},

		{name: "loopback ipv4", url: "http://127.0.0.1:8080/", wantErr: "host 127.0.0.1 is not a public address"},
		{name: "private ipv4", url: "https://10.0.0.1/", wantErr: "host 10.0.0.1 is not a public address"},
		{name: "metadata ipv4", url: "http://169.254.169.254/latest/meta-data/", wantErr: "not a public address"},
		{name: "loopback ipv6", url: "http://[::1]/", wantErr: "host ::1 is not a public address"},
		{name: "mapped loopback ipv6", url: "http://[::ffff:127.0.0.1]/", wantErr: "not a public address"},
		{name: "ula ipv6", url: "http://[fd00::1]:8080/", wantErr: "not a public address"},
		{name: "zoned ipv6", url: "http://[fe80::1%25eth0]/", wantErr: "not a public address"},
		{name: "localhost", url: "http://localhost:8080/", wantErr: "host localhost is not a public address"},
		{name: "localhost uppercase, trailing dot", url: "http://LOCALHOST./", wantErr: "not a public address"},
		{name: "sub.localhost", url: "http://api.localhost/", wantErr: "not a public address"},
		{name: "name resolving private", url: "https://private.example/", wantErr: "must resolve to a public address", wantDetail: "host private.example resolves to 10.0.0.5"},
		{name: "name resolving to metadata", url: "https://metadata.example/", wantErr: "must resolve to a public address", wantDetail: "host metadata.example resolves to 169.254.169.254"},
		{name: "name with one private address", url: "https://mixed.example/", wantErr: "must resolve to a public address", wantDetail: "host mixed.example resolves to 127.0.0.1"},
		{name: "name resolving to ula", url: "https://v6local.example/", wantErr: "must resolve to a public address", wantDetail: "host v6local.example resolves to fd00::1"},

		{name: "allowPrivate: loopback", url: "http://127.0.0.1:8080/", allowPrivate: true},
		{name: "allowPrivate: localhost", url: "http://localhost:8080/", allowPrivate: true},
		{name: "allowPrivate: private name", url: "http://private.example/", allowPrivate: true},
		{name: "allowPrivate: ftp still refused", url: "ftp://127.0.0.1/", allowPrivate: true, wantErr: "must use http or https"},
		{name: "allowPrivate: userinfo still refused", url: "http://u:p@127.0.0.1/", allowPrivate: true, wantErr: "must not contain user info"},
		{name: "allowPrivate: odd spelling still refused", url: "http://127.1/", allowPrivate: true, wantErr: "not a standard IP address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := webhook.CheckURL(t.Context(), tt.url, tt.allowPrivate, resolver)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckURL(%q) = %v, want nil", tt.url, err)
				}
				return
			}
			var uerr *webhook.URLError
			if !errors.As(err, &uerr) {
				t.Fatalf("CheckURL(%q) = %v, want *URLError", tt.url, err)
			}
			if !strings.Contains(uerr.Reason, tt.wantErr) {
				t.Errorf("reason %q does not contain %q", uerr.Reason, tt.wantErr)
			}
			if !strings.Contains(uerr.Detail, tt.wantDetail) {
				t.Errorf("detail %q does not contain %q", uerr.Detail, tt.wantDetail)
			}
			// What a resolver said stays out of the client-facing reason.
			for _, inside := range []string{"resolves to", "10.0.0.5", "169.254.169.254", "fd00::1"} {
				if tt.wantDetail != "" && strings.Contains(uerr.Reason, inside) {
					t.Errorf("reason %q reveals %q", uerr.Reason, inside)
				}
			}
		})
	}
}

// TestCheckedURLMapsIDNA: a non-ASCII host is judged, and stored, as the
// ASCII name IDNA's lookup profile maps it to, which is the name net/http
// dials. Look-alikes of loopback names and IP literals are refused.
func TestCheckedURLMapsIDNA(t *testing.T) {
	resolver := fakeResolver(t, map[string][]netip.Addr{
		"xn--bcher-kva.example.":  {netip.MustParseAddr("8.8.8.8")},
		"xn--intern-gva.example.": {netip.MustParseAddr("10.1.2.3")},
		"example.com.":            {netip.MustParseAddr("93.184.215.14")},
	})
	tests := []struct {
		name         string
		url          string
		allowPrivate bool
		want         string // the URL to store; "" means refused
		wantErr      string
	}{
		{name: "ascii host kept as written", url: "https://Public.Example/Hook?q=ü", want: "https://Public.Example/Hook?q=ü"},
		{name: "ascii punycode kept", url: "https://xn--bcher-kva.example/h", want: "https://xn--bcher-kva.example/h"},
		{name: "idn mapped to punycode", url: "https://bücher.example/h?token=x", want: "https://xn--bcher-kva.example/h?token=x"},
		{name: "idn with capitals and port", url: "https://BÜCHER.example:8443/h", want: "https://xn--bcher-kva.example:8443/h"},
		{name: "full-width letters of a public name", url: "https://ｅｘａｍｐｌｅ.ｃｏｍ/", want: "https://example.com/"},
		{name: "soft hyphen ignored", url: "https://ex\u00adample.com/", want: "https://example.com/"},
		{name: "idn resolving private, checked by its mapped name", url: "https://intern\u00e9.example/", wantErr: "must resolve to a public address"},

		{name: "circled localhost", url: "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/", wantErr: "host localhost is not a public address"},
		{name: "circled localhost, trailing dot", url: "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ./", wantErr: "host localhost. is not a public address"},
		{name: "full-width localhost with port", url: "http://ｌｏｃａｌｈｏｓｔ:8080/", wantErr: "not a public address"},
		{name: "full-width sub.localhost", url: "http://api.ｌｏｃａｌｈｏｓｔ/", wantErr: "not a public address"},
		{name: "full-width digits", url: "http://１２７.０.０.１/", wantErr: "look-alike"},
		{name: "ideographic full stops", url: "http://127。0。0。1/", wantErr: "look-alike"},
		{name: "metadata with ideographic full stops", url: "http://169。254。169。254/latest/meta-data/", wantErr: "look-alike"},
		{name: "circled digits", url: "http://①②⑦.0.0.1/", wantErr: "look-alike"},
		{name: "soft hyphen hides an ip", url: "http://127.0.0.1\u00ad/", wantErr: "look-alike"},
		{name: "full-width public ip still refused", url: "http://８.８.８.８/", wantErr: "look-alike"},
		{name: "look-alike hex last label", url: "http://ü.0x7f/", wantErr: "look-alike"},
		{name: "joiner out of context does not map", url: "http://exa\u200dmple.com/", wantErr: "not a valid international domain name"},
		{name: "full-width colon does not map", url: "http://ex：ample.com/", wantErr: "not a valid international domain name"},
		{name: "underscore in an idn does not map", url: "http://a_b.ü/", wantErr: "not a valid international domain name"},
		{name: "empty label after mapping", url: "http://a..ü/", wantErr: "not a valid host name"},

		{name: "allowPrivate: circled localhost mapped", url: "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ:9000/h", allowPrivate: true, want: "http://localhost:9000/h"},
		{name: "allowPrivate: ip look-alike still refused", url: "http://127。0。0。1/", allowPrivate: true, wantErr: "look-alike"},
		{name: "allowPrivate: unmappable still refused", url: "http://ex：ample.com/", allowPrivate: true, wantErr: "not a valid international domain name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := webhook.CheckedURL(t.Context(), tt.url, tt.allowPrivate, resolver)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("CheckedURL(%q) = %q, %v; want %q", tt.url, got, err, tt.want)
				}
				return
			}
			var uerr *webhook.URLError
			if !errors.As(err, &uerr) || got != "" {
				t.Fatalf("CheckedURL(%q) = %q, %v; want a *URLError", tt.url, got, err)
			}
			if !strings.Contains(uerr.Reason, tt.wantErr) {
				t.Errorf("reason %q does not contain %q", uerr.Reason, tt.wantErr)
			}
			// The refusal is the same through CheckURL and the Sender's check.
			if err := webhook.CheckURL(t.Context(), tt.url, tt.allowPrivate, resolver); err == nil {
				t.Errorf("CheckURL(%q) accepted what CheckedURL refused", tt.url)
			}
		})
	}
}

// TestCheckURLNeverEchoesCredentials guards the promise that refusals do
// not repeat the URL, whose query may carry a receiver's token.
func TestCheckURLNeverEchoesCredentials(t *testing.T) {
	for _, raw := range []string{
		"https://user:hunter2@8.8.8.8/?token=hunter2",
		"ftp://8.8.8.8/?token=hunter2",
		"https://bad host/?token=hunter2",
		"http://10.0.0.1/?token=hunter2",
	} {
		err := webhook.CheckURL(t.Context(), raw, false, fakeResolver(t, nil))
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("CheckURL(%q) = %v", raw, err)
		}
	}
}

func TestCheckURLHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	start := time.Now()
	// A cancelled lookup is a failed lookup: accepted, and quickly.
	if err := webhook.CheckURL(ctx, "https://slow.example/", false, fakeResolver(t, nil)); err != nil {
		t.Errorf("CheckURL = %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Error("CheckURL ignored the cancelled context")
	}
}

// FuzzCheckURL: arbitrary input must not panic, and anything accepted with
// the address policy must be an http(s) URL with a host and no user info.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{"https://8.8.8.8/", "http://0x7f.1/", "http://[::1]/", "http://a@b/", "http://[fe80::1%25x]/", "http://%31.0.0.1/", "http://1.2.3.4%2f/"} {
		f.Add(s)
	}
	// No name is resolved: the verdicts are those of a lookup that finds
	// nothing (accepted; the dialer checks the real peer), which TestCheckURL
	// covers with a fake DNS server. A lookup that really runs, on a pipe
	// served by a goroutine, makes each input's coverage depend on goroutine
	// scheduling: the engine then keeps finding "new" inputs and spends the
	// run minimising them (execs fall to 0/sec), and the wall-clock bound
	// this target used to check failed inputs on a starved machine that pass
	// when replayed, a failure the engine cannot minimise either.
	for _, s := range []string{"http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/", "http://127。0。0。1/", "https://bücher.example:8443/?q=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		for _, allowPrivate := range []bool{false, true} {
			// What is stored is ASCII, and checking it again keeps it as is:
			// the check and the dial see one name.
			if out, err := webhook.CheckedURLWithoutLookup(raw, allowPrivate); err == nil {
				u, perr := url.Parse(out)
				if perr != nil || strings.ContainsFunc(u.Hostname(), func(r rune) bool { return r >= 0x80 }) {
					t.Fatalf("CheckedURL(%q) = %q, a host that is not ASCII", raw, out)
				}
				if again, err := webhook.CheckedURLWithoutLookup(out, allowPrivate); err != nil || again != out {
					t.Fatalf("CheckedURL(%q) = %q, which checks again as %q, %v", raw, out, again, err)
				}
			}
			err := webhook.CheckURLWithoutLookup(raw, allowPrivate)
			if err != nil {
				var ue *webhook.URLError
				if !errors.As(err, &ue) {
					t.Fatalf("CheckURL(%q) = %v, want a *URLError", raw, err)
				}
				continue
			}
			if !strings.HasPrefix(strings.ToLower(raw), "http://") && !strings.HasPrefix(strings.ToLower(raw), "https://") {
				t.Fatalf("accepted %q (allowPrivate %v)", raw, allowPrivate)
			}
		}
	})
}
