package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/logging"
)

// net/http refuses a request it cannot parse (a control character or NUL in a header, a
// malformed request line or percent-encoded path, headers past MaxHeaderBytes, an unknown
// HTTP version or transfer coding) before any handler runs, by writing a plain-text answer
// straight to the connection in one write. No middleware sees such a request; the
// connection does, so Listener's connections turn exactly those writes into problems.
// What stays out of reach: a connection net/http closes without an answer (a read error or
// timeout before a whole request arrived), and HTTP/2, which Kiln does not serve in clear.

// plainRefusal matches net/http's connection-level refusal: status line, its two fixed
// headers, and a one-line text. A response of Kiln's own never has Connection right after
// a text/plain Content-Type (net/http writes headers sorted), nor comes without Date.
var plainRefusal = regexp.MustCompile(`^HTTP/1\.1 ([1-5][0-9][0-9]) [^\r\n]*\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n([^\r\n]*)$`)

// Listener wraps ln so that net/http's plain-text refusals of unparsable requests reach
// the client as problem+json with a request id, like every other answer of Kiln's.
func (s *Server) Listener(ln net.Listener) net.Listener {
	return &problemListener{Listener: ln, srv: s}
}

type problemListener struct {
	net.Listener
	srv *Server
}

func (l *problemListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &problemConn{Conn: c, srv: l.srv}, nil
}

// problemConn rewrites a refusal written to it; every other write passes as it is.
type problemConn struct {
	net.Conn
	srv *Server
}

func (c *problemConn) Write(b []byte) (int, error) {
	m := plainRefusal.FindSubmatch(b)
	if m == nil {
		return c.Conn.Write(b)
	}
	status, _ := strconv.Atoi(string(m[1]))
	if _, err := c.Conn.Write(c.srv.refusal(status, string(m[2]), c.RemoteAddr())); err != nil {
		return 0, err
	}
	return len(b), nil // net/http only checks the error: the client got the problem
}

// refusal renders the problem+json response that replaces net/http's plain-text refusal
// with status and text.
func (s *Server) refusal(status int, text string, remote net.Addr) []byte {
	id := uuid.Must(uuid.NewV7()).String()
	ctx := logging.WithRequestID(context.Background(), id)
	code, detail := errs.Invalid, "The request could not be parsed (a control character in a header or in the request line, malformed percent-encoding, or an unsupported protocol); net/http said: "+text+"."
	if status == http.StatusRequestHeaderFieldsTooLarge {
		code, detail = errs.RequestTooLarge, fmt.Sprintf("The request's headers exceed %d bytes.", s.cfg.MaxHeaderBytes)
	}
	p := newProblem(ctx, "", &errs.Error{Code: code, Message: detail})
	p.Status = status
	body, _ := json.Marshal(p)
	s.log.InfoContext(ctx, "request refused by the HTTP parser", "status", status, "reason", text, "remote", remote.String())
	var out bytes.Buffer
	fmt.Fprintf(&out, "HTTP/1.1 %d %s\r\nCache-Control: no-store\r\nConnection: close\r\nContent-Length: %d\r\nContent-Type: application/problem+json\r\n%s: %s\r\n",
		status, http.StatusText(status), len(body), requestIDHeader, id)
	for _, h := range s.security.forPath("") { // the request's path is unknown: the API's policy
		fmt.Fprintf(&out, "%s: %s\r\n", h.name, h.value[0])
	}
	fmt.Fprintf(&out, "\r\n%s", body)
	return out.Bytes()
}
