// Package stripetest runs stripe-mock (Stripe's API surface, offline) for a test and signs
// webhook events as Stripe does.
package stripetest

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v82"
	"github.com/stripe/stripe-go/v82/webhook"
)

// WebhookSecret is the signing secret of the tests' webhook endpoint.
const WebhookSecret = "whsec_kiln_test_0123456789abcdef" //nolint:gosec // a test endpoint's secret, public by design

// SecretKey is a test-mode secret key stripe-mock accepts.
const SecretKey = "sk_test_kiln" //nolint:gosec // stripe-mock takes any test key

var listening = regexp.MustCompile(`Listening for HTTP at address: (\S+)`)

// Start runs stripe-mock (tools/go.mod's tool, built on first use) on a free port until
// the test ends and returns its base URL.
func Start(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// go tool -n builds the tool if needed and prints its path; running the binary itself
	// lets the cleanup stop it (killing go tool would leave its child running).
	out, err := exec.CommandContext(ctx, "go", "tool", "-modfile="+filepath.Join(root, "tools", "go.mod"), "-n", "stripe-mock").Output() //nolint:gosec // fixed arguments
	if err != nil {
		t.Fatalf("build stripe-mock: %v", err)
	}
	cmd := exec.Command(strings.TrimSpace(string(out)), "-http-addr", "127.0.0.1:", "-https-addr", "127.0.0.1:") //nolint:gosec,noctx // the tool go built; stopped by the cleanup
	cmd.Dir = root
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("start stripe-mock: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case addr := <-found:
		return "http://" + addr
	case <-time.After(time.Minute):
		t.Fatal("stripe-mock did not start within a minute")
	}
	return ""
}

// repoRoot is the directory holding tools/go.mod, above the test's directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "tools", "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no tools/go.mod above the test's directory")
		}
		dir = parent
	}
}

// Event is a Stripe event's JSON as Stripe posts it, of stripe-go's API version, created
// at created, with object as data.object.
func Event(t testing.TB, id, typ string, created time.Time, object map[string]any) []byte {
	t.Helper()
	raw, err := json.Marshal(map[string]any{
		"id": id, "object": "event", "type": typ, "api_version": stripe.APIVersion, "created": created.Unix(),
		"livemode": false, "pending_webhooks": 1, "request": map[string]any{"id": nil, "idempotency_key": nil},
		"data": map[string]any{"object": object},
	})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// Sign returns the Stripe-Signature header Stripe sends with body signed with secret at at.
func Sign(body []byte, secret string, at time.Time) string {
	return fmt.Sprintf("t=%d,v1=%s", at.Unix(), hex.EncodeToString(webhook.ComputeSignature(at, body, secret)))
}

// Post is one webhook post: its Stripe-Signature header and body.
type Post struct {
	Kind      string // real, or how it is forged
	Signature string
	Body      []byte
}

// Forgeries returns posts of body that Kiln must refuse: signed with another secret,
// tampered after signing, signed more than 300 s ago, and unsigned.
func Forgeries(body []byte, now time.Time) []Post {
	tampered := []byte(strings.Replace(string(body), `"amount`, `"amount_x`, 1))
	if string(tampered) == string(body) {
		tampered = append([]byte(`{"tampered":true,`), body[1:]...)
	}
	return []Post{
		{Kind: "wrong secret", Signature: Sign(body, "whsec_not_the_endpoints", now), Body: body},
		{Kind: "tampered", Signature: Sign(body, WebhookSecret, now), Body: tampered},
		{Kind: "stale", Signature: Sign(body, WebhookSecret, now.Add(-301*time.Second)), Body: body},
		{Kind: "unsigned", Signature: "", Body: body},
	}
}
