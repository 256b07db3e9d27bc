package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"unicode/utf8"

	"github.com/previewd/previewd/tasks"
)

// FuzzStrictDecode: strictDecode never panics; what it accepts is valid
// UTF-8, an object, and decodes to what encoding/json makes of it; what it
// refuses by field names each field in valid UTF-8.
func FuzzStrictDecode(f *testing.F) {
	for _, s := range []string{
		`{"session_code":"SESSION_1","scaled_bbox":[1,2,3]}`, `{"Session_Code":"S"}`, `{"session_code":"a","session_code":"b"}`,
		"{\"session_code\":\"\xff\"}", "{\"\xc3\":1}", `{"session_code":"\ud800"}`, `{"external_id":"\ud83d\ude00\\ud800"}`,
		`[]`, `null`, `7`, ``, `{"a":{"b":[{"c":1}]}}`, `{"session_code":"S"} x`, `{"scaled_bbox":[1e999]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var got tasks.PreviewRequest
		err := strictDecode(body, &got)
		var fields fieldErrors
		switch {
		case err == nil:
			if !utf8.Valid(body) {
				t.Fatalf("accepted invalid UTF-8 %q", body)
			}
			if b := bytes.TrimLeft(body, " \t\r\n"); len(b) == 0 || b[0] != '{' {
				t.Fatalf("accepted a body that is not an object: %q", body)
			}
			var want tasks.PreviewRequest
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&want); err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("accepted %q as %+v; encoding/json: %+v, %v", body, got, want, err)
			}
		case errors.As(err, &fields):
			for _, f := range fields {
				if f.Field == "" || !utf8.ValidString(f.Field) || f.Message == "" {
					t.Fatalf("refused %q naming %+v", body, f)
				}
			}
		}
	})
}
