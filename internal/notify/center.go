package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/store"
)

// Category is what a notification is about; preferences are set per category.
type Category string

// The categories. Security notifications (sign-ins, password and key changes) cannot be
// turned off.
const (
	CategorySecurity Category = "security"
	CategoryOrg      Category = "org"
	CategoryJobs     Category = "jobs"
	CategoryBilling  Category = "billing"
	CategoryProduct  Category = "product"
	// CategoryPrivacy says a data export is ready, with its download link.
	CategoryPrivacy Category = "privacy"
)

// Channel is a way a notification reaches its user.
type Channel string

// The channels.
const (
	InApp Channel = "in_app"
	Email Channel = "email"
)

// categoryInfo is a category's defaults and whether the user may turn it off.
type categoryInfo struct {
	locked       bool
	inApp, email bool
}

// categories are the known categories with their defaults (a user's choice overrides
// them, except for locked ones).
var categories = map[Category]categoryInfo{
	CategorySecurity: {locked: true, inApp: true, email: true},
	CategoryOrg:      {inApp: true, email: true},
	CategoryJobs:     {inApp: true, email: false},
	CategoryBilling:  {inApp: true, email: true},
	CategoryProduct:  {inApp: true, email: false},
	CategoryPrivacy:  {inApp: true, email: true},
}

