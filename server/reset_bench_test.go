package server

import (
	"testing"

	"github.com/kilnhq/kiln/gen/api"
)

// BenchmarkPasswordResetRequest measures the reset request's handler for an address with
// an account (token, queued email and audit event in one transaction) and without one
// (the lookup and the audit event), in one run: the gap is what the answer's timing can
// tell about the address.
//
//	go test ./server -run '^$' -bench PasswordResetRequest -count 6
func BenchmarkPasswordResetRequest(b *testing.B) {
	bd := setup(b)
	bd.signUp(b, "bench@example.com")
	run := func(b *testing.B, email string) {
		req := api.RequestPasswordResetRequestObject{Body: &api.RequestPasswordResetJSONRequestBody{Email: email}}
		for b.Loop() {
			res, err := bd.srv.RequestPasswordReset(b.Context(), req)
			if err != nil {
				b.Fatal(err)
			}
			if _, ok := res.(api.RequestPasswordReset202Response); !ok {
				b.Fatalf("answer %T", res)
			}
		}
	}
	b.Run("account", func(b *testing.B) { run(b, "bench@example.com") })
	b.Run("no_account", func(b *testing.B) { run(b, "nobody@example.com") })
}
