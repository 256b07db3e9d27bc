package tasks_test

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/previewd/previewd/tasks"
)

// validRequest returns a request that passes Validate with every optional
// field set; cases change one thing.
func validRequest() tasks.PreviewRequest {
	return tasks.PreviewRequest{
		SessionCode:       "SESSION_1689257215_1674078",
		SelectedSpinIndex: 2,
		SelectedSpin:      "https://cdn.example.com/spins/2.png",
		ScaledBBox:        []float64{1, 2.5, 0.25},
		PivotPoint:        []float64{0, -0.5, 0.5},
		WebhookURL:        "https://8.8.8.8/hooks",
		ExternalID:        "order-42 ✓",
		IdempotencyKey:    "key-42",
	}
}

// invalidFields returns the field names a *ValidationError names, failing the
// test if err is not one.
func invalidFields(t *testing.T, err error) []string {
	t.Helper()
	var verr *tasks.ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("error %v (%T) is not a *tasks.ValidationError", err, err)
	}
	if len(verr.Fields) == 0 {
		t.Fatalf("ValidationError names no field: %v", err)
	}
	var names []string
	for _, f := range verr.Fields {
		if f.Message == "" {
			t.Errorf("field %s has an empty message", f.Field)
		}
		if !strings.Contains(err.Error(), f.Field+": "+f.Message) {
			t.Errorf("Error() = %q does not mention %q", err.Error(), f.Field+": "+f.Message)
		}
		names = append(names, f.Field)
	}
	return names
}

func TestPreviewRequestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(r *tasks.PreviewRequest)
		want   []string // invalid fields, in the order Validate reports them; nil means valid
	}{
		{name: "all fields valid", modify: func(r *tasks.PreviewRequest) {}},
		{name: "minimal: session code only", modify: func(r *tasks.PreviewRequest) {
			*r = tasks.PreviewRequest{SessionCode: "S"}
		}},
		{name: "session code of 128 chars", modify: func(r *tasks.PreviewRequest) { r.SessionCode = strings.Repeat("a", 128) }},
		{name: "session code with - and _", modify: func(r *tasks.PreviewRequest) { r.SessionCode = "a-b_C9" }},
		{name: "spin index 0", modify: func(r *tasks.PreviewRequest) { r.SelectedSpinIndex = 0 }},
		{name: "spin index 3", modify: func(r *tasks.PreviewRequest) { r.SelectedSpinIndex = 3 }},
		{name: "http selected spin", modify: func(r *tasks.PreviewRequest) { r.SelectedSpin = "http://cdn.example.com/s.png" }},
		{name: "selected spin of 2048 chars", modify: func(r *tasks.PreviewRequest) {
			r.SelectedSpin = "https://cdn.example.com/" + strings.Repeat("a", 2048-len("https://cdn.example.com/"))
		}},
		{name: "bbox at the maximum", modify: func(r *tasks.PreviewRequest) { r.ScaledBBox = []float64{1e6, 1e6, 1e6} }},
		{name: "bbox tiny but positive", modify: func(r *tasks.PreviewRequest) { r.ScaledBBox = []float64{1e-9, 1, 1} }},
		{name: "pivot at the bounds", modify: func(r *tasks.PreviewRequest) { r.PivotPoint = []float64{-0.5, 0.5, 0} }},
		{name: "external id of 256 bytes", modify: func(r *tasks.PreviewRequest) { r.ExternalID = strings.Repeat("x", 256) }},
		{name: "idempotency key of 255 bytes", modify: func(r *tasks.PreviewRequest) { r.IdempotencyKey = strings.Repeat("k", 255) }},
		{name: "external id with tab-free unicode", modify: func(r *tasks.PreviewRequest) { r.ExternalID = "Bestellung Nr. 42 — größer" }},

		{name: "session code empty", modify: func(r *tasks.PreviewRequest) { r.SessionCode = "" }, want: []string{"session_code"}},
		{name: "session code with slash", modify: func(r *tasks.PreviewRequest) { r.SessionCode = "a/b" }, want: []string{"session_code"}},
		{name: "session code path traversal", modify: func(r *tasks.PreviewRequest) { r.SessionCode = "../x" }, want: []string{"session_code"}},
		{name: "session code with space", modify: func(r *tasks.PreviewRequest) { r.SessionCode = "SESSION 1" }, want: []string{"session_code"}},
		{name: "session code with trailing newline", modify: func(r *tasks.PreviewRequest) { r.SessionCode = "SESSION_1\n" }, want: []string{"session_code"}},
		{name: "session code non-ascii", modify: func(r *tasks.PreviewRequest) { r.SessionCode = "SESSIÖN" }, want: []string{"session_code"}},
		{name: "session code of 129 chars", modify: func(r *tasks.PreviewRequest) { r.SessionCode = strings.Repeat("a", 129) }, want: []string{"session_code"}},

		{name: "spin index -1", modify: func(r *tasks.PreviewRequest) { r.SelectedSpinIndex = -1 }, want: []string{"selected_spin_index"}},
		{name: "spin index 4", modify: func(r *tasks.PreviewRequest) { r.SelectedSpinIndex = 4 }, want: []string{"selected_spin_index"}},

		{name: "selected spin ftp", modify: func(r *tasks.PreviewRequest) { r.SelectedSpin = "ftp://cdn.example.com/s.png" }, want: []string{"selected_spin"}},
		{name: "selected spin relative", modify: func(r *tasks.PreviewRequest) { r.SelectedSpin = "/spins/2.png" }, want: []string{"selected_spin"}},
		{name: "selected spin with userinfo", modify: func(r *tasks.PreviewRequest) { r.SelectedSpin = "https://u:p@cdn.example.com/s.png" }, want: []string{"selected_spin"}},
		{name: "selected spin without host", modify: func(r *tasks.PreviewRequest) { r.SelectedSpin = "https:///s.png" }, want: []string{"selected_spin"}},
		{name: "selected spin unparsable", modify: func(r *tasks.PreviewRequest) { r.SelectedSpin = "https://bad host/" }, want: []string{"selected_spin"}},
		{name: "selected spin of 2049 chars", modify: func(r *tasks.PreviewRequest) {
			r.SelectedSpin = "https://cdn.example.com/" + strings.Repeat("a", 2049-len("https://cdn.example.com/"))
		}, want: []string{"selected_spin"}},

		{name: "bbox of 2 numbers", modify: func(r *tasks.PreviewRequest) { r.ScaledBBox = []float64{1, 1} }, want: []string{"scaled_bbox"}},
		{name: "bbox of 4 numbers", modify: func(r *tasks.PreviewRequest) { r.ScaledBBox = []float64{1, 1, 1, 1} }, want: []string{"scaled_bbox"}},
		{name: "bbox empty", modify: func(r *tasks.PreviewRequest) { r.ScaledBBox = []float64{} }, want: []string{"scaled_bbox"}},
		{name: "bbox zero", modify: func(r *tasks.PreviewRequest) { r.ScaledBBox = []float64{1, 0, 1} }, want: []string{"scaled_bbox"}},
		{name: "bbox negative", modify: func(r *tasks.PreviewRequest) { r.ScaledBBox = []float64{1, 1, -2} }, want: []string{"scaled_bbox"}},
		{name: "bbox NaN", modify: func(r *tasks.PreviewRequest) { r.ScaledBBox = []float64{math.NaN(), 1, 1} }, want: []string{"scaled_bbox"}},
		{name: "bbox +Inf", modify: func(r *tasks.PreviewRequest) { r.ScaledBBox = []float64{1, math.Inf(1), 1} }, want: []string{"scaled_bbox"}},
		{name: "bbox 1e7", modify: func(r *tasks.PreviewRequest) { r.ScaledBBox = []float64{1, 1, 1e7} }, want: []string{"scaled_bbox"}},
		{name: "bbox several bad dimensions named once", modify: func(r *tasks.PreviewRequest) { r.ScaledBBox = []float64{0, -1, math.NaN()} }, want: []string{"scaled_bbox"}},

		{name: "pivot 0.51", modify: func(r *tasks.PreviewRequest) { r.PivotPoint = []float64{0.51, 0, 0} }, want: []string{"pivot_point"}},
		{name: "pivot -0.51", modify: func(r *tasks.PreviewRequest) { r.PivotPoint = []float64{0, 0, -0.51} }, want: []string{"pivot_point"}},
		{name: "pivot NaN", modify: func(r *tasks.PreviewRequest) { r.PivotPoint = []float64{0, math.NaN(), 0} }, want: []string{"pivot_point"}},
		{name: "pivot -Inf", modify: func(r *tasks.PreviewRequest) { r.PivotPoint = []float64{math.Inf(-1), 0, 0} }, want: []string{"pivot_point"}},
		{name: "pivot of 2 numbers", modify: func(r *tasks.PreviewRequest) { r.PivotPoint = []float64{0, 0} }, want: []string{"pivot_point"}},
		{name: "pivot of 4 numbers", modify: func(r *tasks.PreviewRequest) { r.PivotPoint = []float64{0, 0, 0, 0} }, want: []string{"pivot_point"}},

		{name: "webhook ftp", modify: func(r *tasks.PreviewRequest) { r.WebhookURL = "ftp://8.8.8.8/hooks" }, want: []string{"webhook_url"}},
		{name: "webhook javascript", modify: func(r *tasks.PreviewRequest) { r.WebhookURL = "javascript:alert(1)" }, want: []string{"webhook_url"}},
		{name: "webhook with userinfo", modify: func(r *tasks.PreviewRequest) { r.WebhookURL = "https://user:pw@8.8.8.8/hooks" }, want: []string{"webhook_url"}},
		{name: "webhook with empty userinfo", modify: func(r *tasks.PreviewRequest) { r.WebhookURL = "https://@8.8.8.8/hooks" }, want: []string{"webhook_url"}},
		{name: "webhook without host", modify: func(r *tasks.PreviewRequest) { r.WebhookURL = "https:///hooks" }, want: []string{"webhook_url"}},
		{name: "webhook relative", modify: func(r *tasks.PreviewRequest) { r.WebhookURL = "hooks" }, want: []string{"webhook_url"}},
		{name: "webhook too long", modify: func(r *tasks.PreviewRequest) { r.WebhookURL = "https://8.8.8.8/" + strings.Repeat("h", 2048) }, want: []string{"webhook_url"}},

		{name: "external id of 257 bytes", modify: func(r *tasks.PreviewRequest) { r.ExternalID = strings.Repeat("x", 257) }, want: []string{"external_id"}},
		{name: "external id 129 two-byte runes", modify: func(r *tasks.PreviewRequest) { r.ExternalID = strings.Repeat("é", 129) }, want: []string{"external_id"}},
		{name: "external id with newline", modify: func(r *tasks.PreviewRequest) { r.ExternalID = "a\nb" }, want: []string{"external_id"}},
		{name: "external id with NUL", modify: func(r *tasks.PreviewRequest) { r.ExternalID = "a\x00b" }, want: []string{"external_id"}},
		{name: "external id with DEL", modify: func(r *tasks.PreviewRequest) { r.ExternalID = "a\x7fb" }, want: []string{"external_id"}},
		{name: "external id with C1 control", modify: func(r *tasks.PreviewRequest) { r.ExternalID = "a\u0085b" }, want: []string{"external_id"}},
		{name: "external id invalid UTF-8", modify: func(r *tasks.PreviewRequest) { r.ExternalID = "a\xffb" }, want: []string{"external_id"}},
		{name: "idempotency key of 256 bytes", modify: func(r *tasks.PreviewRequest) { r.IdempotencyKey = strings.Repeat("k", 256) }, want: []string{"idempotency_key"}},
		{name: "idempotency key with tab", modify: func(r *tasks.PreviewRequest) { r.IdempotencyKey = "k\tk" }, want: []string{"idempotency_key"}},
		{name: "idempotency key with escape", modify: func(r *tasks.PreviewRequest) { r.IdempotencyKey = "k\x1b[31m" }, want: []string{"idempotency_key"}},
		{name: "idempotency key invalid UTF-8", modify: func(r *tasks.PreviewRequest) { r.IdempotencyKey = "\xc3\x28" }, want: []string{"idempotency_key"}},

		{
			name: "every field invalid at once",
			modify: func(r *tasks.PreviewRequest) {
				*r = tasks.PreviewRequest{
					SessionCode:       "../x",
					SelectedSpinIndex: 7,
					SelectedSpin:      "ftp://x/",
					ScaledBBox:        []float64{1},
					PivotPoint:        []float64{1, 1, 1},
					WebhookURL:        "https://u@8.8.8.8/",
					ExternalID:        "\x00",
					IdempotencyKey:    strings.Repeat("k", 300),
				}
			},
			want: []string{"session_code", "selected_spin_index", "selected_spin", "scaled_bbox", "pivot_point", "webhook_url", "external_id", "idempotency_key"},
		},
		{
			name: "two invalid fields, the rest valid",
			modify: func(r *tasks.PreviewRequest) {
				r.SelectedSpinIndex = 4
				r.ExternalID = "a\nb"
			},
			want: []string{"selected_spin_index", "external_id"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := validRequest()
			tt.modify(&req)
			err := req.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if got := invalidFields(t, err); !slices.Equal(got, tt.want) {
				t.Errorf("invalid fields = %q, want %q (error: %v)", got, tt.want, err)
			}
			v, ok := tasks.AsValidationError(err)
			if !ok || v == nil {
				t.Errorf("AsValidationError(%v) = %v, %v; want the error itself", err, v, ok)
			}
		})
	}
}

