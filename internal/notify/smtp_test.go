package notify

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

const testFrom = "Kiln <no-reply@kiln.example>"

// received is one message as the test server got it.
type received struct {
	from string
	to   []string
	data []byte
	tls  bool
	user string // who authenticated, "" for nobody
}

// smtpServer is a real SMTP server on 127.0.0.1 (emersion/go-smtp) that keeps what it gets.
type smtpServer struct {
	addr  string
	roots *x509.CertPool // trusts the server's certificate

	// user and password, when user is set, are required before MAIL; rcptErr and dataErr,
	// when set, refuse every recipient or every message.
	user, password string
	rcptErr        error
	dataErr        error
	// listen, when set, is the address to serve on (default: a free loopback port).
	listen string

	mu   sync.Mutex
	msgs []received
}

// serverMode is how the test server speaks TLS.
type serverMode int

const (
	plainOnly   serverMode = iota // no TLS at all
	startTLS                      // offers STARTTLS
	implicitTLS                   // TLS from the first byte (smtps)
)

// startSMTP starts a server in mode; configure it with opts before it serves.
func startSMTP(t *testing.T, mode serverMode, opts ...func(*smtpServer)) *smtpServer {
	t.Helper()
	srv := &smtpServer{}
	for _, o := range opts {
		o(srv)
	}
	cert, roots := testCertificate(t)
	srv.roots = roots
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		sess := &smtpSession{srv: srv, conn: c}
		if srv.user != "" {
			return &smtpAuthSession{sess}, nil
		}
		return sess, nil
	}))
	s.Domain = "localhost"
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	s.ErrorLog = log.New(io.Discard, "", 0)
	// Plain-text AUTH is allowed only where the mailer allows plain text: loopback.
	s.AllowInsecureAuth = mode == plainOnly
	if srv.listen == "" {
		srv.listen = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", srv.listen)
	if err != nil {
		t.Fatal(err)
	}
	tlsConfig := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	switch mode {
	case startTLS:
		s.TLSConfig = tlsConfig
	case implicitTLS:
		ln = tls.NewListener(ln, tlsConfig)
	}
	srv.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() { _ = s.Serve(ln); close(done) }()
	t.Cleanup(func() { _ = s.Close(); <-done })
	return srv
}

// received returns the messages delivered so far.
func (s *smtpServer) received() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.msgs...)
}

type smtpSession struct {
	srv  *smtpServer
	conn *smtp.Conn
	user string
	msg  received
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.srv.user != "" && s.user == "" {
		return smtp.ErrAuthRequired
	}
	s.msg = received{from: from, user: s.user}
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.srv.rcptErr != nil {
		return s.srv.rcptErr
	}
	s.msg.to = append(s.msg.to, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if s.srv.dataErr != nil {
		return s.srv.dataErr
	}
	s.msg.data = data
	_, s.msg.tls = s.conn.TLSConnectionState()
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	s.srv.msgs = append(s.srv.msgs, s.msg)
	return nil
}

func (s *smtpSession) Reset()        { s.msg = received{} }
func (s *smtpSession) Logout() error { return nil }

// smtpAuthSession adds AUTH PLAIN to a session.
type smtpAuthSession struct{ *smtpSession }

func (s *smtpAuthSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *smtpAuthSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, password string) error {
		if user != s.srv.user || password != s.srv.password {
			return smtp.ErrAuthFailed
		}
		s.user = user
		return nil
	}), nil
}

// testCertificate makes a self-signed certificate for 127.0.0.1, localhost and mail.test,
// and a pool that trusts it.
func testCertificate(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kiln test smtp"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost", "mail.test"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, roots
}

// mailer returns a mailer for rawURL that trusts srv's certificate.
func mailer(t *testing.T, rawURL string, srv *smtpServer) *SMTPMailer {
	t.Helper()
	m, err := NewSMTPMailer(rawURL, testFrom)
	if err != nil {
		t.Fatalf("NewSMTPMailer: %v", err)
	}
	m.roots = srv.roots
	return m
}

// parsed is a received message read back with the standard library.
type parsed struct {
	header mail.Header
	body   string
}

func parse(t *testing.T, data []byte) parsed {
	t.Helper()
	for i, line := range strings.Split(string(data), "\r\n") {
		if len(line) > 998 {
			t.Errorf("line %d is %d characters long; RFC 5322 allows 998", i+1, len(line))
		}
	}
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not an RFC 5322 message: %v\n%s", err, data)
	}
	body := msg.Body
	if strings.EqualFold(msg.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
		body = quotedprintable.NewReader(msg.Body)
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return parsed{header: msg.Header, body: strings.ReplaceAll(string(raw), "\r\n", "\n")}
}

