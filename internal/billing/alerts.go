package billing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/notify"
	"github.com/kilnhq/kiln/internal/platform/localcache"
	"github.com/kilnhq/kiln/internal/store"
)

// AlertPercents are the levels of a limit at which an org's owners and admins are told,
// once each per period.
var AlertPercents = []int{80, 100}

// KindQuotaThreshold is the data.kind of a quota alert's notification.
const KindQuotaThreshold = "quota.threshold"

// alerter sends quota alerts: an in-app notification and an email (per each recipient's
// preferences, category billing) to every owner and admin of the org.
type alerter struct {
	st     *store.Store
	quota  *Quota
	center *notify.Center
	log    *slog.Logger
	now    func() time.Time
	wg     sync.WaitGroup
	// sent holds the alerts this replica knows were sent, so that a limit checked on
	// every request (requests_per_minute) asks neither Redis nor PostgreSQL once its
	// alert went out. An alert is sent once per period, so an entry never goes stale
	// within its period (its key).
	sent *localcache.Map[sentKey, struct{}]
}

// sentKey names one alert: an org's limit's threshold in one period.
type sentKey struct {
	org     uuid.UUID
	period  int64 // its start, Unix seconds
	limit   string
	percent int
}

// EnableAlerts makes the service send quota alerts through center. Without it settles
// claim no thresholds and changes check no thresholds.
func (s *Service) EnableAlerts(center *notify.Center, log *slog.Logger) {
	s.alerts = &alerter{st: s.st, quota: s.quota, center: center, log: log, now: s.now,
		sent: localcache.New[sentKey, struct{}](time.Hour)}
}

// WaitAlerts waits for the quota alerts being sent (at shutdown, and in tests).
func (s *Service) WaitAlerts() {
	if s.alerts != nil {
		s.alerts.wg.Wait()
	}
}

// watch is one limit of an org's plan as its alerts see it: its thresholds and what an
// alert needs to say.
type watch struct {
	a          *alerter
	counter    Counter
	plan       string
	name       string
	limit      Limit
	thresholds []Threshold
}

// newWatch returns the watch of limit name of plan for c's org and period, nil when
// alerts are off or the plan does not limit name.
func (a *alerter) newWatch(c Counter, plan Plan, name string) *watch {
	limit := plan.Limits[name]
	if a == nil || limit.Value <= 0 {
		return nil
	}
	w := &watch{a: a, counter: c, plan: plan.ID, name: name, limit: limit}
	for _, p := range AlertPercents {
		// Rounded up: the threshold is reached only once usage is at least p % of the limit.
		w.thresholds = append(w.thresholds, Threshold{Percent: p, At: (limit.Value*int64(p) + 99) / 100})
	}
	return w
}

func (w *watch) sentKey(percent int) sentKey {
	return sentKey{org: w.counter.Org, period: w.counter.Period.Start.Unix(), limit: w.name, percent: percent}
}

// refused sends the 100 % alert of the period when a use of w's limit is refused once
// usage (used, what the org had then) is past the first threshold, unless it was claimed
// already. Under block a call is refused when it could pass the limit, so usage may stop
// short of 100 %: the refusal is what tells the org it is at its limit. A refusal below
// 80 % (one use asking more than is left of a large remainder) alerts nothing.
func (w *watch) refused(ctx context.Context, used int64) {
	if w == nil || used < w.thresholds[0].At {
		return
	}
	if w.claim(ctx, 100) {
		w.claimed(ctx, used, []int{100})
	}
}

// claim claims the alert of percent for one sender (Quota.claimAlert), reporting whether
// this caller got it. Once this replica knows the alert was sent it asks Redis no more.
func (w *watch) claim(ctx context.Context, percent int) bool {
	k := w.sentKey(percent)
	if _, ok := w.a.sent.Get(k, w.a.now()); ok {
		return false
	}
	got, sent, err := w.a.quota.claimAlert(ctx, w.counter, alertField(w.name, percent))
	if err != nil {
		w.a.log.WarnContext(ctx, "claim a quota alert", "org_id", w.counter.Org, "limit", w.name, "error", err)
		return false
	}
	if sent {
		w.a.sent.Put(k, struct{}{}, w.a.now())
	}
	return got
}

// claimed sends the alerts a caller claimed, off its path, on a context its
// cancellation does not reach. A send that fails leaves its claim to lapse, and the next
// use past the lease tries again.
func (w *watch) claimed(ctx context.Context, used int64, percents []int) {
	w.a.wg.Add(1)
	go func() {
		defer w.a.wg.Done()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		for _, p := range percents {
			if err := w.a.send(ctx, w, p, used); err != nil {
				w.a.log.ErrorContext(ctx, "send a quota alert", "org_id", w.counter.Org, "limit", w.name, "percent", p, "error", err)
			}
		}
	}()
}

// reached alerts, in q's transaction (the change that brings w's limit to used), the
// thresholds used reaches whose alert was not sent this period: the alert's record and
// its notifications commit with the change and are published once it has, so a change
// that rolls back sends nothing. Concurrent changes are serialised by the caller (the
// plan limits' lock), so each sees what the last one committed.
func (w *watch) reached(ctx context.Context, q *db.Queries, used int64) error {
	if w == nil {
		return nil
	}
	now := w.a.now().UTC()
	for _, t := range w.thresholds {
		if used < t.At {
			continue
		}
		if _, ok := w.a.sent.Get(w.sentKey(t.Percent), now); ok {
			continue
		}
		notes, err := w.a.record(ctx, q, w, t.Percent, used)
		if err != nil {
			return err
		}
		for _, n := range notes {
			if err := w.a.center.PublishOnCommit(ctx, q, now, n); err != nil {
				return fmt.Errorf("quota alert: %w", err)
			}
		}
	}
	return nil
}