// TestCheckAddresses: selected_spin (fetched by CSM) and webhook_url
// (posted to by previewd) both get the address policy, and both are kept
// in their checked form, hosts in ASCII.
func TestCheckAddresses(t *testing.T) {
	tests := []struct {
		name             string
		spin, webhook    string
		allowPrivate     bool
		want             []string // fields refused; nil means accepted
		wantSpin, wantWH string   // the stored forms, when accepted
	}{
		{name: "public literals", spin: "https://8.8.8.8/s.png", webhook: "https://1.1.1.1/h?t=1",
			wantSpin: "https://8.8.8.8/s.png", wantWH: "https://1.1.1.1/h?t=1"},
		{name: "neither given", want: nil},
		{name: "idn spin stored in ascii", spin: "https://bücher.example/s.png", wantSpin: "https://xn--bcher-kva.example/s.png"},
		{name: "metadata spin", spin: "http://169.254.169.254/latest/meta-data/iam/", want: []string{"selected_spin"}},
		{name: "loopback spin", spin: "http://127.0.0.1:9000/s.png", want: []string{"selected_spin"}},
		{name: "localhost spin", spin: "http://localhost/s.png", want: []string{"selected_spin"}},
		{name: "circled localhost spin", spin: "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/s.png", want: []string{"selected_spin"}},
		{name: "ideographic stops spin", spin: "http://169。254。169。254/", want: []string{"selected_spin"}},
		{name: "odd ipv4 spin", spin: "http://0xa9.254.169.254/", want: []string{"selected_spin"}},
		{name: "circled localhost webhook", webhook: "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/h", want: []string{"webhook_url"}},
		{name: "full-width digits webhook", webhook: "http://１２７.０.０.１/h", want: []string{"webhook_url"}},
		{name: "both refused, both named", spin: "http://10.0.0.1/s.png", webhook: "http://[::1]/h", want: []string{"selected_spin", "webhook_url"}},
		{name: "allowPrivate: private spin accepted", spin: "http://127.0.0.1:9000/s.png", allowPrivate: true, wantSpin: "http://127.0.0.1:9000/s.png"},
		{name: "allowPrivate: look-alike still refused", spin: "http://127。0。0。1/", allowPrivate: true, want: []string{"selected_spin"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tasks.PreviewRequest{SessionCode: "S1", SelectedSpin: tt.spin, WebhookURL: tt.webhook}
			if err := req.Validate(); err != nil {
				t.Fatalf("Validate() = %v; the case is meant to reach the address check", err)
			}
			err := req.CheckAddresses(t.Context(), tt.allowPrivate, nil)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("CheckAddresses() = %v, want nil", err)
				}
				if req.SelectedSpin != tt.wantSpin || req.WebhookURL != tt.wantWH {
					t.Errorf("stored spin %q, webhook %q; want %q, %q", req.SelectedSpin, req.WebhookURL, tt.wantSpin, tt.wantWH)
				}
				return
			}
			if got := invalidFields(t, err); !slices.Equal(got, tt.want) {
				t.Errorf("invalid fields = %q, want %q (error: %v)", got, tt.want, err)
			}
		})
	}
}

