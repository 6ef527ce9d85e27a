package logging

import (
	"bytes"
	"encoding/json"
)

// RedactJSON returns the JSON document b with the same secrets masked as in log lines:
// the value of every member whose name is secret-like (password, api_key, client_secret,
// …, at any depth) becomes Redacted, and credential-looking substrings of other strings
// (provider keys, Kiln API keys, bearer tokens, JWTs, passwords in URLs) are replaced by
// it. Numbers keep their text. A document that is not JSON is returned as one redacted
// string, so nothing unread leaks.
func RedactJSON(b []byte) json.RawMessage {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		out, _ := json.Marshal(Redacted)
		return out
	}
	out, err := json.Marshal(redactJSONValue(v))
	if err != nil { // only decoded values are encoded again: cannot fail
		out, _ = json.Marshal(Redacted)
	}
	return out
}

func redactJSONValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			if isSecretKey(k) {
				t[k] = Redacted
			} else {
				t[k] = redactJSONValue(e)
			}
		}
		return t
	case []any:
		for i, e := range t {
			t[i] = redactJSONValue(e)
		}
		return t
	case string:
		if mayHoldSecret(t) && anySecret.MatchString(t) {
			return RedactString(t)
		}
		return t
	default:
		return v
	}
}
