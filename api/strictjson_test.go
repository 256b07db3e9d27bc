package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/previewd/previewd/api"
)

// TestStrictJSONBodies: what encoding/json forgives is refused with a 400
// naming the field (invalid UTF-8, which it would replace with U+FFFD;
// keys that match only when case is ignored; keys given twice), a body
// that is not an object says so, and a JSON body needs its Content-Type,
// which a web page cannot set cross-origin without asking. Nothing is
// stored for any of them.
func TestStrictJSONBodies(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t)
	noType := map[string]string{"Content-Type": ""}
	cases := []struct {
		name   string
		path   string
		body   string
		header map[string]string
		status int
		fields []string // named in this order
		detail string   // when set, the problem's detail
	}{
		{"invalid UTF-8 in a value", "/v1/previews", "{\"session_code\":\"SESSION_\xff\xfe\"}", nil, 400, []string{"session_code"}, `field "session_code" is not valid UTF-8`},
		{"invalid UTF-8 in a key", "/v1/previews", "{\"session_code\":\"S1\",\"ext\xc3\":1}", nil, 400, []string{"ext\uFFFD"}, ""},
		{"invalid UTF-8 in an array element", "/v1/endpoints", "{\"url\":\"https://8.8.8.8/h\",\"event_types\":[\"preview.done\",\"preview.\xe2\x82\"]}", nil, 400, []string{"event_types[1]"}, ""},
		{"an escaped surrogate without its pair", "/v1/previews", `{"session_code":"S\ud800"}`, nil, 400, []string{"session_code"}, ""},
		{"an escaped low surrogate alone", "/v1/previews", `{"session_code":"S1","external_id":"\\udc00 is text, \udc00 is not"}`, nil, 400, []string{"external_id"}, ""},
		{"an escaped pair is fine", "/v1/previews", `{"session_code":"S_SURROGATE","external_id":"\ufffd \\ud800 \ud83d\ude00"}`, nil, 201, nil, ""},
		{"key in another case", "/v1/previews", `{"Session_Code":"S1"}`, nil, 400, []string{"Session_Code"}, `field "Session_Code" is not a known field (names are case-sensitive: "session_code")`},
		{"key in capitals beside the right one", "/v1/previews", `{"session_code":"S1","SESSION_CODE":"S2"}`, nil, 400, []string{"SESSION_CODE"}, ""},
		{"key given twice", "/v1/previews", `{"session_code":"S1","session_code":"S2"}`, nil, 400, []string{"session_code"}, `field "session_code" is given more than once`},
		{"several at once", "/v1/endpoints", `{"URL":"https://8.8.8.8/h","url":"https://8.8.8.8/h","colour":"red"}`, nil, 400, []string{"URL", "colour"}, "2 fields are invalid; see errors"},
		{"top-level array", "/v1/previews", `[{"session_code":"S1"}]`, nil, 400, nil, "the body must be a JSON object"},
		{"top-level null", "/v1/previews", `null`, nil, 400, nil, "the body must be a JSON object"},
		{"top-level string", "/v1/endpoints", `"https://8.8.8.8/h"`, nil, 400, nil, "the body must be a JSON object"},
		{"top-level number", "/v1/previews", `7`, nil, 400, nil, "the body must be a JSON object"},
		// What was strict already stays so, with the same wording.
		{"unknown field", "/v1/previews", `{"session_code":"S1","colour":"red"}`, nil, 400, []string{"colour"}, `unknown field "colour"`},
		{"wrong type", "/v1/previews", `{"session_code":7}`, nil, 400, []string{"session_code"}, "a field has the wrong type"},
		{"cut short", "/v1/previews", `{"session_code":`, nil, 400, nil, "the body must be one JSON object"},
		{"trailing data", "/v1/previews", `{"session_code":"S1"} {}`, nil, 400, nil, "the body must be one JSON object"},
		{"empty", "/v1/previews", ``, nil, 400, nil, "the body must be one JSON object"},
		{"too large", "/v1/previews", `{"session_code":"S1","external_id":"` + strings.Repeat("x", 5000) + `"}`, nil, 413, nil, "the body must be at most 4096 bytes"},
		// Content-Type: required, and JSON.
		{"no Content-Type", "/v1/previews", `{"session_code":"S1"}`, noType, 415, []string{"Content-Type"}, ""},
		{"no Content-Type for an endpoint", "/v1/endpoints", `{"url":"https://8.8.8.8/h"}`, noType, 415, []string{"Content-Type"}, ""},
		{"no Content-Type for a disable reason", "/v1/endpoints/ep_0123456789abcdef/disable", `{"reason":"x"}`, noType, 415, []string{"Content-Type"}, ""},
		{"text/plain", "/v1/previews", `{"session_code":"S1"}`, map[string]string{"Content-Type": "text/plain"}, 415, []string{"Content-Type"}, ""},
		{"a form", "/v1/endpoints", `url=https%3A%2F%2F8.8.8.8%2Fh`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, []string{"Content-Type"}, ""},
		{"multipart", "/v1/previews", "--b\r\n\r\n--b--", map[string]string{"Content-Type": "multipart/form-data; boundary=b"}, 415, []string{"Content-Type"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := e.in(t)
			resp, body := e.do(call{method: "POST", path: tc.path, body: tc.body, header: tc.header, invalid: true})
			if tc.status < 300 {
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
				}
				return
			}
			p := e.problem(resp, body, tc.status, "")
			var got []string
			for _, f := range p.Errors {
				got = append(got, f.Field)
			}
			if strings.Join(got, ",") != strings.Join(tc.fields, ",") {
				t.Errorf("problem names %q, want %q: %s", got, tc.fields, body)
			}
			if tc.detail != "" && p.Detail != tc.detail {
				t.Errorf("detail %q, want %q", p.Detail, tc.detail)
			}
		})
	}
	// The right spelling, in UTF-8, with the type: accepted.
	resp, body := e.do(call{method: "POST", path: "/v1/previews", body: `{"session_code":"SESSION_1689257215_1674078","external_id":"ünïcode ✓"}`})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("a valid body: %d %s", resp.StatusCode, body)
	}
	var jobs api.JobList
	_, body = e.do(call{method: "GET", path: "/v1/previews"})
	if jobs = decode[api.JobList](t, body); len(jobs.Items) != 2 {
		t.Fatalf("refused bodies created jobs: %d jobs", len(jobs.Items))
	}
}