// Categories lists the known categories, sorted.
func Categories() []Category {
	out := make([]Category, 0, len(categories))
	for c := range categories {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// Limits of a notification's fields.
const (
	MaxTitle = 200
	MaxBody  = 4000
	MaxLink  = 2000
)

// Notification is one notification of one user.
type Notification struct {
	ID        uuid.UUID      `json:"id"`
	OrgID     *uuid.UUID     `json:"org_id,omitempty"`
	UserID    uuid.UUID      `json:"user_id"`
	Category  Category       `json:"category"`
	Title     string         `json:"title"`
	Body      string         `json:"body"`
	Link      string         `json:"link,omitempty"`
	Data      map[string]any `json:"data"`
	ReadAt    *time.Time     `json:"read_at,omitempty"`
	CreatedAt time.Time      `json:"created_at"`
}

// Note is a notification to send to one user.
type Note struct {
	UserID   uuid.UUID
	OrgID    *uuid.UUID // the org it concerns, if any
	Category Category
	Title    string
	Body     string
	Link     string
	Data     map[string]any
}

// Sent is what Notify did: the in-app notification and the email delivery, each nil when
// the user's preferences turned that channel off.
type Sent struct {
	Notification *Notification
	Email        *uuid.UUID
}

// Config configures a Center.
type Config struct {
	// LongJob is how long a job must have taken for its creator to be told of its end.
	LongJob time.Duration
}

// Deps is what a Center uses.
type Deps struct {
	Store    *store.Store
	Jobs     *jobs.Registry
	Mailer   Mailer
	Redis    redis.UniversalClient
	Keyspace redisclient.Keyspace
	Log      *slog.Logger
	Now      func() time.Time
}

// Center is the notification center: it stores notifications in the caller's transaction,
// delivers them per the user's preferences (in-app, email), publishes new ones live, and
// sends emails as jobs.
type Center struct {
	cfg    Config
	st     *store.Store
	jobs   *jobs.Registry
	mailer Mailer
	rdb    redis.UniversalClient
	ks     redisclient.Keyspace
	log    *slog.Logger
	now    func() time.Time
	hub    *hub
}

// New builds a Center and registers its job kinds (notify.email, notify.publish) on
// d.Jobs.
func New(cfg Config, d Deps) *Center {
	c := &Center{cfg: cfg, st: d.Store, jobs: d.Jobs, mailer: d.Mailer, rdb: d.Redis, ks: d.Keyspace, log: d.Log, now: d.Now}
	c.hub = newHub(d.Redis, d.Log)
	jobs.Register(d.Jobs, EmailKind(), c.deliverEmail)
	jobs.Register(d.Jobs, jobs.Kind{Name: KindPublish, MaxAttempts: 3, Backoff: jobs.Backoff{Base: time.Second, Max: 10 * time.Second}, Timeout: 30 * time.Second}, c.publishJob)
	return c
}

// Close stops the live subscriptions of this replica.
func (c *Center) Close() error { return c.hub.close() }

// checkNote validates a note: the category is known, the title present and short, the
// text free of NUL bytes. Errors are invalid_request naming the field.
func checkNote(n Note) error {
	var bad []errs.FieldError
	if _, ok := categories[n.Category]; !ok {
		bad = append(bad, errs.FieldError{Pointer: "/category", Message: "is not a notification category"})
	}
	for _, f := range []struct {
		ptr, v   string
		max      int
		required bool
	}{{"/title", n.Title, MaxTitle, true}, {"/body", n.Body, MaxBody, false}, {"/link", n.Link, MaxLink, false}} {
		switch {
		case f.required && strings.TrimSpace(f.v) == "":
			bad = append(bad, errs.FieldError{Pointer: f.ptr, Message: "is required"})
		case utf8.RuneCountInString(f.v) > f.max:
			bad = append(bad, errs.FieldError{Pointer: f.ptr, Message: fmt.Sprintf("must be at most %d characters", f.max)})
		case !utf8.ValidString(f.v) || strings.ContainsRune(f.v, 0):
			bad = append(bad, errs.FieldError{Pointer: f.ptr, Message: "must be UTF-8 text without NUL characters"})
		}
	}
	return errs.InvalidFields("invalid notification", bad)
}

// Notify sends n to its user inside q's transaction, per their preferences: an in-app
// notification, an email (a delivery and its job), both or neither. Nothing is sent if
// the transaction rolls back. The caller publishes the in-app notification once the
// transaction committed (Publish); Send does both. Errors: invalid_request for a bad
// note, not_found for an unknown user.
func (c *Center) Notify(ctx context.Context, q *db.Queries, now time.Time, n Note) (Sent, error) {
	if err := checkNote(n); err != nil {
		return Sent{}, err
	}
	who, err := q.GetRecipient(ctx, db.GetRecipientParams{UserID: n.UserID, OrgID: store.NullUUID(n.OrgID)})
	if err != nil {
		return Sent{}, fmt.Errorf("notify: find user: %w", store.Translate(err))
	}
	prefs, err := preferencesOf(ctx, q, n.UserID)
	if err != nil {
		return Sent{}, err
	}
	var sent Sent
	if prefs.enabled(n.Category, InApp) {
		data := n.Data
		if data == nil {
			data = map[string]any{}
		}
		raw, err := json.Marshal(data)
		if err != nil {
			return Sent{}, fmt.Errorf("notify: encode data: %w", err)
		}
		row, err := q.CreateNotification(ctx, db.CreateNotificationParams{
			ID: uuid.Must(uuid.NewV7()), OrgID: store.NullUUID(n.OrgID), UserID: n.UserID, Category: string(n.Category),
			Title: n.Title, Body: n.Body, Link: store.Text(n.Link), Data: raw, CreatedAt: now,
		})
		if err != nil {
			return Sent{}, fmt.Errorf("notify: create notification: %w", store.Translate(err))
		}
		note := toNotification(row)
		sent.Notification = &note
	}
	if prefs.enabled(n.Category, Email) && who.DisabledAt == nil {
		id, err := c.QueueEmail(ctx, q, now, EmailRequest{
			To: who.Email, UserID: &n.UserID, OrgID: n.OrgID, Template: TemplateNotification,
			Data: map[string]string{"title": n.Title, "body": n.Body, "link": n.Link},
		})
		if err != nil {
			return Sent{}, err
		}
		sent.Email = &id
	}
	return sent, nil
}

// Send notifies in a transaction of its own and publishes the notification once it
// committed. Errors as Notify.
func (c *Center) Send(ctx context.Context, n Note) (Sent, error) {
	var sent Sent
	err := c.st.InTx(ctx, func(q *db.Queries) error {
		var err error
		sent, err = c.Notify(ctx, q, c.now(), n)
		return err
	})
	if err != nil {
		return Sent{}, err
	}
	if sent.Notification != nil {
		if err := c.Publish(ctx, *sent.Notification); err != nil {
			// Stored and committed: the user sees it on their next read; only the live push failed.
			c.log.WarnContext(ctx, "publish a notification", "notification_id", sent.Notification.ID, "error", err)
		}
	}
	return sent, nil
}

// ListParams selects a page of a user's notifications.
type ListParams struct {
	Limit  int
	After  *uuid.UUID // the cursor: the last id of the previous page
	Unread bool       // only those not read yet
}

// List returns a user's notifications, newest first.
func (c *Center) List(ctx context.Context, user uuid.UUID, p ListParams) ([]Notification, error) {
	var rows []db.Notification
	var err error
	limit := int32(min(max(p.Limit, 1), 1000)) //nolint:gosec // bounded
	if p.Unread {
		rows, err = c.st.ListUnreadNotifications(ctx, db.ListUnreadNotificationsParams{UserID: user, After: store.NullUUID(p.After), MaxRows: limit})
	} else {
		rows, err = c.st.ListNotifications(ctx, db.ListNotificationsParams{UserID: user, After: store.NullUUID(p.After), MaxRows: limit})
	}
	if err != nil {
		return nil, fmt.Errorf("list notifications: %w", err)
	}
	out := make([]Notification, len(rows))
	for i, r := range rows {
		out[i] = toNotification(r)
	}
	return out, nil
}

// UnreadCount counts a user's unread notifications.
func (c *Center) UnreadCount(ctx context.Context, user uuid.UUID) (int64, error) {
	n, err := c.st.CountUnreadNotifications(ctx, user)
	if err != nil {
		return 0, fmt.Errorf("count unread notifications: %w", err)
	}
	return n, nil
}

// MarkRead marks one of the user's notifications read (again: it keeps its first
// read_at). Another user's notification is not_found.
func (c *Center) MarkRead(ctx context.Context, user, id uuid.UUID) (Notification, error) {
	row, err := c.st.MarkNotificationRead(ctx, db.MarkNotificationReadParams{ID: id, UserID: user, Now: new(c.now())})
	if err != nil {
		if errs.CodeOf(store.Translate(err)) == errs.NotFound {
			return Notification{}, errs.E(errs.NotFound, "No notification %s.", id)
		}
		return Notification{}, fmt.Errorf("mark notification read: %w", err)
	}
	return toNotification(row), nil
}

// MarkAllRead marks every unread notification of the user read and returns how many.
func (c *Center) MarkAllRead(ctx context.Context, user uuid.UUID) (int64, error) {
	n, err := c.st.MarkAllNotificationsRead(ctx, db.MarkAllNotificationsReadParams{UserID: user, Now: new(c.now())})
	if err != nil {
		return 0, fmt.Errorf("mark all notifications read: %w", err)
	}
	return n, nil
}

// toNotification converts a row.
func toNotification(r db.Notification) Notification {
	n := Notification{
		ID: r.ID, OrgID: store.UUIDPtr(r.OrgID), UserID: r.UserID, Category: Category(r.Category),
		Title: r.Title, Body: r.Body, Link: r.Link.String, ReadAt: r.ReadAt, CreatedAt: r.CreatedAt,
	}
	if err := json.Unmarshal(r.Data, &n.Data); err != nil || n.Data == nil {
		n.Data = map[string]any{}
	}
	return n
}