// send records the alert of percent for w's org and period and notifies its owners and
// admins in a transaction of its own (record). Then it marks the threshold sent in
// Redis and publishes the in-app notifications.
func (a *alerter) send(ctx context.Context, w *watch, percent int, used int64) error {
	var sent []notify.Notification
	err := a.st.InTx(ctx, func(q *db.Queries) error {
		var err error
		sent, err = a.record(ctx, q, w, percent, used)
		return err
	})
	if err != nil {
		return err
	}
	a.sent.Put(w.sentKey(percent), struct{}{}, a.now())
	if err := a.quota.alertSent(ctx, w.counter, alertField(w.name, percent)); err != nil {
		// The row is committed: a later claim finds it and sends nothing.
		a.log.WarnContext(ctx, "mark a quota alert sent", "org_id", w.counter.Org, "error", err)
	}
	for _, n := range sent {
		if err := a.center.Publish(ctx, n); err != nil {
			a.log.WarnContext(ctx, "publish a quota alert", "notification_id", n.ID, "error", err)
		}
	}
	return nil
}

// record records the alert of percent for w's org and period and notifies its owners
// and admins in q's transaction, so the row and the notifications (and their email
// jobs) commit together: the row is the alert's once-per-period claim, and a row
// already there (committed: a concurrent claim waits for the other's transaction) means
// it was sent. It returns the in-app notifications to publish once q commits.
func (a *alerter) record(ctx context.Context, q *db.Queries, w *watch, percent int, used int64) ([]notify.Notification, error) {
	now := a.now().UTC()
	_, err := q.ClaimQuotaAlert(ctx, db.ClaimQuotaAlertParams{
		OrgID: w.counter.Org, LimitName: w.name, Threshold: int32(percent), //nolint:gosec // a percent
		PeriodStart: w.counter.Period.Start, Used: used, LimitValue: w.limit.Value, Now: now,
	})
	if errors.Is(err, pgx.ErrNoRows) {
		a.sent.Put(w.sentKey(percent), struct{}{}, now)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("claim quota alert: %w", store.Translate(err))
	}
	who, err := q.ListBillingRecipients(ctx, w.counter.Org)
	if err != nil {
		return nil, fmt.Errorf("list billing recipients: %w", store.Translate(err))
	}
	var sent []notify.Notification
	for _, r := range who {
		s, err := a.center.Notify(ctx, q, now, alertNote(r.UserID, r.OrgName, w, percent, used))
		if err != nil {
			return nil, fmt.Errorf("notify %s: %w", r.UserID, err)
		}
		if s.Notification != nil {
			sent = append(sent, *s.Notification)
		}
	}
	return sent, nil
}

// limitWords says, per limit, what it counts, what "used" of it reads as, and what a
// refusal refused.
var limitWords = map[string]struct{ unit, usage, refused, blocked string }{
	LimitTokens: {"tokens", "%d of %d tokens used this period",
		"A model call was refused: it could have passed the limit.", "Past the limit, model calls are refused until the period resets."},
	LimitRequestsPerMinute: {"requests a minute", "%d of the %d requests a minute used",
		"Requests were refused: the org sent more than its plan allows in a minute.", "Requests past the limit are refused (429) until the minute's allowance comes back."},
	LimitSeats: {"seats", "The org has %d of %d seats (members and open invitations)",
		"A member or an invitation was refused: it would have passed the limit.", "Past the limit, new members and invitations are refused."},
	LimitKnowledgeBases: {"knowledge bases", "The org has %d of %d knowledge bases",
		"A knowledge base was refused: it would have passed the limit.", "Past the limit, new knowledge bases are refused."},
	LimitDocuments: {"documents", "The org has %d of %d documents",
		"A document was refused: it would have passed the limit.", "Past the limit, new documents are refused."},
	LimitStorageBytes: {"bytes of document text", "The org has %d of %d bytes of document text",
		"A document was refused: it would have passed the limit.", "Past the limit, new documents are refused."},
}

// alertNote is the notification of a quota alert to one user.
func alertNote(user uuid.UUID, orgName string, w *watch, percent int, used int64) notify.Note {
	org := w.counter.Org
	words := limitWords[w.name]
	resets := w.counter.Period.End.UTC().Format(time.RFC3339)
	title := fmt.Sprintf("%s has used %d %% of its %s limit", orgName, percent, w.name)
	if percent >= 100 {
		title = fmt.Sprintf("%s has reached its %s limit", orgName, w.name)
	}
	body := fmt.Sprintf(words.usage+" on the plan %q.", used, w.limit.Value, w.plan)
	if w.name == LimitTokens {
		body = fmt.Sprintf(words.usage+" on the plan %q; the period resets at %s.", used, w.limit.Value, w.plan, resets)
	}
	if percent >= 100 && used < w.limit.Value || w.name == LimitRequestsPerMinute && percent >= 100 {
		body = words.refused + " " + body
	}
	switch w.limit.Overage {
	case Block:
		body += " " + words.blocked
	case AllowAndBill:
		body += " Usage past the limit is billed per unit."
	case AllowAndAlert:
	}
	return notify.Note{
		UserID: user, OrgID: &org, Category: notify.CategoryBilling, Title: title, Body: body,
		Data: map[string]any{
			"kind": KindQuotaThreshold, "limit_name": w.name, "percent": percent, "used": used, "limit": w.limit.Value,
			"plan": w.plan, "resets_at": resets, "period_start": w.counter.Period.Start.UTC().Format(time.RFC3339),
		},
	}
}
