package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/jobs"
)

// JobFinished is the jobs.Finished hook, run inside the transaction that ends a job. It
// marks the delivery of a notify.email job that failed for good as failed, and tells the
// creator of a job that took at least Config.LongJob (from its creation to its end) that
// it succeeded or failed (category jobs, per their preferences). The notification is
// published by a notify.publish job, which runs once that transaction has committed.
func (c *Center) JobFinished(ctx context.Context, q *db.Queries, j jobs.Job) error {
	now := c.now()
	if j.Kind == KindEmail && j.State == jobs.Failed {
		// An undecodable payload never had a delivery to fail.
		if p, ok := emailPayloadOf(j.Payload); ok {
			err := q.FailEmailDelivery(ctx, db.FailEmailDeliveryParams{ID: p.DeliveryID, LastError: truncate(j.LastError, 2000), Now: now})
			if err != nil {
				return fmt.Errorf("fail email delivery %s: %w", p.DeliveryID, err)
			}
		}
		return nil
	}
	if j.CreatedBy == nil || (j.State != jobs.Succeeded && j.State != jobs.Failed) {
		return nil
	}
	end := now
	if j.FinishedAt != nil {
		end = *j.FinishedAt
	}
	if end.Sub(j.CreatedAt) < c.cfg.LongJob {
		return nil
	}
	n := Note{
		UserID: *j.CreatedBy, OrgID: j.OrgID, Category: CategoryJobs,
		Title: fmt.Sprintf("Job %s succeeded", j.Kind),
		Body:  fmt.Sprintf("It ran for %s.", end.Sub(j.CreatedAt).Round(time.Second)),
		Data:  map[string]any{"job_id": j.ID.String(), "kind": j.Kind, "state": string(j.State)},
	}
	if j.State == jobs.Failed {
		n.Title = fmt.Sprintf("Job %s failed", j.Kind)
		n.Body = truncate(fmt.Sprintf("It failed after %d attempts: %s", j.Attempts, j.LastError), MaxBody)
	}
	sent, err := c.Notify(ctx, q, now, n)
	if err != nil {
		return fmt.Errorf("notify the end of job %s: %w", j.ID, err)
	}
	if sent.Notification == nil {
		return nil
	}
	if err := c.PublishOnCommit(ctx, q, now, *sent.Notification); err != nil {
		return fmt.Errorf("notify the end of job %s: %w", j.ID, err)
	}
	return nil
}

// PublishOnCommit publishes n, created in q's transaction, once that transaction has
// committed: through a notify.publish job enqueued in it, for a caller that cannot see
// the commit. Nothing is published if it rolls back.
func (c *Center) PublishOnCommit(ctx context.Context, q *db.Queries, now time.Time, n Notification) error {
	_, err := c.jobs.Enqueue(ctx, q, now, jobs.New{Kind: KindPublish, OrgID: n.OrgID,
		Payload: PublishPayload{NotificationID: n.ID, UserID: n.UserID}})
	if err != nil {
		return fmt.Errorf("publish notification %s on commit: %w", n.ID, err)
	}
	return nil
}

// The hook has the jobs runtime's type.
var _ jobs.Finished = (*Center)(nil).JobFinished

func emailPayloadOf(raw []byte) (EmailPayload, bool) {
	var p EmailPayload
	return p, json.Unmarshal(raw, &p) == nil
}
