package main

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/prompts"
	"github.com/kilnhq/kiln/internal/retention"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/streams"
	"github.com/kilnhq/kiln/server"
	"github.com/kilnhq/kiln/worker"
)

// newJobs declares Kiln's own job kinds on the one registry (with the config's overrides)
// and builds the job service, on a stream bus of its own (with a Redis pool of its own for
// the followers' blocking reads). Every process registers every kind: an API replica
// creates jobs it never runs. The conversations service is told how to ask for a title (a
// job created with the reply that ends the first exchange). The notification center is
// told of every job's end. payments resolves the WeChat Pay and Alipay orders whose
// notification never came; the invoicer issues the invoices of ended periods.
func (a *app) newJobs(ctx context.Context, d *deps, llmDeps server.LLM, convs server.Conversations, payments *billing.ChinaPayments) (*jobs.Service, func(), error) {
	st := store.New(d.pool)
	reg := d.jobs

	keep := a.retentionDays()
	promptStore := prompts.New(st, time.Now)
	promptStore.UseRetention(keep)
	purgers := []worker.Purger{
		{Name: "feature_flag_overrides", Purge: d.flags.PurgeExpiredOverrides},
		{Name: "deleted_prompts", Purge: promptStore.PurgeDeleted},
		{Name: "finished_jobs", Purge: func(ctx context.Context) (int64, error) { return jobs.PurgeFinished(ctx, st, time.Now(), keep) }},
		{Name: "usage", Purge: retention.New(st, keep, time.Now).PurgeUsage},
		{Name: "export_archives", Purge: d.exports.PurgeExpired},
	}
	// No reply runs longer than llm.stream_timeout; the margin covers storing its end.
	purgers = append(purgers, worker.ConversationPurgers(convs.Service, convs.Replies, a.cfg.LLM.StreamTimeout+5*time.Minute)...)
	worker.RegisterHousekeeping(reg, purgers, a.log)
	if a.cfg.Conversations.TitleModel != "" {
		worker.RegisterTitles(reg, worker.Titler{
			Conversations: convs.Service, Runner: llmDeps.Runner, Usage: llmDeps.Usage, Model: a.cfg.Conversations.TitleModel,
		})
		convs.Service.TitleJob = func(ctx context.Context, q *db.Queries, org, conversation uuid.UUID) error {
			_, err := reg.Enqueue(ctx, q, time.Now(), jobs.New{Kind: worker.KindConversationTitle.Name, OrgID: &org,
				Payload: worker.TitlePayload{Org: org, Conversation: conversation}, UniqueKey: conversation.String()})
			return err
		}
	}
	// The erasure stops, resumes and cancels Stripe subscriptions on the workers that run its jobs.
	d.erasure.UseSubscriptions(a.newStripePayments(llmDeps.Billing))
	worker.RegisterResolvePaymentOrders(reg, payments)
	worker.RegisterIssueInvoices(reg, a.newInvoicer(st, llmDeps.Billing))
	worker.RegisterKeyRotation(reg, func(ctx context.Context) (string, error) {
		return rotateSigningKey(ctx, d, a.cfg.Auth.SigningKeyRotation)
	})
	registerTestKinds(reg, st)
	for name, k := range a.cfg.Jobs.Kinds {
		if err := reg.Override(name, jobs.Kind{Queue: k.Queue, MaxAttempts: k.MaxAttempts, Timeout: k.Timeout,
			Backoff: jobs.Backoff{Base: k.BackoffBase, Max: k.BackoffMax}, Unique: k.Unique}); err != nil {
			return nil, nil, err
		}
	}
	blocking, err := redisclient.Open(ctx, a.cfg.Redis.URL, a.cfg.Conversations.MaxFollowers)
	if err != nil {
		return nil, nil, err
	}
	bus := streams.New(d.rdb, redisclient.Keyspace{Env: a.cfg.Env}, streams.Config{TTL: a.cfg.Conversations.StreamTTL, Blocking: blocking})
	svc := jobs.NewService(jobs.Deps{Registry: reg, Store: st, Redis: d.rdb, Bus: bus, Finished: d.notify.JobFinished, Log: a.log, Now: time.Now,
		Tracing: a.tracerProvider()}, jobs.Config{
		Env:               a.cfg.Env,
		Concurrency:       a.cfg.Worker.Concurrency,
		PollInterval:      a.cfg.Jobs.PollInterval,
		ReconcileInterval: a.cfg.Jobs.ReconcileInterval,
		Heartbeat:         a.cfg.Jobs.Heartbeat,
		Retention:         a.retentionDays(),
	})
	return svc, func() { bus.Close(); _ = blocking.Close() }, nil
}
