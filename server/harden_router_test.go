package server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/platform/config"
)

// TestEveryAnswerIsAProblem sends, over a real connection, the requests that got Go's
// HTML redirect or net/http's plain-text 400 (unclean paths, malformed percent-encoding,
// control characters in headers, oversized headers, an unknown protocol version): each
// must be a problem+json with a request id.
func TestEveryAnswerIsAProblem(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *config.HTTP) { c.MaxHeaderBytes = 4096 }))
	ts := httptest.NewUnstartedServer(b.srv)
	ts.Config = b.srv.HTTPServer("")
	ts.Listener = b.srv.Listener(ts.Listener)
	ts.Start()
	t.Cleanup(ts.Close)
	const tail = "Host: kiln\r\nConnection: close\r\n\r\n"
	for _, tt := range []struct {
		name, request string
		status        int
		code          string
	}{
		{"DoubleSlash", "GET //v1/me HTTP/1.1\r\n" + tail, 404, "not_found"},
		{"DotDot", "GET /v1/../v1/me HTTP/1.1\r\n" + tail, 404, "not_found"},
		{"Dot", "GET /v1/./me HTTP/1.1\r\n" + tail, 404, "not_found"},
		{"BadPercentInPath", "GET /v1/me%zz HTTP/1.1\r\n" + tail, 400, "invalid_request"},
		{"BadPercentInQuery", "GET /health?q=%zz HTTP/1.1\r\n" + tail, 400, "invalid_request"},
		{"ControlInHeader", "GET /health HTTP/1.1\r\nX-Note: a\x01b\r\n" + tail, 400, "invalid_request"},
		{"NULInHeader", "GET /health HTTP/1.1\r\nKiln-Org: a\x00b\r\n" + tail, 400, "invalid_request"},
		{"ControlInHeaderName", "GET /health HTTP/1.1\r\nX\x01Note: a\r\n" + tail, 400, "invalid_request"},
		{"ControlInRequestLine", "GET /health\x01 HTTP/1.1\r\n" + tail, 400, "invalid_request"},
		{"NoHost", "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n", 400, "invalid_request"},
		{"UnknownVersion", "GET /health HTTP/9.1\r\n" + tail, 505, "invalid_request"},
		{"UnknownTransferCoding", "POST /v1/auth/login HTTP/1.1\r\nTransfer-Encoding: gzip\r\n" + tail, 501, "invalid_request"},
		{"HeadersTooLarge", "GET /health HTTP/1.1\r\nX-Big: " + strings.Repeat("a", 8192) + "\r\n" + tail, 431, "request_too_large"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := net.DialTimeout("tcp", ts.Listener.Addr().String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, tt.request); err != nil {
				t.Fatal(err)
			}
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tt.status, body)
			}
			if p := mustProblem(t, res.Header, body); string(p.Code) != tt.code || p.Status != tt.status {
				t.Fatalf("problem %s, want %s with status %d", body, tt.code, tt.status)
			}
		})
	}
}
