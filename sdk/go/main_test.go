package kiln_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	kiln "github.com/kilnhq/kiln/sdk/go"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		if err := shared.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "the examples' server:", err)
			code = 1
		}
	}
	if builtDir != "" {
		_ = os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

// shared is the server the examples talk to, started by the first that needs it.
var shared *kilnProcess

// exampleServer returns the examples' server and an API key (scope chat) of a new account
// on it. An example cannot fail a test, so it panics when the server cannot be had.
var exampleServer = sync.OnceValues(func() (baseURL, apiKey string) {
	k, err := launchKiln()
	if err != nil {
		panic(err)
	}
	shared = k
	ctx := context.Background()
	client, err := kiln.NewClientWithResponses(k.baseURL)
	if err != nil {
		panic(err)
	}
	// kiln_test is shared across runs: a new account each time.
	email := "sdk-go-example-" + strings.ToLower(rand.Text()) + "@example.com"
	signup, err := kiln.CheckResponse(client.SignUpWithResponse(ctx,
		kiln.SignUpRequest{Email: email, Password: "correct horse battery staple 9", Name: "SDK Go example"}))
	if err != nil {
		panic(err)
	}
	key, err := kiln.CheckResponse(client.CreateAPIKeyWithResponse(ctx, nil,
		kiln.CreateAPIKeyRequest{Name: "example", Scopes: []kiln.Scope{kiln.ScopeChat}}, kiln.WithBearer(signup.JSON201.AccessToken)))
	if err != nil {
		panic(err)
	}
	return k.baseURL, key.JSON201.Key
})

// TestREADMEGoExamples keeps the README's Go code honest: each ```go block of README.md is
// the body of an example in example_test.go, word for word (one tab deeper), so it
// compiles and runs against a real server there.
func TestREADMEGoExamples(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	examples, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	var blocks int
	for rest := string(readme); ; {
		_, after, ok := strings.Cut(rest, "\n```go\n")
		if !ok {
			break
		}
		block, tail, ok := strings.Cut(after, "\n```\n")
		if !ok {
			t.Fatal("README.md: a go block is never closed")
		}
		rest, blocks = tail, blocks+1
		var indented bytes.Buffer
		for line := range strings.SplitSeq(block, "\n") {
			if line != "" {
				indented.WriteString("\t" + line)
			}
			indented.WriteString("\n")
		}
		if !bytes.Contains(examples, indented.Bytes()) {
			t.Errorf("README.md's go block %d is not the body of an example in example_test.go:\n%s", blocks, block)
		}
	}
	if blocks == 0 {
		t.Error("README.md has no go block: the quick start's Go example is gone")
	}
}
