package server

import (
	"net/http"
	"testing"
)

// TestDisabledUsersKeysStop: an admin disabling a user stops the API keys that user created
// (they stayed valid) as well as the user's sessions, at once, though the key was cached
// by a use just before; enabling the user makes them work again.
func TestDisabledUsersKeysStop(t *testing.T) {
	t.Parallel()
	b := setup(t)
	admin, _ := b.signUpAdmin(t, "disabler@example.com")
	pair := b.signUp(t, "leaver@example.com")
	me := b.currentUser(t, pair.AccessToken)
	key := b.createKey(t, pair.AccessToken, []string{"chat"}).Key
	if res := b.call(t, "GET", "/v1/models", key, nil, nil); res.StatusCode != http.StatusOK { // cached from here on
		t.Fatalf("key before: %d", res.StatusCode)
	}
	if res := b.call(t, "POST", "/v1/admin/users/"+me.Id.String()+"/disable", admin.AccessToken, nil, nil); res.StatusCode >= 300 {
		t.Fatalf("disable: %d %s", res.StatusCode, readAll(res))
	}
	for name, credential := range map[string]string{"APIKey": key, "AccessToken": pair.AccessToken} {
		path := "/v1/me"
		if credential == key {
			path = "/v1/models"
		}
		if res := b.call(t, "GET", path, credential, nil, nil); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s of a disabled user: %d, want 401", name, res.StatusCode)
		}
	}
	if res := b.call(t, "POST", "/v1/admin/users/"+me.Id.String()+"/enable", admin.AccessToken, nil, nil); res.StatusCode >= 300 {
		t.Fatalf("enable: %d %s", res.StatusCode, readAll(res))
	}
	if res := b.call(t, "GET", "/v1/models", key, nil, nil); res.StatusCode != http.StatusOK {
		t.Errorf("key after enabling its user: %d, want 200", res.StatusCode)
	}
}
