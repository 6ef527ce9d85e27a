package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/jobs"
)

// queue queues an email in a transaction of its own.
func (b *bundle) queue(t testing.TB, r EmailRequest) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	err := b.st.InTx(context.Background(), func(q *db.Queries) error {
		var err error
		id, err = b.c.QueueEmail(context.Background(), q, b.now, r)
		return err
	})
	if err != nil {
		t.Fatalf("QueueEmail: %v", err)
	}
	return id
}

// attempt runs one attempt of a delivery's job, as the jobs runtime would.
func (b *bundle) attempt(ctx context.Context, id uuid.UUID) (any, error) {
	return b.c.deliverEmail(ctx, &jobs.Run{}, EmailPayload{DeliveryID: id})
}

// parts reads the text and HTML parts of a received multipart/alternative message.
func parts(t *testing.T, data []byte) (mail.Header, string, string) {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/alternative" {
		t.Fatalf("Content-Type %q, want multipart/alternative", msg.Header.Get("Content-Type"))
	}
	var text, html string
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		p, err := mr.NextPart() // decodes quoted-printable
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p)
		switch ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); ct {
		case "text/plain":
			text = string(b)
		case "text/html":
			html = string(b)
		}
	}
	return msg.Header, text, html
}

// TestEmailSMTPDownThenUp: emails queued while the SMTP server is down are retried, each
// attempt as the runtime would run it, and once the server is up every email arrives
// exactly once, whatever duplicate attempts follow.
func TestEmailSMTPDownThenUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there until the server starts below
	m, err := NewSMTPMailer("smtp://"+addr, testFrom)
	if err != nil {
		t.Fatal(err)
	}
	m.timeout = 3 * time.Second
	b := setup(t, m)

	const n = 12
	ids := make([]uuid.UUID, n)
	for i := range n {
		user, _ := b.user(t, fmt.Sprintf("user%d@example.com", i))
		ids[i] = b.queue(t, EmailRequest{To: fmt.Sprintf("user%d@example.com", i), UserID: &user, Template: TemplatePasswordReset,
			Data: map[string]string{"email": fmt.Sprintf("user%d@example.com", i), "link": "https://app.example/reset-password?token=t" + fmt.Sprint(i)}})
	}

	// Down: two rounds of attempts fail, each to be retried.
	for round := 1; round <= 2; round++ {
		for _, id := range ids {
			if _, err := b.attempt(ctx, id); err == nil || jobs.IsPermanent(err) {
				t.Fatalf("round %d: attempt = %v, want a retryable error", round, err)
			}
			d, _ := b.c.GetDelivery(ctx, id)
			if d.Status != StatusQueued || d.Attempts != round || d.LastError == "" {
				t.Fatalf("round %d: delivery %+v", round, d)
			}
		}
	}

	srv := startSMTP(t, plainOnly, func(s *smtpServer) { s.listen = addr })
	// Up: the runtime retries each failed job until it succeeds; then duplicate tasks
	// (a crash after the send, reconciliation) run it again, two of them at once.
	for _, id := range ids {
		var err error
		for try := 0; try < EmailKind().MaxAttempts; try++ {
			if _, err = b.attempt(ctx, id); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("delivery %s never went out: %v", id, err)
		}
	}
	var wg sync.WaitGroup
	for _, id := range ids {
		for range 2 {
			wg.Go(func() {
				res, err := b.attempt(ctx, id)
				if err != nil || res.(EmailResult).Status != StatusSent {
					t.Errorf("duplicate attempt = %v, %v; want the sent result", res, err)
				}
			})
		}
	}
	wg.Wait()

	got := srv.received()
	if len(got) != n {
		t.Fatalf("the server received %d emails, want %d", len(got), n)
	}
	seen := map[string]bool{}
	for _, r := range got {
		seen[r.to[0]] = true
	}
	if len(seen) != n {
		t.Fatalf("recipients %v: some got two emails", seen)
	}
	for i, id := range ids {
		d, _ := b.c.GetDelivery(ctx, id)
		if d.Status != StatusSent || d.Attempts != 3 || d.SentAt == nil || d.ProviderMessageID != id.String()+"@kiln.example" {
			t.Errorf("delivery %d = %+v", i, d)
		}
	}
	h, text, html := parts(t, got[0].data)
	if !strings.Contains(text, "https://app.example/reset-password?token=t") || !strings.Contains(html, "reset-password?token=t") ||
		!strings.HasPrefix(h.Get("Message-ID"), "<") || !slices.ContainsFunc(ids, func(id uuid.UUID) bool { return strings.Contains(h.Get("Message-ID"), id.String()) }) {
		t.Errorf("message: Message-ID %q\ntext %q\nhtml %q", h.Get("Message-ID"), text, html)
	}
}

func TestEmailBounce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name      string
		err       *smtp.SMTPError
		status    DeliveryStatus
		permanent bool
	}{
		{"Bounced", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}, StatusBounced, true},
		{"TemporaryRetried", &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}, StatusQueued, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startSMTP(t, plainOnly, func(s *smtpServer) { s.rcptErr = tt.err })
			b := setup(t, mailer(t, "smtp://"+srv.addr, srv))
			id := b.queue(t, EmailRequest{To: "ghost@example.com", Template: TemplateNotification, Data: map[string]string{"title": "Hi"}})
			_, err := b.attempt(ctx, id)
			if err == nil || jobs.IsPermanent(err) != tt.permanent {
				t.Fatalf("attempt = %v, want permanent %v", err, tt.permanent)
			}
			d, _ := b.c.GetDelivery(ctx, id)
			if d.Status != tt.status || !strings.Contains(d.LastError, fmt.Sprint(tt.err.Code)) {
				t.Fatalf("delivery = %+v, want %s", d, tt.status)
			}
			if tt.permanent {
				if res, err := b.attempt(ctx, id); err != nil || res.(EmailResult).Status != StatusBounced {
					t.Fatalf("an attempt after the bounce = %v, %v", res, err)
				}
			}
		})
	}
}

