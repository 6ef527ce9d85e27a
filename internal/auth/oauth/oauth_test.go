package oauth

import (
	"net/url"
	"testing"

	"github.com/kilnhq/kiln/internal/platform/redisclient"
)

func TestAllowed(t *testing.T) {
	t.Parallel()
	list := []string{"https://app.example.com/oauth/done", "https://spa.example.com/", "http://localhost:5173/"}
	for _, tc := range []struct {
		uri  string
		want bool
	}{
		{"https://app.example.com/oauth/done", true},
		{"https://spa.example.com/", true},
		{"https://spa.example.com/auth/cb?x=1", true},
		{"http://localhost:5173/cb", true},
		{"https://app.example.com/oauth/done/x", false},
		{"https://app.example.com/oauth/done?x=1", false},
		{"https://app.example.com/oauth/done#frag", false},
		{"https://spa.example.com", false},
		{"https://spa.example.com.evil.com/", false},
		{"https://spa.example.com/../admin", false},
		{"https://spa.example.com/\\evil.com", false},
		{"https://user@spa.example.com/", false},
		{"https://spa.example.com/a b", false},
		{"javascript:alert(1)//https://spa.example.com/", false},
		{"//spa.example.com/", false},
		{"", false},
	} {
		if got := allowed(list, tc.uri); got != tc.want {
			t.Errorf("allowed(%q) = %v, want %v", tc.uri, got, tc.want)
		}
	}
}

func TestWithQuery(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"https://a.example/cb":       "https://a.example/cb?code=x%2By",
		"https://a.example/cb?s=1&t": "https://a.example/cb?s=1&t&code=x%2By",
	} {
		if got := withQuery(in, "code", "x+y"); got != want {
			t.Errorf("withQuery(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	for name, p := range map[string]ProviderConfig{
		"BadName":      {Name: "Bad Name", Type: TypeGitHub, ClientID: "x"},
		"UnknownType":  {Name: "x", Type: "saml", ClientID: "x"},
		"NoClientID":   {Name: "x", Type: TypeGitHub},
		"OIDCNoIssuer": {Name: "x", Type: TypeOIDC, ClientID: "x"},
		"WeComNoAgent": {Name: "x", Type: TypeWeCom, ClientID: "x"},
	} {
		if _, err := New(Config{CallbackBase: "https://api.example.com", Providers: []ProviderConfig{p}}, nil, nil, ksForTest, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	dup := ProviderConfig{Name: "gh", Type: TypeGitHub, ClientID: "x"}
	if _, err := New(Config{CallbackBase: "https://api.example.com", Providers: []ProviderConfig{dup, dup}}, nil, nil, ksForTest, nil); err == nil {
		t.Error("duplicate name: no error")
	}
	if _, err := New(Config{CallbackBase: "api.example.com", Providers: []ProviderConfig{dup}}, nil, nil, ksForTest, nil); err == nil {
		t.Error("relative callback base: no error")
	}
}

func TestTruthy(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]bool{`true`: true, `"true"`: true, `false`: false, `"false"`: false, ``: false, `null`: false} {
		if truthy([]byte(raw)) != want {
			t.Errorf("truthy(%s) != %v", raw, want)
		}
	}
}

var ksForTest = redisclient.Keyspace{Env: "test"}

// FuzzAllowed checks that no redirect URI the allow-list admits leads to another host.
func FuzzAllowed(f *testing.F) {
	list := []string{"https://app.example.com/oauth/done", "https://spa.example.com/"}
	for _, s := range []string{"https://spa.example.com/x", "https://spa.example.com/%2e%2e/", "https://spa.example.com/@evil.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		if !allowed(list, uri) {
			return
		}
		u, err := url.Parse(uri)
		if err != nil || (u.Host != "app.example.com" && u.Host != "spa.example.com") || u.Scheme != "https" {
			t.Fatalf("allowed %q (host %q)", uri, u.Host)
		}
	})
}
