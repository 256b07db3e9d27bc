package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/previewd/previewd/tasks"
)

// decodeBody reads a JSON object into v, strictly: a missing or wrong
// content type (a web page can send a body without one, or with a form's,
// but not with application/json unless it is same-origin), an oversized
// body and everything decodeJSON refuses are answered here with a problem
// naming what is wrong. It reports whether decoding succeeded.
func (s *Server) decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		msg := "must be application/json"
		if r.Header.Get("Content-Type") == "" {
			msg = "is required: application/json"
		}
		writeProblem(w, http.StatusUnsupportedMediaType, "Unsupported media type",
			"send the JSON body with Content-Type: application/json",
			[]tasks.FieldError{{Field: "Content-Type", Message: msg}})
		return false
	}
	return s.decodeJSON(w, r, v)
}

// decodeJSON is decodeBody without the content-type rule, for a route
// whose caller is not a browser and sends a type of its own (CSM's pushes).
// It reads at most MaxBodyBytes (413 past that) and refuses, naming the
// field: invalid UTF-8 (encoding/json would replace it silently), keys that
// match a field only when case is ignored (encoding/json would accept
// them), keys given twice, unknown fields, wrong types, and a body that is
// not exactly one JSON object.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes))
	if err == nil {
		err = strictDecode(raw, v)
	}
	if err == nil {
		return true
	}
	var tooLarge *http.MaxBytesError
	var fieldsErr fieldErrors
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &tooLarge):
		writeProblem(w, http.StatusRequestEntityTooLarge, "Request body too large",
			fmt.Sprintf("the body must be at most %d bytes", s.opts.MaxBodyBytes), nil)
	case errors.As(err, &fieldsErr):
		writeProblem(w, http.StatusBadRequest, "Invalid JSON", fieldsErr.Error(), fieldsErr)
	case errors.Is(err, errNotObject):
		writeProblem(w, http.StatusBadRequest, "Invalid JSON", "the body must be a JSON object", nil)
	case errors.As(err, &typeErr):
		writeProblem(w, http.StatusBadRequest, "Invalid JSON", "a field has the wrong type",
			[]tasks.FieldError{{Field: typeErr.Field, Message: "must be " + jsonKind(typeErr.Type.Kind().String())}})
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// strictDecode names unknown fields first; this is the backstop
		// of DisallowUnknownFields, answered the same way.
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		writeProblem(w, http.StatusBadRequest, "Invalid JSON", "unknown field "+strconv.Quote(field),
			[]tasks.FieldError{{Field: field, Message: "is not a known field"}})
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, errTrailing):
		writeProblem(w, http.StatusBadRequest, "Invalid JSON", "the body must be one JSON object", nil)
	default:
		writeProblem(w, http.StatusBadRequest, "Invalid JSON", err.Error(), nil)
	}
	return false
}

var (
	errNotObject = errors.New("the body must be a JSON object")
	errTrailing  = errors.New("trailing data after the JSON object")
)

// fieldErrors are the fields strictDecode refuses, in body order.
type fieldErrors []tasks.FieldError

func (f fieldErrors) Error() string {
	if len(f) == 1 {
		switch msg := f[0].Message; {
		case msg == msgUnknown:
			// The wording clients of the API have always seen.
			return "unknown field " + strconv.Quote(f[0].Field)
		default:
			return "field " + strconv.Quote(f[0].Field) + " " + msg
		}
	}
	return fmt.Sprintf("%d fields are invalid; see errors", len(f))
}

const (
	msgUnknown   = "is not a known field"
	msgUTF8      = "is not valid UTF-8"
	msgDuplicate = "is given more than once"
	msgSurrogate = "is not valid Unicode (an escaped surrogate without its pair)"
)

// strictDecode decodes raw, which must be one JSON object, into v (a
// pointer to a struct). It walks the tokens first, so that what
// encoding/json forgives is refused with the field it is in, then decodes
// with unknown fields disallowed for the types.
func strictDecode(raw []byte, v any) error {
	if err := scanObject(raw, shapeOf(reflect.TypeOf(v))); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// shape is what a JSON value may hold, from the Go type it decodes into:
// for an object the exact key names (keys nil: any key, as for a map),
// and the shape of each member or element. A nil *shape checks nothing.
type shape struct {
	keys map[string]*shape // struct fields by JSON name
	elem *shape            // map values and slice or array elements
}

var shapes sync.Map // reflect.Type → *shape

func shapeOf(t reflect.Type) *shape {
	if sh, ok := shapes.Load(t); ok {
		return sh.(*shape)
	}
	sh := buildShape(t, map[reflect.Type]bool{})
	shapes.Store(t, sh)
	return sh
}

func buildShape(t reflect.Type, seen map[reflect.Type]bool) *shape {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || seen[t] {
		return nil // an interface, or a recursive type: not checked further
	}
	seen[t] = true
	defer delete(seen, t)
	switch t.Kind() {
	case reflect.Struct:
		sh := &shape{keys: map[string]*shape{}}
		addFields(sh, t, seen)
		return sh
	case reflect.Map:
		return &shape{elem: buildShape(t.Elem(), seen)}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 && t.Kind() == reflect.Slice {
			return nil // []byte is a base64 string
		}
		return &shape{elem: buildShape(t.Elem(), seen)}
	}
	return nil
}

// addFields adds t's JSON fields to sh, flattening embedded structs the
// way encoding/json does.
func addFields(sh *shape, t reflect.Type, seen map[reflect.Type]bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			addFields(sh, ft, seen)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		sh.keys[name] = buildShape(f.Type, seen)
	}
}

