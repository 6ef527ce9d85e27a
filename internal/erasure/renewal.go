package erasure

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
)

// Subscriptions stops, resumes and ends an org's paid subscription at its payment provider
// (billing.StripePayments); an org without one there is nothing to do.
type Subscriptions interface {
	CancelSubscriptionAtPeriodEnd(ctx context.Context, org uuid.UUID) error
	ResumeSubscription(ctx context.Context, org uuid.UUID) error
	CancelSubscriptionNow(ctx context.Context, org uuid.UUID) error
}

// UseSubscriptions sets the payment provider whose subscriptions a deletion stops renewing
// (a restore resumes them) and an erasure cancels. Unset: subscriptions are left alone.
func (s *Service) UseSubscriptions(subs Subscriptions) { s.subs = subs }

// KindRenewal stops or resumes the renewal of an org's subscription at its payment
// provider as the deletion state says when the job runs, so that a deletion and a restore
// in quick succession end right in whatever order their jobs run. Created in the
// transaction of the deletion or restore; a provider's failure is retried.
var KindRenewal = jobs.Kind{Name: "privacy.subscription_renewal", MaxAttempts: 10,
	Backoff: jobs.Backoff{Base: 30 * time.Second, Max: time.Hour}}

// RenewalPayload is the payload of KindRenewal.
type RenewalPayload struct {
	Org uuid.UUID `json:"org_id"`
	// User is the account the org goes with (its deletion decides), nil for an org's own.
	User *uuid.UUID `json:"user_id,omitempty"`
}

// RenewalResult is what a KindRenewal job reports.
type RenewalResult struct {
	Renews bool `json:"renews"`
}

// renewals queues the KindRenewal jobs of orgs (going with user's account, or deleted or
// restored themselves when user is nil) inside q's transaction.
func (s *Service) renewals(ctx context.Context, q *db.Queries, now time.Time, orgs []uuid.UUID, user *uuid.UUID) error {
	if s.subs == nil {
		return nil
	}
	for _, org := range orgs {
		if _, err := s.d.Jobs.Enqueue(ctx, q, now, jobs.New{Kind: KindRenewal.Name, OrgID: &org,
			Payload: RenewalPayload{Org: org, User: user}}); err != nil {
			return fmt.Errorf("queue the subscription's renewal: %w", err)
		}
	}
	return nil
}

// renew is KindRenewal's handler.
func (s *Service) renew(ctx context.Context, _ *jobs.Run, p RenewalPayload) (any, error) {
	if s.subs == nil {
		return nil, nil
	}
	pending, err := s.deletionPending(ctx, p)
	if err != nil {
		return nil, err
	}
	if pending {
		if err := s.subs.CancelSubscriptionAtPeriodEnd(ctx, p.Org); err != nil {
			return nil, fmt.Errorf("stop the renewal of org %s's subscription at its payment provider: %w", p.Org, err)
		}
	} else if err := s.subs.ResumeSubscription(ctx, p.Org); err != nil {
		return nil, fmt.Errorf("resume the renewal of org %s's subscription at its payment provider: %w", p.Org, err)
	}
	return RenewalResult{Renews: !pending}, nil
}

// deletionPending reports whether the deletion that decides p's org is pending (or done).
func (s *Service) deletionPending(ctx context.Context, p RenewalPayload) (bool, error) {
	if p.User != nil {
		u, err := s.d.Store.GetUser(ctx, *p.User)
		if errs.CodeOf(store.Translate(err)) == errs.NotFound {
			return true, nil // erased
		}
		if err != nil {
			return false, fmt.Errorf("read user: %w", err)
		}
		return u.EraseAt != nil, nil
	}
	st, err := s.d.Store.OrgDeletionState(ctx, p.Org)
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read org deletion state: %w", err)
	}
	return st.EraseAt != nil || st.ErasedAt != nil, nil
}

// cancelSubscriptions ends at once the subscriptions of the orgs about to be erased, before
// any row goes: a provider's failure fails the attempt, retried with every row still there.
func (s *Service) cancelSubscriptions(ctx context.Context, orgs []uuid.UUID) error {
	if s.subs == nil {
		return nil
	}
	for _, org := range orgs {
		if err := s.subs.CancelSubscriptionNow(ctx, org); err != nil {
			s.d.Log.WarnContext(ctx, "cancel an erased org's subscription at its payment provider; the erase job retries", "org_id", org, "error", err)
			return fmt.Errorf("cancel org %s's subscription at its payment provider: %w", org, err)
		}
	}
	return nil
}