func TestEmailLocale(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := startSMTP(t, plainOnly)
	b := setup(t, mailer(t, "smtp://"+srv.addr, srv))
	data := map[string]string{"email": "x@example.com", "link": "https://app.example/verify-email?token=t"}
	userZH, _ := b.user(t, "zh@example.com")
	if _, err := b.c.SetPreferences(ctx, userZH, PreferencesUpdate{Locale: new("zh-CN")}); err != nil {
		t.Fatal(err)
	}
	userOrgZH, orgZH := b.user(t, "orgzh@example.com")
	if _, err := b.st.Pool.Exec(ctx, "UPDATE orgs SET locale = 'zh-CN' WHERE id = $1", orgZH); err != nil {
		t.Fatal(err)
	}
	userEN, _ := b.user(t, "en@example.com")
	tests := []struct {
		name    string
		req     EmailRequest
		subject string
	}{
		{"User", EmailRequest{To: "zh@example.com", UserID: &userZH}, "验证你的邮箱地址"},
		{"Org", EmailRequest{To: "orgzh@example.com", UserID: &userOrgZH}, "验证你的邮箱地址"},
		{"OrgWithoutUser", EmailRequest{To: "a@example.com", OrgID: &orgZH}, "验证你的邮箱地址"},
		{"Default", EmailRequest{To: "en@example.com", UserID: &userEN}, "Verify your email address"},
		{"Explicit", EmailRequest{To: "zh@example.com", UserID: &userZH, Locale: English}, "Verify your email address"},
	}
	for _, tt := range tests {
		tt.req.Template, tt.req.Data = TemplateVerification, data
		id := b.queue(t, tt.req)
		before := len(srv.received())
		if _, err := b.attempt(ctx, id); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		got := srv.received()[before]
		h, _, _ := parts(t, got.data)
		subject, _ := new(mime.WordDecoder).DecodeHeader(h.Get("Subject"))
		if subject != tt.subject {
			t.Errorf("%s: subject %q, want %q", tt.name, subject, tt.subject)
		}
	}
}

func TestQueueEmailInvalid(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	for name, r := range map[string]EmailRequest{
		"to":       {To: "not an address", Template: TemplateNotification, Data: map[string]string{"title": "x"}},
		"template": {To: "a@example.com", Template: "nope"},
		"data":     {To: "a@example.com", Template: TemplateVerification, Data: map[string]string{"email": "a@example.com"}},
		"locale":   {To: "a@example.com", Template: TemplateNotification, Locale: "fr", Data: map[string]string{"title": "x"}},
	} {
		err := b.st.InTx(context.Background(), func(q *db.Queries) error {
			_, err := b.c.QueueEmail(context.Background(), q, b.now, r)
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "invalid_request") {
			t.Errorf("%s: err = %v, want invalid_request", name, err)
		}
	}
	var count int
	_ = b.st.Pool.QueryRow(context.Background(), "SELECT count(*) FROM email_deliveries").Scan(&count)
	if count != 0 {
		t.Errorf("%d deliveries stored from refused requests", count)
	}
}

// TestEmailRetrySchedule computes the bounds of the notify.email retry schedule from the
// jobs.Backoff contract (the n-th retry waits a random time in [0, min(Max, Base·2^(n-1))])
// and checks the promise: at least 8 retries, spanning 30 minutes or more in at
// least 95 % of schedules, and giving up within 90 minutes.
func TestEmailRetrySchedule(t *testing.T) {
	t.Parallel()
	k := EmailKind()
	retries := k.MaxAttempts - 1
	if retries < 8 {
		t.Fatalf("%d retries, want at least 8", retries)
	}
	ceiling := func(n int) time.Duration { return min(k.Backoff.Max, k.Backoff.Base<<(n-1)) }
	var longest time.Duration
	for n := 1; n <= retries; n++ {
		longest += ceiling(n)
	}
	mean := longest / 2
	rng := rand.New(rand.NewPCG(1, 2))
	spans := make([]time.Duration, 20000)
	for i := range spans {
		for n := 1; n <= retries; n++ {
			spans[i] += time.Duration(rng.Int64N(int64(ceiling(n)) + 1))
		}
	}
	slices.Sort(spans)
	p5 := spans[len(spans)/20]
	t.Logf("%d retries: longest %s, mean %s, 5th percentile %s, shortest of %d draws %s", retries, longest, mean, p5, len(spans), spans[0])
	if longest > 90*time.Minute || mean < 30*time.Minute || p5 < 30*time.Minute {
		t.Fatalf("schedule: longest %s (≤ 90m), mean %s and 5th percentile %s (≥ 30m)", longest, mean, p5)
	}
}

// Mailers with no SMTP detail still get a Message-ID from the delivery id.
func TestEmailLogMailer(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	id := b.queue(t, EmailRequest{To: "a@example.com", Template: TemplateNotification, Data: map[string]string{"title": "x"}})
	res, err := b.attempt(context.Background(), id)
	if err != nil || res.(EmailResult).MessageID != id.String() {
		t.Fatalf("attempt = %v, %v", res, err)
	}
}
