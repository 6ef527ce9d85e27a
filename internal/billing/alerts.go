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
}

// EnableAlerts makes the service send quota alerts through center. Without it settles
// claim no thresholds.
func (s *Service) EnableAlerts(center *notify.Center, log *slog.Logger) {
	s.alerts = &alerter{st: s.st, quota: s.quota, center: center, log: log, now: s.now}
}

// WaitAlerts waits for the quota alerts being sent (at shutdown, and in tests).
func (s *Service) WaitAlerts() {
	if s.alerts != nil {
		s.alerts.wg.Wait()
	}
}

// watch is what a hold of a limited org watches: the limit's thresholds and what an
// alert needs to say.
type watch struct {
	a          *alerter
	counter    Counter
	name       string
	limit      Limit
	thresholds []Threshold
}

// newWatch returns the watch of a hold on c under limit, nil when alerts are off or the
// limit is empty.
func (a *alerter) newWatch(c Counter, name string, limit Limit) *watch {
	if a == nil || limit.Value <= 0 {
		return nil
	}
	w := &watch{a: a, counter: c, name: name, limit: limit}
	for _, p := range AlertPercents {
		// Rounded up: the threshold is reached only once usage is at least p % of the limit.
		w.thresholds = append(w.thresholds, Threshold{Percent: p, Tokens: (limit.Value*int64(p) + 99) / 100})
	}
	return w
}

// refused sends the 100 % alert of c's period when a call is refused under limit once
// usage (used, the tokens spent then) is past the first threshold, unless it was claimed
// already. Under block a call is refused when it could pass the limit, so usage may stop
// short of 100 %: the refusal is what tells the org it is at its limit. A refusal below
// 80 % (one call asking more than is left of a large remainder) alerts nothing.
func (a *alerter) refused(ctx context.Context, c Counter, limit Limit, used int64) {
	w := a.newWatch(c, LimitTokens, limit)
	if w == nil || used < w.thresholds[0].Tokens {
		return
	}
	ok, err := a.quota.claimAlert(ctx, c, 100)
	if err != nil {
		a.log.WarnContext(ctx, "claim the quota alert of a refused call", "org_id", c.Org, "error", err)
		return
	}
	if ok {
		w.claimed(ctx, used, []int{100})
	}
}

// claimed sends the alerts a settle claimed, off the model call's path, on a context its
// caller's cancellation does not reach. A send that fails leaves its claim to lapse, and
// the next settle past the lease tries again.
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

// send records the alert of percent for w's org and period and notifies its owners and
// admins in the same transaction, so the row and the notifications (and their email jobs)
// commit together; a row already there means it was sent. Then it marks the threshold
// sent in Redis and publishes the in-app notifications.
func (a *alerter) send(ctx context.Context, w *watch, percent int, used int64) error {
	now := a.now().UTC()
	var sent []notify.Notification
	err := a.st.InTx(ctx, func(q *db.Queries) error {
		_, err := q.ClaimQuotaAlert(ctx, db.ClaimQuotaAlertParams{
			OrgID: w.counter.Org, LimitName: w.name, Threshold: int32(percent), //nolint:gosec // a percent
			PeriodStart: w.counter.Period.Start, Used: used, LimitValue: w.limit.Value, Now: now,
		})
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("claim quota alert: %w", store.Translate(err))
		}
		who, err := q.ListBillingRecipients(ctx, w.counter.Org)
		if err != nil {
			return fmt.Errorf("list billing recipients: %w", store.Translate(err))
		}
		for _, r := range who {
			org := w.counter.Org
			s, err := a.center.Notify(ctx, q, now, alertNote(r.UserID, org, r.OrgName, w, percent, used))
			if err != nil {
				return fmt.Errorf("notify %s: %w", r.UserID, err)
			}
			if s.Notification != nil {
				sent = append(sent, *s.Notification)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := a.quota.alertSent(ctx, w.counter, percent); err != nil {
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

// alertNote is the notification of a quota alert to one user.
func alertNote(user, org uuid.UUID, orgName string, w *watch, percent int, used int64) notify.Note {
	resets := w.counter.Period.End.UTC().Format(time.RFC3339)
	title := fmt.Sprintf("%s has used %d %% of its %s limit", orgName, percent, w.name)
	if percent >= 100 {
		title = fmt.Sprintf("%s has reached its %s limit", orgName, w.name)
	}
	body := fmt.Sprintf("%d of %d %s used this period; the period resets at %s.", used, w.limit.Value, w.name, resets)
	if percent >= 100 && used < w.limit.Value {
		body = "A model call was refused: it could have passed the limit. " + body
	}
	switch w.limit.Overage {
	case Block:
		body += " Past the limit, model calls are refused until then."
	case AllowAndBill:
		body += " Usage past the limit is billed per unit."
	case AllowAndAlert:
	}
	return notify.Note{
		UserID: user, OrgID: &org, Category: notify.CategoryBilling, Title: title, Body: body,
		Data: map[string]any{
			"kind": KindQuotaThreshold, "limit_name": w.name, "percent": percent, "used": used,
			"limit": w.limit.Value, "resets_at": resets, "period_start": w.counter.Period.Start.UTC().Format(time.RFC3339),
		},
	}
}
