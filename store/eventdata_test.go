package store_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/previewd/previewd/store"
)

// TestEventDataIsJobWithoutBookkeeping: the public view has every field of
// Job, under the same JSON name, except request and poll. A field added to
// Job fails here until someone decides whether endpoints may see it.
func TestEventDataIsJobWithoutBookkeeping(t *testing.T) {
	jsonNames := func(typ reflect.Type) map[string]reflect.Type {
		out := map[string]reflect.Type{}
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			out[name] = f.Type
		}
		return out
	}
	job, public := jsonNames(reflect.TypeFor[store.Job]()), jsonNames(reflect.TypeFor[store.EventData]())
	for name, typ := range job {
		switch name {
		case "request", "poll":
			if _, ok := public[name]; ok {
				t.Errorf("EventData has %q, previewd's own bookkeeping", name)
			}
		default:
			if public[name] != typ {
				t.Errorf("EventData lacks %q (%v), or has another type: %v", name, typ, public[name])
			}
		}
	}
	for name := range public {
		if _, ok := job[name]; !ok {
			t.Errorf("EventData has %q, which Job lacks", name)
		}
	}
}

func TestPublicURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"https://hooks.example.com/a/b?token=s3cret#frag", "https://hooks.example.com/"},
		{"https://user:pw@hooks.example.com/a", "https://hooks.example.com/"},
		{"https://hooks.slack.com/services/T000/B000/XXXXSECRET", "https://hooks.slack.com/"},
		{"http://8.8.8.8:8080/hook?k=v", "http://8.8.8.8:8080/"},
		{"http://[2606:4700::1111]:8443/h", "http://[2606:4700::1111]:8443/"},
		{"not a url", ""},
		{"http://bad host/", ""},
	}
	for _, tt := range tests {
		if got := store.PublicURL(tt.in); got != tt.want {
			t.Errorf("PublicURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestPublicKeepsTheJobAndDropsCredentials(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	pct := 40
	j := store.Job{
		ID: "0b8f3f5e-1111-5222-8333-444455556666", Status: store.StatusGenerating, SessionCode: "SESSION_1",
		SelectedSpinIndex: 2, WebhookURL: "https://hooks.example.com/p?token=s3cret", ExternalID: "asset-1",
		UniqueTrialKey: "trial", PercentDone: &pct, MeshURLs: map[string]string{"glb": "https://cdn.example/m.glb"},
		CreatedAt: now, UpdatedAt: now, Deadline: now.Add(time.Hour), Polls: 3,
		History: []store.Transition{{At: now, Status: store.StatusQueued}},
		Request: store.RequestState{Attempts: 1, IntentID: "run-1", LastError: "boom"},
		Poll:    store.PollState{Seq: 4, LastError: "poll boom"},
	}
	raw, err := json.Marshal(store.EventBody{Type: store.EventProgress, Timestamp: now, Data: j.Public()})
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{"s3cret", "/p?", `"request"`, `"poll"`, "run-1", "boom"} {
		if strings.Contains(string(raw), leak) {
			t.Errorf("event body %s contains %q", raw, leak)
		}
	}
	var back store.EventBody
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if d := back.Data; d.ID != j.ID || d.Status != j.Status || *d.PercentDone != 40 || d.MeshURLs["glb"] != j.MeshURLs["glb"] ||
		d.Polls != 3 || len(d.History) != 1 || d.WebhookURL != "https://hooks.example.com/" || d.ExternalID != "asset-1" {
		t.Errorf("public view %+v", d)
	}
}
