package logging_test

import (
	"testing"

	"github.com/kilnhq/kiln/internal/platform/logging"
)

func TestRedactJSON(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct{ in, want string }{
		"SecretKeysAtAnyDepth": {
			`{"to":"a@example.com","smtp":{"password":"hunter2","Client-Secret":"x"},"refresh_token":"r","prompt_tokens":12}`,
			`{"prompt_tokens":12,"refresh_token":"[REDACTED]","smtp":{"Client-Secret":"[REDACTED]","password":"[REDACTED]"},"to":"a@example.com"}`,
		},
		"CredentialsInValues": {
			`{"note":"use sk-abcdefghijklmnopqrstu now","urls":["postgres://kiln:pw@db/kiln"],"n":12345678901234567890}`,
			`{"n":12345678901234567890,"note":"use [REDACTED] now","urls":["postgres://kiln:[REDACTED]@db/kiln"]}`,
		},
		"NothingSecret": {`[1,"two",null,true]`, `[1,"two",null,true]`},
		"NotJSON":       {`{"password":`, `"[REDACTED]"`},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if got := string(logging.RedactJSON([]byte(tc.in))); got != tc.want {
				t.Fatalf("RedactJSON(%s)\n got %s\nwant %s", tc.in, got, tc.want)
			}
		})
	}
}
