package notify

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// DefaultSMTPTimeout bounds one Send, from dialling to the server's last answer.
const DefaultSMTPTimeout = 20 * time.Second

// SMTPMailer sends each message over its own SMTP connection, so it is safe for concurrent
// use and holds nothing open between messages.
//
// smtp:// URLs (default port 587) upgrade the connection with STARTTLS. A server that does
// not offer STARTTLS is refused, unless it is on a loopback address (a local relay or a
// development catcher such as Mailpit), where plain text is allowed. smtps:// URLs (default
// port 465) speak TLS from the first byte. Certificates are always verified. With a user in
// the URL the mailer authenticates (PLAIN or LOGIN, the mechanisms every provider offers, or
// the strongest other one the server lists) and fails if the server offers no AUTH.
type SMTPMailer struct {
	host        string
	port        int
	implicitTLS bool
	// plainOK allows a session without TLS: only for loopback hosts.
	plainOK  bool
	user     string
	password string
	from     *mail.Address
	// timeout bounds one Send.
	timeout time.Duration
	// roots verifies server certificates; nil means the system's roots.
	roots *x509.CertPool
	// dialAddr, when set, is dialled instead of host:port (tests reach a local server
	// under another host name with it).
	dialAddr string
}

// NewSMTPMailer returns a mailer for rawURL, smtp://[user[:password]@]host[:port] or
// smtps://…, sending from from (an RFC 5322 address such as `Kiln <no-reply@example.com>`).
// Its errors never repeat the URL, which holds the password.
func NewSMTPMailer(rawURL, from string) (*SMTPMailer, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, errors.New("smtp url: not a valid URL") // url.Error would print the password
	}
	m := &SMTPMailer{timeout: DefaultSMTPTimeout}
	switch u.Scheme {
	case "smtp":
		m.port = 587
	case "smtps":
		m.port, m.implicitTLS = 465, true
	default:
		return nil, errors.New("smtp url: the scheme must be smtp or smtps")
	}
	m.host = u.Hostname()
	if m.host == "" {
		return nil, errors.New("smtp url: no host")
	}
	if p := u.Port(); p != "" {
		m.port, err = strconv.Atoi(p)
		if err != nil || m.port < 1 || m.port > 65535 {
			return nil, errors.New("smtp url: the port must be 1 to 65535")
		}
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("smtp url: only scheme, user, password, host and port are read; remove the rest")
	}
	if u.User != nil {
		m.user = u.User.Username()
		m.password, _ = u.User.Password()
		if m.user == "" {
			return nil, errors.New("smtp url: a password needs a user name")
		}
	}
	m.plainOK = loopback(m.host)
	m.from, err = mail.ParseAddress(from)
	if err != nil {
		return nil, fmt.Errorf("mail from %q: %w", from, err)
	}
	return m, nil
}

// String describes the mailer without its password, for logs.
func (m *SMTPMailer) String() string {
	scheme := "smtp"
	if m.implicitTLS {
		scheme = "smtps"
	}
	user := ""
	if m.user != "" {
		user = url.User(m.user).String() + ":***@"
	}
	return scheme + "://" + user + net.JoinHostPort(m.host, strconv.Itoa(m.port))
}

// loopback reports whether host is this machine: "localhost" or a loopback IP address.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Send delivers msg as one text/plain UTF-8 message with From, To, Subject, Date and
// Message-ID headers. It gives up when ctx ends or after the mailer's timeout, whichever is
// first; the error then says so.
func (m *SMTPMailer) Send(ctx context.Context, msg Message) error {
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	message, err := m.message(msg)
	if err != nil {
		return err
	}
	client, err := m.client(ctx)
	if err != nil {
		return err
	}
	if err := client.DialAndSendWithContext(ctx, message); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		} else if final := permanent(err); final != nil {
			err = fmt.Errorf("%w: %w", final, err)
		}
		return fmt.Errorf("send email via %s: %w", m.addr(), err)
	}
	return nil
}

