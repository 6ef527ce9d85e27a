package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// TestWebSocketSubprotocolAuth is how a browser, which cannot set headers on a WebSocket
// handshake, authenticates: the credential rides in a kiln.bearer.* subprotocol offer.
func TestWebSocketSubprotocolAuth(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ts := httptest.NewServer(b.srv)
	t.Cleanup(ts.Close)
	key := b.createKey(t, b.signUp(t, "ws@example.com").AccessToken, []string{"chat"}).Key
	url := "ws" + strings.TrimPrefix(ts.URL, "http") + "/v1/chat/ws"

	t.Run("OKTheTokenIsNeverEchoed", func(t *testing.T) {
		t.Parallel()
		c, res, err := websocket.Dial(t.Context(), url, &websocket.DialOptions{Subprotocols: []string{"kiln.v1", wsBearerPrefix + key}})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.CloseNow() }()
		if c.Subprotocol() != "kiln.v1" || strings.Contains(res.Header.Get("Sec-WebSocket-Protocol"), key) {
			t.Fatalf("subprotocol %q, header %q", c.Subprotocol(), res.Header.Get("Sec-WebSocket-Protocol"))
		}
		frame := `{"type":"chat","data":{"messages":[{"role":"user","content":"hi"}]}}`
		if err := c.Write(t.Context(), websocket.MessageText, []byte(frame)); err != nil {
			t.Fatal(err)
		}
		for {
			_, msg, err := c.Read(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			var f struct{ Type string }
			_ = json.Unmarshal(msg, &f)
			if f.Type == "error" {
				t.Fatalf("error frame %s", msg)
			}
			if f.Type == "done" {
				return
			}
		}
	})

	t.Run("ErrUnauthenticatedWithABadToken", func(t *testing.T) {
		t.Parallel()
		_, res, err := websocket.Dial(t.Context(), url, &websocket.DialOptions{Subprotocols: []string{"kiln.v1", wsBearerPrefix + "kiln_dev_nope"}})
		if err == nil || res == nil || res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("err %v, response %+v", err, res)
		}
	})
}
