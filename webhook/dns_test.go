package webhook_test

import (
	"net/netip"
	"testing"

	"github.com/previewd/previewd/internal/testutil"
)

// fakeResolver is the tests' in-memory DNS (testutil.NewResolver): a real
// *net.Resolver whose queries are answered from records.
var fakeResolver = testutil.NewResolver

func TestFakeResolver(t *testing.T) {
	r := fakeResolver(t, map[string][]netip.Addr{
		"dual.example.": {netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("2606:4700:4700::1111")},
	})
	got, err := r.LookupNetIP(t.Context(), "ip", "dual.example")
	if err != nil {
		t.Fatalf("lookup: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("got %v, want two addresses", got)
	}
	if _, err := r.LookupNetIP(t.Context(), "ip", "missing.example"); err == nil {
		t.Fatal("lookup of unknown name succeeded")
	}
}
