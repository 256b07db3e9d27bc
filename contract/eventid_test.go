package contract_test

import (
	"encoding/json"
	"regexp"
	"testing"

	"github.com/pb33f/libopenapi"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/store"
)

// TestEventIDsMatchTheDocumentedHeader: the ids of real events, which
// receivers get as webhook-id, match the pattern the document gives that
// header, and carry their job as it says (the first 32 hex digits).
func TestEventIDsMatchTheDocumentedHeader(t *testing.T) {
	t.Parallel()
	doc, err := libopenapi.NewDocument(api.OpenAPIDocument())
	if err != nil {
		t.Fatal(err)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		t.Fatal(err)
	}
	param, ok := model.Model.Components.Parameters.Get("WebhookID")
	if !ok || param.Schema == nil || param.Schema.Schema().Pattern == "" {
		t.Fatal("the document has no pattern for the webhook-id header")
	}
	pattern := regexp.MustCompile(param.Schema.Schema().Pattern)
	events := realEvents(t)
	if len(events) == 0 {
		t.Fatal("no events")
	}
	for _, ev := range events {
		if !pattern.MatchString(ev.ID) {
			t.Errorf("event id %s does not match the documented %s", ev.ID, pattern)
		}
		var body store.EventBody
		if err := json.Unmarshal(ev.Body, &body); err != nil {
			t.Fatal(err)
		}
		if jobID, ok := store.JobOfEvent(ev.ID); !ok || jobID != body.Data.ID {
			t.Errorf("event id %s carries job %q, its body's is %s", ev.ID, jobID, body.Data.ID)
		}
	}
}
