package receiver

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/webhook"
)

// delivery is one webhook a test sends.
type delivery struct {
	id     string
	body   string
	secret string // "" signs with the receiver's own secret
}

func TestReceiver(t *testing.T) {
	other, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	const (
		accepted = `{"type":"preview.accepted","data":{"id":"j1","status":"generating"}}`
		done     = `{"type":"preview.done","data":{"id":"j1","status":"done"}}`
		doneB    = `{"type":"preview.done","data":{"id":"j1","status":"done","polls":9}}`
		failed   = `{"type":"preview.failed","data":{"id":"j2","status":"failed","error":{"code":"preview_unconfirmed","message":"m"}}}`
	)
	tests := []struct {
		name          string
		sends         []delivery
		wantStatus    []int
		wantDelivered int
		wantRejected  int
		wantFinal     map[string]Final // Type, ErrorCode and Count compared
		wantDiffering map[string]int   // ids with more than one body
	}{
		{
			name:          "accepted then done",
			sends:         []delivery{{id: "m1", body: accepted}, {id: "m2", body: done}},
			wantStatus:    []int{204, 204},
			wantDelivered: 2,
			wantFinal:     map[string]Final{"j1": {Type: store.EventDone, Count: 1}},
		},
		{
			name:          "a retried final counts once as first, twice as received",
			sends:         []delivery{{id: "m2", body: done}, {id: "m2", body: done}},
			wantStatus:    []int{204, 204},
			wantDelivered: 2,
			wantFinal:     map[string]Final{"j1": {Type: store.EventDone, Count: 2}},
		},
		{
			name:          "one id, two bodies",
			sends:         []delivery{{id: "m2", body: done}, {id: "m2", body: doneB}},
			wantStatus:    []int{204, 204},
			wantDelivered: 2,
			wantFinal:     map[string]Final{"j1": {Type: store.EventDone, Count: 2}},
			wantDiffering: map[string]int{"m2": 2},
		},
		{
			name:          "failed keeps its error code",
			sends:         []delivery{{id: "m3", body: failed}},
			wantStatus:    []int{204},
			wantDelivered: 1,
			wantFinal:     map[string]Final{"j2": {Type: store.EventFailed, ErrorCode: "preview_unconfirmed", Count: 1}},
		},
		{
			name:         "bad signature is rejected and not recorded",
			sends:        []delivery{{id: "m2", body: done, secret: other}},
			wantStatus:   []int{401},
			wantRejected: 1,
		},
		{
			name:          "signed garbage",
			sends:         []delivery{{id: "m9", body: `not json`}},
			wantStatus:    []int{400},
			wantDelivered: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rcv, secretText, err := New()
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(rcv)
			t.Cleanup(srv.Close)
			for i, d := range tt.sends {
				text := secretText
				if d.secret != "" {
					text = d.secret
				}
				sec, err := webhook.ParseSecret(text)
				if err != nil {
					t.Fatal(err)
				}
				req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader([]byte(d.body)))
				webhook.NewSigner(sec).Headers(req.Header, d.id, time.Now(), []byte(d.body))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tt.wantStatus[i] {
					t.Errorf("send %d: status %d, want %d", i, resp.StatusCode, tt.wantStatus[i])
				}
			}
			delivered, rejected := rcv.Totals()
			if delivered != tt.wantDelivered || rejected != tt.wantRejected {
				t.Errorf("totals %d delivered, %d rejected; want %d, %d", delivered, rejected, tt.wantDelivered, tt.wantRejected)
			}
			for _, job := range []string{"j1", "j2"} {
				got, ok := rcv.Final(job)
				want, wantOK := tt.wantFinal[job]
				if ok != wantOK || got.Type != want.Type || got.ErrorCode != want.ErrorCode || got.Count != want.Count {
					t.Errorf("final of %s = %+v (%v), want %+v (%v)", job, got, ok, want, wantOK)
				}
			}
			for id, n := range rcv.BodiesByID() {
				if want := tt.wantDiffering[id]; n > 1 && n != want || n == 1 && want > 1 {
					t.Errorf("webhook id %s: %d bodies, want %d", id, n, want)
				}
			}
		})
	}
}
