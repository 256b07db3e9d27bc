package api_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// schemaDoc is the part of the OpenAPI document the drift check reads.
type schemaDoc struct {
	Components struct {
		Schemas map[string]schemaObject `json:"schemas"`
	} `json:"components"`
}

type schemaObject struct {
	Ref        string                  `json:"$ref"`
	Required   []string                `json:"required"`
	Properties map[string]schemaObject `json:"properties"`
	Items      *schemaObject           `json:"items"`
	Internal   bool                    `json:"x-internal"`
}

// jsonFields lists the JSON names of t's encoded fields (embedded structs
// flattened) and which of them are always present (no omitempty).
func jsonFields(t reflect.Type) (names, always []string) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() {
			continue
		}
		if f.Anonymous && tag == "" {
			n, a := jsonFields(f.Type)
			names, always = append(names, n...), append(always, a...)
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
		if !strings.Contains(opts, "omitempty") {
			always = append(always, name)
		}
	}
	slices.Sort(names)
	slices.Sort(always)
	return names, always
}

// TestSchemasMatchGoTypes checks each documented schema against the Go
// type the handlers encode (or decode): the same property names, and for
// what the API returns, "required" is exactly the fields always encoded,
// except internal bookkeeping (x-internal), which is sent but not promised.
// Response validation in the other tests catches a field the document
// lacks; this catches a documented field the code no longer sends, or a
// required one it may leave out.
func TestSchemasMatchGoTypes(t *testing.T) {
	var doc schemaDoc
	if err := json.Unmarshal(api.OpenAPIDocument(), &doc); err != nil {
		t.Fatal(err)
	}
	schemas := doc.Components.Schemas
	for _, c := range []struct {
		schema   string
		goType   any
		response bool // encoded by the API: required must match
	}{
		{"Job", store.Job{}, true},
		{"EventData", store.EventData{}, true},
		{"Transition", store.Transition{}, true},
		{"JobError", store.JobError{}, true},
		{"RequestState", store.RequestState{}, true},
		{"PollState", store.PollState{}, true},
		{"JobList", api.JobList{}, true},
		{"Message", store.Message{}, true},
		{"Attempt", store.Attempt{}, true},
		{"MessageList", api.MessageList{}, true},
		{"Endpoint", store.Endpoint{}, true},
		{"EndpointWithSecret", api.EndpointWithSecret{}, true},
		{"EndpointList", api.EndpointList{}, true},
		{"Problem", api.Problem{}, true},
		{"PreviewRequest", tasks.PreviewRequest{}, false},
		{"EndpointRequest", tasks.EndpointRequest{}, false},
		{"DisableRequest", api.DisableRequest{}, false},
	} {
		t.Run(c.schema, func(t *testing.T) {
			s, ok := schemas[c.schema]
			if !ok {
				t.Fatalf("no schema %s", c.schema)
			}
			names, always := jsonFields(reflect.TypeOf(c.goType))
			var props []string
			for p := range s.Properties {
				props = append(props, p)
			}
			slices.Sort(props)
			if !slices.Equal(props, names) {
				t.Errorf("schema properties %v; %T encodes %v", props, c.goType, names)
			}
			if !c.response {
				return
			}
			var want []string
			for _, name := range always {
				if p := s.Properties[name]; p.Ref != "" && schemas[strings.TrimPrefix(p.Ref, "#/components/schemas/")].Internal {
					continue
				}
				want = append(want, name)
			}
			required := slices.Clone(s.Required)
			slices.Sort(required)
			if !slices.Equal(required, want) {
				t.Errorf("schema requires %v; %T always encodes %v (x-internal ones aside)", required, c.goType, want)
			}
		})
	}
	// The items of Problem.errors are tasks.FieldError.
	names, _ := jsonFields(reflect.TypeOf(tasks.FieldError{}))
	var props []string
	for p := range schemas["Problem"].Properties["errors"].Items.Properties {
		props = append(props, p)
	}
	slices.Sort(props)
	if !slices.Equal(props, names) {
		t.Errorf("Problem.errors items: %v; tasks.FieldError encodes %v", props, names)
	}
}

// TestOperationsDocumented checks what the document promises integrators
// on every operation: a tag, a summary and a description; on every
// authenticated /v1 route the 401, 403 and 500 problem answers; a webhook
// for each event type previewd emits, each with the Standard Webhooks
// headers; and a license.
func TestOperationsDocumented(t *testing.T) {
	type operation struct {
		Tags        []string                   `json:"tags"`
		Summary     string                     `json:"summary"`
		Description string                     `json:"description"`
		Security    *[]map[string][]string     `json:"security"`
		Parameters  []map[string]any           `json:"parameters"`
		Responses   map[string]json.RawMessage `json:"responses"`
	}
	var doc struct {
		Info struct {
			License struct {
				Name string `json:"name"`
			} `json:"license"`
		} `json:"info"`
		Tags     []struct{ Name, Description string }  `json:"tags"`
		Paths    map[string]map[string]json.RawMessage `json:"paths"`
		Webhooks map[string]map[string]operation       `json:"webhooks"`
	}
	if err := json.Unmarshal(api.OpenAPIDocument(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Info.License.Name == "" {
		t.Error("info.license has no name")
	}
	tags := map[string]bool{}
	for _, tag := range doc.Tags {
		if tag.Description == "" {
			t.Errorf("tag %s has no description", tag.Name)
		}
		tags[tag.Name] = true
	}
	check := func(where string, op operation) {
		if len(op.Tags) == 0 || op.Summary == "" || op.Description == "" {
			t.Errorf("%s: tags %v, summary %q, description %q: all three are needed", where, op.Tags, op.Summary, op.Description)
		}
		for _, tag := range op.Tags {
			if !tags[tag] {
				t.Errorf("%s: tag %s is not declared in tags", where, tag)
			}
		}
	}
	for path, item := range doc.Paths {
		for method, raw := range item {
			if method == "parameters" {
				continue
			}
			var op operation
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatal(err)
			}
			where := strings.ToUpper(method) + " " + path
			check(where, op)
			authenticated := op.Security == nil // the document's default: bearer
			if !strings.HasPrefix(path, "/v1/") || !authenticated {
				continue
			}
			for _, code := range []string{"401", "403", "500"} {
				if !strings.Contains(string(op.Responses[code]), "#/components/responses/") {
					t.Errorf("%s: no %s problem response", where, code)
				}
			}
		}
	}
	var documented, emitted []string
	for typ, item := range doc.Webhooks {
		documented = append(documented, typ)
		op := item["post"]
		check("webhook "+typ, op)
		var headers []string
		for _, p := range op.Parameters {
			headers = append(headers, strings.TrimPrefix(p["$ref"].(string), "#/components/parameters/"))
		}
		if !slices.Equal(headers, []string{"WebhookID", "WebhookTimestamp", "WebhookSignature"}) {
			t.Errorf("webhook %s: header parameters %v", typ, headers)
		}
	}
	for _, typ := range tasks.EventTypes {
		emitted = append(emitted, string(typ))
	}
	slices.Sort(documented)
	slices.Sort(emitted)
	if !slices.Equal(documented, emitted) {
		t.Errorf("webhooks %v; previewd emits %v", documented, emitted)
	}
}