func TestAsValidationError(t *testing.T) {
	inner := &tasks.ValidationError{Fields: []tasks.FieldError{{Field: "session_code", Message: "is required"}}}
	tests := []struct {
		name   string
		err    error
		wantOK bool
	}{
		{name: "nil", err: nil},
		{name: "other error", err: errors.New("boom")},
		{name: "the error itself", err: inner, wantOK: true},
		{name: "wrapped", err: errors.Join(errors.New("context"), inner), wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tasks.AsValidationError(tt.err)
			if ok != tt.wantOK {
				t.Fatalf("AsValidationError(%v) ok = %v, want %v", tt.err, ok, tt.wantOK)
			}
			if ok && got != inner {
				t.Errorf("AsValidationError returned %p, want %p", got, inner)
			}
		})
	}
}

func TestJobID(t *testing.T) {
	withKey := tasks.PreviewRequest{SessionCode: "S1", IdempotencyKey: "order-42"}
	noKey := tasks.PreviewRequest{SessionCode: "S1"}
	const fp = "3f1c0a"

	tests := []struct {
		name string
		a, b string
		same bool
	}{
		{name: "key: deterministic", a: tasks.JobID(withKey, fp), b: tasks.JobID(withKey, fp), same: true},
		{name: "key: fingerprint ignored", a: tasks.JobID(withKey, fp), b: tasks.JobID(withKey, "other"), same: true},
		{name: "key: other content, same key", a: tasks.JobID(withKey, fp), b: tasks.JobID(tasks.PreviewRequest{SessionCode: "S2", IdempotencyKey: "order-42"}, fp), same: true},
		{name: "key: different keys", a: tasks.JobID(withKey, fp), b: tasks.JobID(tasks.PreviewRequest{SessionCode: "S1", IdempotencyKey: "order-43"}, fp)},
		{name: "content: deterministic", a: tasks.JobID(noKey, fp), b: tasks.JobID(noKey, fp), same: true},
		{name: "content: different fingerprints", a: tasks.JobID(noKey, fp), b: tasks.JobID(noKey, fp+"0")},
		{name: "key and content derivations differ", a: tasks.JobID(withKey, fp), b: tasks.JobID(noKey, fp)},
		{name: "key equal to a fingerprint still differs", a: tasks.JobID(tasks.PreviewRequest{IdempotencyKey: fp}, ""), b: tasks.JobID(noKey, fp)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, id := range []string{tt.a, tt.b} {
				u, err := uuid.Parse(id)
				if err != nil || len(id) != 36 || u.String() != id {
					t.Errorf("JobID %q is not a canonical UUID (err %v)", id, err)
				}
				if u.Version() != 5 {
					t.Errorf("JobID %q has version %d, want 5 (name-based SHA-1)", id, u.Version())
				}
			}
			if (tt.a == tt.b) != tt.same {
				t.Errorf("ids %s and %s: same = %v, want %v", tt.a, tt.b, tt.a == tt.b, tt.same)
			}
		})
	}
}
