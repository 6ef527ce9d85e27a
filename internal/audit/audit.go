// Package audit writes and reads the append-only audit log: who did what, to what, from
// where. The table refuses updates and deletes.
package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

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

// Log appends events to the audit log.
type Log struct {
	st *store.Store
}

// New returns a Log over st.
func New(st *store.Store) *Log { return &Log{st: st} }

// Record appends e. Callers record after the action succeeded (or, for failed logins,
// after it failed); a failure to record is returned, not hidden.
func (l *Log) Record(ctx context.Context, e Event) error { return RecordIn(ctx, l.st.Queries, e) }

// RecordIn appends e through q: inside q's transaction, the event commits or rolls back
// with the change it records.
func RecordIn(ctx context.Context, q *db.Queries, e Event) error {
	id, err := uuid.NewV7()
	if err != nil {
		return fmt.Errorf("audit id: %w", err)
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
		Action: e.Action, TargetType: e.TargetType, TargetID: e.TargetID, Ip: e.IP, UserAgent: e.UserAgent, Data: data,
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
		Action:   pgtype.Text{String: action, Valid: action != ""},
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
