package server

import (
	"testing"

	"github.com/kilnhq/kiln/gen/api"
)

// BenchmarkPasswordResetRequest measures the reset request's handler for an address with
// an account and without one, in one run: both only create the request's job, so the
// answer's timing tells nothing about the address (any gap is noise).
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