func TestSMTPMailerSend(t *testing.T) {
	t.Parallel()
	srv := startSMTP(t, plainOnly)
	m := mailer(t, "smtp://"+srv.addr, srv)
	text := "Hello Ada,\n\nConfirm your address: https://app.example.com/verify-email?token=kiln_ve_a-b_c=d\n\n" +
		"Ünïcödé ☕ and a line longer than seventy-eight characters, which quoted-printable must fold softly.\n"
	msg := Message{To: "ada@example.com", Subject: "Vérifiez ☕ your address", Text: text}
	before := time.Now().Add(-time.Second)
	if err := m.Send(t.Context(), msg); err != nil {
		t.Fatalf("Send: %v", err)
	}

	got := srv.received()
	if len(got) != 1 {
		t.Fatalf("server received %d messages, want 1", len(got))
	}
	r := got[0]
	if r.from != "no-reply@kiln.example" || len(r.to) != 1 || r.to[0] != "ada@example.com" || r.user != "" || r.tls {
		t.Errorf("envelope from %q to %q (user %q, tls %v); want no-reply@kiln.example to ada@example.com, no auth, plain", r.from, r.to, r.user, r.tls)
	}
	p := parse(t, r.data)
	h := p.header
	if from, err := mail.ParseAddress(h.Get("From")); err != nil || from.String() != `"Kiln" <no-reply@kiln.example>` {
		t.Errorf("From: %q (%v)", h.Get("From"), err)
	}
	if to, err := mail.ParseAddress(h.Get("To")); err != nil || to.Address != "ada@example.com" {
		t.Errorf("To: %q (%v)", h.Get("To"), err)
	}
	if subject, err := new(mime.WordDecoder).DecodeHeader(h.Get("Subject")); err != nil || subject != msg.Subject {
		t.Errorf("Subject: %q decodes to %q (%v), want %q", h.Get("Subject"), subject, err, msg.Subject)
	}
	if date, err := h.Date(); err != nil || date.Before(before) || date.After(time.Now().Add(time.Second)) {
		t.Errorf("Date: %q (%v), want now", h.Get("Date"), err)
	}
	if id := h.Get("Message-ID"); !regexp.MustCompile(`^<[0-9a-f]{32}@kiln\.example>$`).MatchString(id) {
		t.Errorf("Message-ID: %q, want <32 hex digits@kiln.example>", id)
	}
	if mt, params, err := mime.ParseMediaType(h.Get("Content-Type")); err != nil || mt != "text/plain" || !strings.EqualFold(params["charset"], "utf-8") {
		t.Errorf("Content-Type: %q, want text/plain; charset=UTF-8", h.Get("Content-Type"))
	}
	if v := h.Get("MIME-Version"); v != "1.0" {
		t.Errorf("MIME-Version: %q", v)
	}
	for _, k := range []string{"User-Agent", "X-Mailer"} {
		if v := h.Get(k); v != "" {
			t.Errorf("%s: %q, want none", k, v)
		}
	}
	if p.body != text {
		t.Errorf("body:\n%q\nwant:\n%q", p.body, text)
	}

	t.Run("Concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 5 {
			wg.Go(func() {
				if err := m.Send(t.Context(), Message{To: "bob@example.com", Subject: "n", Text: strings.Repeat("x", i+1)}); err != nil {
					t.Errorf("Send: %v", err)
				}
			})
		}
		wg.Wait()
		if n := len(srv.received()); n != 6 {
			t.Errorf("server received %d messages, want 6", n)
		}
	})
	t.Run("ErrBadRecipient", func(t *testing.T) {
		if err := m.Send(t.Context(), Message{To: "not an address", Subject: "x", Text: "x"}); err == nil {
			t.Fatal("Send to a malformed address succeeded")
		}
	})
}

