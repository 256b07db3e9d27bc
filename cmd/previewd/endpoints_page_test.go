package main

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
)

// TestEndpointsListPagesAndCap: `endpoints list --limit N` prints one page
// and, on stderr, the command for the next; following them sees every
// endpoint once, and without --limit every endpoint is listed. `endpoints
// add` past PREVIEWD_MAX_ENDPOINTS fails naming the limit and the setting;
// a v1a endpoint prints its whpk_ public key and never a private key.
func TestEndpointsListPagesAndCap(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	c := newCLI(t, r, "http://127.0.0.1:9")
	c.env["PREVIEWD_MAX_ENDPOINTS"] = "7"
	rcv := testutil.NewReceiver(t)
	for i := range 6 {
		if _, errOut, code := c.run("endpoints", "add", "--url", rcv.URL+"?n="+strconv.Itoa(i)); code != 0 {
			t.Fatalf("add %d: %d %s", i, code, errOut)
		}
	}
	out, errOut, code := c.run("endpoints", "add", "--url", rcv.URL, "--signature-version", "v1a")
	var v1a struct {
		store.Endpoint
		PublicKey string `json:"public_key"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &v1a) != nil || v1a.SignatureVersion != "v1a" || !strings.HasPrefix(v1a.PublicKey, "whpk_") || strings.Contains(out, "whsk_") {
		t.Fatalf("add v1a: %d %s %s", code, out, errOut)
	}
	_, errOut, code = c.run("endpoints", "add", "--url", rcv.URL)
	if code == 0 || !strings.Contains(errOut, "at most 7") || !strings.Contains(errOut, "--max-endpoints") {
		t.Fatalf("add past the cap: exit %d, %q", code, errOut)
	}
	if _, errOut, code = c.run("endpoints", "add", "--url", rcv.URL, "--signature-version", "v9"); code != exitUsage || !strings.Contains(errOut, "--signature-version") {
		t.Fatalf("a bad --signature-version: exit %d, %q", code, errOut)
	}

	next := regexp.MustCompile(`--cursor (\S+)`)
	seen := map[string]int{}
	args := []string{"endpoints", "list", "--json", "--limit", "3"}
	for pages := 0; ; pages++ {
		if pages > 7 {
			t.Fatal("the walk does not end")
		}
		out, errOut, code := c.run(args...)
		var page []store.Endpoint
		if code != 0 || json.Unmarshal([]byte(out), &page) != nil || len(page) > 3 {
			t.Fatalf("%v: %d %s %s", args, code, out, errOut)
		}
		for _, ep := range page {
			seen[ep.ID]++
		}
		m := next.FindStringSubmatch(errOut)
		if m == nil {
			break
		}
		args = []string{"endpoints", "list", "--json", "--limit", "3", "--cursor", m[1]}
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s listed %d times", id, n)
		}
	}
	if len(seen) != 7 {
		t.Fatalf("the pages listed %d endpoints, want 7", len(seen))
	}
	out, errOut, _ = c.run("endpoints", "list", "--json")
	var all []store.Endpoint
	if err := json.Unmarshal([]byte(out), &all); err != nil || len(all) != 7 || errOut != "" {
		t.Fatalf("list without --limit: %v %d %q", err, len(all), errOut)
	}
	if _, errOut, code = c.run("endpoints", "list", "--cursor", "nope"); code != exitUsage || !strings.Contains(errOut, "--cursor") {
		t.Fatalf("a bad cursor: exit %d, %q", code, errOut)
	}
}