// scanner walks a body's tokens, keeping the path of the current value.
type scanner struct {
	raw    []byte
	dec    *json.Decoder
	offset int64
	fields fieldErrors
}

// scanObject checks raw against sh: one JSON object, valid UTF-8 in
// every token, every key spelled exactly as a field and given once.
func scanObject(raw []byte, sh *shape) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // numbers out of float64's range are the decoder's to name
	sc := &scanner{raw: raw, dec: dec}
	tok, err := sc.next("")
	if err != nil {
		return err
	}
	if tok != json.Delim('{') {
		return errNotObject
	}
	if err := sc.object("", sh); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errTrailing
	}
	if len(sc.fields) > 0 {
		return sc.fields
	}
	return nil
}

// next reads a token and notes the field at path when the bytes it spans
// are not valid UTF-8 (encoding/json would have replaced them with U+FFFD).
func (sc *scanner) next(path string) (json.Token, error) {
	tok, err := sc.dec.Token()
	if err != nil {
		return nil, err
	}
	end := sc.dec.InputOffset()
	span := sc.raw[sc.offset:end]
	if !utf8.Valid(span) {
		sc.add(path, msgUTF8)
	} else if str, ok := tok.(string); ok && strings.ContainsRune(str, utf8.RuneError) && loneSurrogate(span) {
		sc.add(path, msgSurrogate)
	}
	sc.offset = end
	return tok, nil
}

func (sc *scanner) add(path, msg string) {
	if path == "" {
		path = "(body)"
	}
	sc.fields = append(sc.fields, tasks.FieldError{Field: strings.ToValidUTF8(path, "\uFFFD"), Message: msg})
}

// object reads an object's members up to its closing brace.
func (sc *scanner) object(path string, sh *shape) error {
	seen := map[string]bool{}
	for sc.dec.More() {
		before := len(sc.fields)
		tok, err := sc.next("")
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		p := key
		if path != "" {
			p = path + "." + key
		}
		badKey := len(sc.fields) > before
		if badKey { // the key itself is not UTF-8: named by the path so far
			sc.fields[before].Field = strings.ToValidUTF8(p, "\uFFFD")
		}
		if seen[key] {
			sc.add(p, msgDuplicate)
		}
		seen[key] = true
		var member *shape
		switch {
		case sh == nil:
		case sh.keys == nil:
			member = sh.elem
		case sh.keys[key] != nil || hasKey(sh, key):
			member = sh.keys[key]
		case badKey:
			// named already: no field has a name that is not UTF-8
		case foldedName(sh, key) != "":
			sc.add(p, "is not a known field (names are case-sensitive: "+strconv.Quote(foldedName(sh, key))+")")
		default:
			sc.add(p, msgUnknown)
		}
		if err := sc.value(p, member); err != nil {
			return err
		}
	}
	_, err := sc.dec.Token() // '}'
	return err
}

// value reads one value, descending into objects and arrays.
func (sc *scanner) value(path string, sh *shape) error {
	tok, err := sc.next(path)
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		return sc.object(path, sh)
	case json.Delim('['):
		var elem *shape
		if sh != nil {
			elem = sh.elem
		}
		for i := 0; sc.dec.More(); i++ {
			if err := sc.value(path+"["+strconv.Itoa(i)+"]", elem); err != nil {
				return err
			}
		}
		_, err := sc.dec.Token() // ']'
		return err
	}
	return nil
}

// loneSurrogate reports whether a token's JSON text escapes half of a
// UTF-16 surrogate pair without the other half (encoding/json decodes
// it to U+FFFD without a word).
func loneSurrogate(span []byte) bool {
	hex4 := func(i int) (rune, bool) {
		if i+6 > len(span) || span[i] != '\\' || span[i+1] != 'u' {
			return 0, false
		}
		v, err := strconv.ParseUint(string(span[i+2:i+6]), 16, 32)
		return rune(v), err == nil
	}
	for i := 0; i < len(span); i++ {
		if span[i] != '\\' {
			continue
		}
		r, ok := hex4(i)
		if !ok {
			i++ // another escape: skip the escaped byte
			continue
		}
		switch {
		case r >= 0xD800 && r < 0xDC00:
			if low, ok := hex4(i + 6); !ok || low < 0xDC00 || low > 0xDFFF {
				return true
			}
			i += 11
		case r >= 0xDC00 && r <= 0xDFFF:
			return true
		default:
			i += 5
		}
	}
	return false
}

func hasKey(sh *shape, key string) bool {
	_, ok := sh.keys[key]
	return ok
}

// foldedName is the field key names when case is ignored, or "".
func foldedName(sh *shape, key string) string {
	for name := range sh.keys {
		if strings.EqualFold(name, key) {
			return name
		}
	}
	return ""
}