// permanent classifies a send error: ErrRecipientRejected or ErrMessageRejected for a 5xx
// reply to RCPT TO or to DATA, nil for anything a later attempt may get through (4xx
// replies, connection and TLS failures, a refused MAIL FROM or AUTH, which an operator
// fixes).
func permanent(err error) error {
	var se *gomail.SendError
	if !errors.As(err, &se) || se.ErrorCode() < 500 || se.ErrorCode() > 599 {
		return nil
	}
	switch se.Reason {
	case gomail.ErrSMTPRcptTo:
		return ErrRecipientRejected
	case gomail.ErrSMTPData, gomail.ErrSMTPDataClose:
		return ErrMessageRejected
	}
	return nil
}

// message builds the RFC 5322 message.
func (m *SMTPMailer) message(msg Message) (*gomail.Msg, error) {
	message := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	message.FromMailAddress(m.from)
	if err := message.To(msg.To); err != nil {
		return nil, fmt.Errorf("email to %q: %w", msg.To, err)
	}
	message.Subject(msg.Subject)
	message.SetDateWithValue(time.Now())
	message.SetMessageIDWithValue(messageID(msg.ID, m.from.Address))
	message.SetBodyString(gomail.TypeTextPlain, msg.Text)
	if msg.HTML != "" {
		message.AddAlternativeString(gomail.TypeTextHTML, msg.HTML)
	}
	return message, nil
}

// messageID returns a globally unique Message-ID for mail sent from address: local (or,
// when empty, 128 random bits) at the sender's domain, so that the ID says who made it
// without naming this host.
func messageID(local, address string) string {
	if local == "" {
		b := make([]byte, 16)
		_, _ = rand.Read(b) // never fails: crypto/rand aborts the program instead
		local = hex.EncodeToString(b)
	}
	_, domain, _ := strings.Cut(address, "@")
	if domain == "" {
		domain = "localhost"
	}
	return local + "@" + domain
}

// MessageID is the Message-ID (without angle brackets) m gives a message with local part
// id.
func (m *SMTPMailer) MessageID(id string) string { return messageID(id, m.from.Address) }

// client configures a go-mail client for one send. Each send has its own: the client keeps
// per-connection state.
func (m *SMTPMailer) client(send context.Context) (*gomail.Client, error) {
	tlsConfig := &tls.Config{ServerName: m.host, MinVersion: tls.VersionTLS12, RootCAs: m.roots}
	opts := []gomail.Option{
		gomail.WithPort(m.port),
		gomail.WithTimeout(m.timeout),
		gomail.WithTLSConfig(tlsConfig),
		gomail.WithDialContextFunc(m.dialer(send, tlsConfig)),
	}
	switch {
	case m.implicitTLS:
		opts = append(opts, gomail.WithSSL())
	case m.plainOK:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
	default:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	}
	if m.user != "" {
		opts = append(opts,
			gomail.WithOpportunisticSMTPAuth(gomail.SMTPAuthPlain, gomail.SMTPAuthLogin),
			gomail.WithUsername(m.user), gomail.WithPassword(m.password))
	}
	c, err := gomail.NewClient(m.host, opts...)
	if err != nil {
		return nil, fmt.Errorf("smtp client for %s: %w", m.addr(), err)
	}
	return c, nil
}

// dialer connects to the server, speaking TLS at once for smtps. The connection is closed
// when send ends (the dial's own context ends with the dial), so that no step of the session
// outlives the send's deadline. The TLS connection is returned as it is: the SMTP client
// recognises it and allows authentication.
func (m *SMTPMailer) dialer(send context.Context, tlsConfig *tls.Config) gomail.DialContextFunc {
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		addr := m.dialAddr
		if addr == "" {
			addr = m.addr()
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if m.implicitTLS {
			tc := tls.Client(conn, tlsConfig)
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = conn.Close()
				return nil, fmt.Errorf("tls handshake: %w", err)
			}
			conn = tc
		}
		context.AfterFunc(send, func() { _ = conn.Close() })
		return conn, nil
	}
}

func (m *SMTPMailer) addr() string { return net.JoinHostPort(m.host, strconv.Itoa(m.port)) }

// Unavailable is a Mailer that refuses every message with Err. The composition root uses it
// when the SMTP settings cannot be used, so that every send fails loudly rather than the
// mail (password-reset links included) going somewhere else, such as the log.
type Unavailable struct{ Err error }

// Send returns u.Err.
func (u Unavailable) Send(context.Context, Message) error {
	return fmt.Errorf("email not sent: %w", u.Err)
}