func TestSMTPMailerAuth(t *testing.T) {
	t.Parallel()
	const password = "s3cret-p@ss"
	srv := startSMTP(t, plainOnly, func(s *smtpServer) { s.user, s.password = "kiln", password })
	open := startSMTP(t, plainOnly)

	tests := []struct {
		name    string
		url     string
		wantErr bool
	}{
		{"OK", "smtp://kiln:" + strings.ReplaceAll(password, "@", "%40") + "@" + srv.addr, false},
		{"ErrWrongPassword", "smtp://kiln:wrong-" + strings.ReplaceAll(password, "@", "%40") + "@" + srv.addr, true},
		{"ErrNoCredentials", "smtp://" + srv.addr, true},
		{"ErrServerOffersNoAuth", "smtp://kiln:" + strings.ReplaceAll(password, "@", "%40") + "@" + open.addr, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(srv.received())
			err := mailer(t, tt.url, srv).Send(t.Context(), Message{To: "ada@example.com", Subject: "Hi", Text: "Hi"})
			if tt.wantErr {
				if err == nil {
					t.Fatal("Send succeeded")
				}
				if strings.Contains(err.Error(), password) {
					t.Errorf("the error shows the password: %v", err)
				}
				if n := len(srv.received()); n != before {
					t.Errorf("a refused send delivered %d messages", n-before)
				}
				return
			}
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			got := srv.received()
			if len(got) != before+1 || got[len(got)-1].user != "kiln" {
				t.Fatalf("received %+v, want one message sent as kiln", got)
			}
		})
	}
}

func TestSMTPMailerTLS(t *testing.T) {
	t.Parallel()
	auth := func(s *smtpServer) { s.user, s.password = "kiln", "pw" }
	starttls := startSMTP(t, startTLS, auth)
	smtps := startSMTP(t, implicitTLS, auth)
	plain := startSMTP(t, plainOnly)

	tests := []struct {
		name     string
		url      string
		srv      *smtpServer
		dialAddr string // reach srv under the URL's host name
		trust    bool
		wantErr  string
	}{
		// AUTH is offered only after STARTTLS here, so authenticating proves the upgrade.
		{"OKStartTLSLoopback", "smtp://kiln:pw@" + starttls.addr, starttls, "", true, ""},
		{"OKStartTLSRemote", "smtp://kiln:pw@mail.test:587", starttls, starttls.addr, true, ""},
		{"OKImplicitTLS", "smtps://kiln:pw@" + smtps.addr, smtps, "", true, ""},
		{"ErrRemoteWithoutStartTLS", "smtp://mail.test:587", plain, plain.addr, true, "STARTTLS"},
		{"ErrUntrustedStartTLS", "smtp://kiln:pw@" + starttls.addr, starttls, "", false, "certificate"},
		{"ErrUntrustedImplicitTLS", "smtps://kiln:pw@" + smtps.addr, smtps, "", false, "certificate"},
		{"ErrImplicitTLSToPlainServer", "smtps://" + plain.addr, plain, "", true, "tls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mailer(t, tt.url, tt.srv)
			m.dialAddr, m.timeout = tt.dialAddr, 5*time.Second
			if !tt.trust {
				m.roots = nil
			}
			before := len(tt.srv.received())
			err := m.Send(t.Context(), Message{To: "ada@example.com", Subject: "Hi", Text: "Hi"})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tt.wantErr)) {
					t.Fatalf("Send error = %v, want one about %s", err, tt.wantErr)
				}
				if n := len(tt.srv.received()); n != before {
					t.Errorf("a refused send delivered %d messages", n-before)
				}
				return
			}
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			got := tt.srv.received()
			if len(got) != before+1 || !got[len(got)-1].tls || got[len(got)-1].user != "kiln" {
				t.Fatalf("received %+v, want one message over TLS sent as kiln", got)
			}
		})
	}
}

func TestSMTPMailerServerErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		option func(*smtpServer)
		want   string
	}{
		{"ErrRecipientRefused", func(s *smtpServer) {
			s.rcptErr = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}, "550"},
		{"ErrMessageRefused", func(s *smtpServer) {
			s.dataErr = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "looks like spam"}
		}, "554"},
		{"ErrTemporary", func(s *smtpServer) {
			s.rcptErr = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
		}, "451"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startSMTP(t, plainOnly, tt.option)
			err := mailer(t, "smtp://"+srv.addr, srv).Send(t.Context(), Message{To: "ada@example.com", Subject: "Hi", Text: "Hi"})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Send error = %v, want the server's %s", err, tt.want)
			}
			if n := len(srv.received()); n != 0 {
				t.Errorf("%d messages delivered", n)
			}
		})
	}
	t.Run("ErrNoServer", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		m, err := NewSMTPMailer("smtp://"+addr, testFrom)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Send(t.Context(), Message{To: "ada@example.com", Subject: "Hi", Text: "Hi"}); err == nil {
			t.Fatal("Send to a closed port succeeded")
		}
	})
}

