package server

import (
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/kilnhq/kiln/internal/errs"
)

// PostgreSQL stores no U+0000 in text or jsonb and no invalid UTF-8 anywhere, and nothing a
// client sends is better for holding either: the validator refuses both in every text it
// hands on (JSON bodies and WebSocket frames, keys included; query and path parameters;
// header parameters), naming each field, so no such text reaches a handler or the database.

// nulMessage is the field error of a string that holds U+0000.
const nulMessage = "must not contain the NUL character (U+0000)"

// badTextMessage is the field error of a parameter that is not UTF-8 or holds U+0000.
const badTextMessage = "must be UTF-8 text without the NUL character (U+0000)"

// nulFields lists, under pointer base, every string and object key in the decoded JSON v
// that holds U+0000 (JSON's "\u0000"). Decoders replace invalid UTF-8 with U+FFFD, so NUL
// is the one character left that the store refuses.
func nulFields(base string, v any) []errs.FieldError {
	if !holdsNUL(v) {
		return nil // the common case, without building a pointer per field
	}
	var out []errs.FieldError
	var walk func(pointer string, v any)
	walk = func(pointer string, v any) {
		switch v := v.(type) {
		case string:
			if strings.IndexByte(v, 0) >= 0 {
				out = append(out, errs.FieldError{Pointer: pointer, Message: nulMessage})
			}
		case []any:
			for i, e := range v {
				walk(pointer+"/"+strconv.Itoa(i), e)
			}
		case map[string]any:
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			sort.Strings(keys) // field errors in a stable order
			for _, k := range keys {
				p := pointer + "/" + escapePointer(k)
				if strings.IndexByte(k, 0) >= 0 {
					out = append(out, errs.FieldError{Pointer: p, Message: "the property name " + nulMessage})
				}
				walk(p, v[k])
			}
		}
	}
	walk(base, v)
	return out
}

// holdsNUL reports whether a string or object key in the decoded JSON v holds U+0000.
func holdsNUL(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.IndexByte(v, 0) >= 0
	case []any:
		return slices.ContainsFunc(v, holdsNUL)
	case map[string]any:
		for k, e := range v {
			if strings.IndexByte(k, 0) >= 0 || holdsNUL(e) {
				return true
			}
		}
	}
	return false
}

// goodText reports whether s is UTF-8 without U+0000.
func goodText(s string) bool { return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 }

// textParamFields lists a query string that does not parse, the query parameters (every one, declared or not: a handler may
// read any), path segments and header parameters of r that are not UTF-8 or hold U+0000.
// headers are the operation's header parameters.
func textParamFields(r *http.Request, headers []string) []errs.FieldError {
	var out []errs.FieldError
	if !goodText(r.URL.RawQuery) || strings.ContainsAny(r.URL.RawQuery, "%;") {
		query, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil { // r.URL.Query() would drop the bad pair and serve the rest
			out = append(out, errs.FieldError{Pointer: "/query", Message: "is not a valid query string (malformed percent-encoding or a ';'): " + err.Error()})
		}
		names := make([]string, 0, len(query))
		for name := range query {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			ok := goodText(name)
			for _, v := range query[name] {
				ok = ok && goodText(v)
			}
			if !ok {
				out = append(out, errs.FieldError{Pointer: "/query/" + escapePointer(strings.ToValidUTF8(name, "\uFFFD")), Message: badTextMessage})
			}
		}
	}
	if !goodText(r.URL.Path) {
		out = append(out, errs.FieldError{Pointer: "/path", Message: badTextMessage})
	}
	for _, h := range headers {
		for _, v := range r.Header.Values(h) {
			if !goodText(v) {
				out = append(out, errs.FieldError{Pointer: "/header/" + escapePointer(h), Message: badTextMessage})
				break
			}
		}
	}
	return out
}
