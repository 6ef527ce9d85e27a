// Package audit writes and reads the append-only audit log: who did what, to what, from
// where. The table refuses updates and deletes.
//
// The domain package that makes a change writes its event (Write) in the transaction of
// the change: a change rolled back leaves no event, a change committed always has one. A
// failed attempt (a wrong password, say) changes nothing, so its event is written alone
// (Log.Record). Both run on a context that the caller's cancellation does not reach
// (Detach): a client that hangs up does not erase the record of what it did.
package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/store"
)

// Actor types.
const (
	ActorUser      = "user"
	ActorAPIKey    = "api_key"
	ActorSystem    = "system"
	ActorAnonymous = "anonymous"
)

// WriteTimeout bounds an audit write, and the transaction it is part of, once the
// caller's cancellation no longer reaches it.
const WriteTimeout = 10 * time.Second

// Actor is who acts and from where, as the edge saw the request: the server fills it from
// the caller and the connection and hands it to the domain, which writes it into the
// events of the changes it makes.
type Actor struct {
	Type      string     // ActorUser, ActorAPIKey, ActorSystem or ActorAnonymous ("" is anonymous)
	ID        *uuid.UUID // the user or API key; nil when anonymous or the system
	IP        string
	UserAgent string
}

// As returns the actor acting as the user with id, from the same place: the user who has
// just signed up or in is the actor of that event, whoever the request was from before.
func (a Actor) As(userID uuid.UUID) Actor {
	a.Type, a.ID = ActorUser, &userID
	return a
}

// UserID is the acting user, or nil when the actor is not a user (an API key, say).
func (a Actor) UserID() *uuid.UUID {
	if a.Type != ActorUser {
		return nil
	}
	return a.ID
}

// Detach returns ctx without its cancellation (its values kept), bounded by WriteTimeout:
// the context for a transaction that writes an audit event, so that once it has begun it
// commits the change with its event, or neither, whether or not the client is still there.
func Detach(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), WriteTimeout)
}

// Event is one audit record.
type Event struct {
	ID         uuid.UUID
	OrgID      *uuid.UUID
	ActorType  string
	ActorID    *uuid.UUID
	Action     string // e.g. auth.login, api_key.create
	TargetType string
	TargetID   string
	IP         string
	UserAgent  string
	Data       map[string]any
	CreatedAt  time.Time
}

// Log appends events that record no change and reads the log.
type Log struct {
	st *store.Store
}

// New returns a Log over st.
func New(st *store.Store) *Log { return &Log{st: st} }

// Record appends e by actor on its own, for an attempt that changed nothing (a failed
// login, a refused password change). The write is detached from ctx's cancellation; a
// failure to record is returned, not hidden.
func (l *Log) Record(ctx context.Context, by Actor, e Event) error {
	ctx, cancel := Detach(ctx)
	defer cancel()
	return Write(ctx, l.st.Queries, by, e)
}

// Write appends e by actor through q, the transaction of the change e records. The event's
// own ActorType and ActorID, when set, name the actor instead (a sign-up's new user);
// by's address and user agent are kept either way.
func Write(ctx context.Context, q *db.Queries, by Actor, e Event) error {
	id, err := uuid.NewV7()
	if err != nil {
		return fmt.Errorf("audit id: %w", err)
	}
	if e.ActorType == "" {
		e.ActorType, e.ActorID = by.Type, by.ID
		if e.ActorType == "" {
			e.ActorType, e.ActorID = ActorAnonymous, nil
		}
	}
	if e.Data == nil {
		e.Data = map[string]any{}
	}
	data, err := json.Marshal(e.Data)
	if err != nil {
		return fmt.Errorf("encode audit data: %w", err)
	}
	err = q.InsertAuditEvent(ctx, db.InsertAuditEventParams{
		ID: id, OrgID: store.NullUUID(e.OrgID), ActorType: e.ActorType, ActorID: store.NullUUID(e.ActorID),
		Action: e.Action, TargetType: e.TargetType, TargetID: e.TargetID, Ip: by.IP, UserAgent: by.UserAgent, Data: data,
	})
	if err != nil {
		return fmt.Errorf("record audit event %s: %w", e.Action, store.Translate(err))
	}
	return nil
}

// List returns an org's events, newest first, before the event id before (if any), only
// those with action (if not empty).
func (l *Log) List(ctx context.Context, orgID uuid.UUID, limit int, before *uuid.UUID, action string) ([]Event, error) {
	rows, err := l.st.ListAuditEvents(ctx, db.ListAuditEventsParams{
		OrgID:    uuid.NullUUID{UUID: orgID, Valid: true},
		Before:   store.NullUUID(before),
		Action:   store.Text(action),
		RowLimit: int32(limit), //nolint:gosec // limit is bounded by the API (1–100)
	})
	if err != nil {
		return nil, fmt.Errorf("list audit events: %w", store.Translate(err))
	}
	events := make([]Event, len(rows))
	for i, r := range rows {
		if events[i], err = EventFromRow(r); err != nil {
			return nil, err
		}
	}
	return events, nil
}

// EventFromRow converts a stored audit row.
func EventFromRow(r db.AuditEvent) (Event, error) {
	e := Event{
		ID: r.ID, OrgID: store.UUIDPtr(r.OrgID), ActorType: r.ActorType, ActorID: store.UUIDPtr(r.ActorID), Action: r.Action,
		TargetType: r.TargetType, TargetID: r.TargetID, IP: r.Ip, UserAgent: r.UserAgent, CreatedAt: r.CreatedAt,
	}
	if err := json.Unmarshal(r.Data, &e.Data); err != nil {
		return Event{}, fmt.Errorf("decode audit data of %s: %w", r.ID, err)
	}
	return e, nil
}