// TestSMTPMailerTimeout checks that a server that never answers cannot hold a send past its
// timeout or its context.
func TestSMTPMailerTimeout(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // accepted, never greeted
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	msg := Message{To: "ada@example.com", Subject: "Hi", Text: "Hi"}

	t.Run("ErrTimeout", func(t *testing.T) {
		m, err := NewSMTPMailer("smtp://"+ln.Addr().String(), testFrom)
		if err != nil {
			t.Fatal(err)
		}
		m.timeout = 200 * time.Millisecond
		start := time.Now()
		err = m.Send(t.Context(), msg)
		if err == nil || time.Since(start) > 2*time.Second {
			t.Fatalf("Send = %v after %v, want an error after about 200ms", err, time.Since(start))
		}
	})
	t.Run("ErrContextDone", func(t *testing.T) {
		m, err := NewSMTPMailer("smtp://"+ln.Addr().String(), testFrom)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err = m.Send(ctx, msg)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
			t.Fatalf("Send = %v after %v, want the context's deadline after about 200ms", err, time.Since(start))
		}
	})
}

func TestNewSMTPMailer(t *testing.T) {
	t.Parallel()
	ok := []struct {
		url         string
		host        string
		port        int
		implicitTLS bool
		plainOK     bool
		user, pass  string
		str         string
	}{
		{"smtp://mail.example.com", "mail.example.com", 587, false, false, "", "", "smtp://mail.example.com:587"},
		{"smtps://mail.example.com", "mail.example.com", 465, true, false, "", "", "smtps://mail.example.com:465"},
		{"smtp://apikey:SG.xyz%2F1@smtp.example.com:2525", "smtp.example.com", 2525, false, false, "apikey", "SG.xyz/1", "smtp://apikey:***@smtp.example.com:2525"},
		{"smtp://localhost:1025", "localhost", 1025, false, true, "", "", "smtp://localhost:1025"},
		{"smtp://127.0.0.1:25/", "127.0.0.1", 25, false, true, "", "", "smtp://127.0.0.1:25"},
		{"smtp://[::1]:25", "::1", 25, false, true, "", "", "smtp://[::1]:25"},
		{"smtp://user@relay.internal:25", "relay.internal", 25, false, false, "user", "", "smtp://user:***@relay.internal:25"},
	}
	for _, tt := range ok {
		t.Run("OK "+tt.url, func(t *testing.T) {
			m, err := NewSMTPMailer(tt.url, testFrom)
			if err != nil {
				t.Fatalf("NewSMTPMailer: %v", err)
			}
			if m.host != tt.host || m.port != tt.port || m.implicitTLS != tt.implicitTLS || m.plainOK != tt.plainOK ||
				m.user != tt.user || m.password != tt.pass || m.timeout != DefaultSMTPTimeout {
				t.Errorf("mailer %+v", m)
			}
			if s := m.String(); s != tt.str {
				t.Errorf("String() = %q, want %q", s, tt.str)
			}
		})
	}

	const secret = "hunter2"
	bad := []struct{ name, url, from string }{
		{"ErrScheme", "https://u:" + secret + "@mail.example.com", testFrom},
		{"ErrNoHost", "smtp://u:" + secret + "@:587", testFrom},
		{"ErrPortZero", "smtp://u:" + secret + "@mail.example.com:0", testFrom},
		{"ErrPortRange", "smtp://u:" + secret + "@mail.example.com:70000", testFrom},
		{"ErrPasswordWithoutUser", "smtp://:" + secret + "@mail.example.com", testFrom},
		{"ErrPath", "smtp://u:" + secret + "@mail.example.com/inbox", testFrom},
		{"ErrQuery", "smtp://u:" + secret + "@mail.example.com?tls=off", testFrom},
		{"ErrUnparsable", "smtp://u:" + secret + "%zz@mail.example.com", testFrom},
		{"ErrFrom", "smtp://u:" + secret + "@mail.example.com", "not an address"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSMTPMailer(tt.url, tt.from)
			if err == nil {
				t.Fatal("NewSMTPMailer succeeded")
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

func TestUnavailable(t *testing.T) {
	t.Parallel()
	cause := errors.New("smtp url: no host")
	err := Unavailable{Err: cause}.Send(t.Context(), Message{To: "ada@example.com"})
	if !errors.Is(err, cause) {
		t.Fatalf("Send = %v, want the configuration error", err)
	}
}
