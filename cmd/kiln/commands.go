package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/kilnhq/kiln/gen/api"
	"github.com/kilnhq/kiln/internal/admin"
	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/auth/apikey"
	"github.com/kilnhq/kiln/internal/auth/members"
	"github.com/kilnhq/kiln/internal/auth/oauth"
	"github.com/kilnhq/kiln/internal/auth/token"
	"github.com/kilnhq/kiln/internal/conversations"
	"github.com/kilnhq/kiln/internal/erasure"
	"github.com/kilnhq/kiln/internal/exports"
	"github.com/kilnhq/kiln/internal/flags"
	"github.com/kilnhq/kiln/internal/idempotency"
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/notify"
	"github.com/kilnhq/kiln/internal/platform/config"
	"github.com/kilnhq/kiln/internal/platform/health"
	"github.com/kilnhq/kiln/internal/platform/logging"
	"github.com/kilnhq/kiln/internal/platform/metrics"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/platform/secrets"
	"github.com/kilnhq/kiln/internal/platform/tracing"
	"github.com/kilnhq/kiln/internal/platform/version"
	"github.com/kilnhq/kiln/internal/prompts"
	"github.com/kilnhq/kiln/internal/replies"
	"github.com/kilnhq/kiln/internal/responses"
	"github.com/kilnhq/kiln/internal/retention"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/streams"
	"github.com/kilnhq/kiln/server"
	"github.com/kilnhq/kiln/worker"
)

// app is what every command shares: the loaded configuration and the logger.
type app struct {
	stdout  io.Writer
	environ []string
	cfgPath string
	cfg     config.Config
	log     *slog.Logger
	// tracer exports spans; nil when tracing is off (set by startTracing).
	tracer *tracing.Provider
}

func newRootCmd(stdout io.Writer, environ []string) *cobra.Command {
	a := &app{stdout: stdout, environ: environ}
	root := &cobra.Command{
		Use:           "kiln",
		Short:         "Kiln: an API-only backend for AI products",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Name() == "version" {
				return nil
			}
			if a.cfgPath == "" {
				a.cfgPath = lookupEnv(environ, "KILN_CONFIG")
			}
			cfg, err := config.Load(a.cfgPath, environ)
			if err != nil {
				return err
			}
			a.cfg = cfg
			a.log = logging.New(stdout, cfg.Log.Level)
			return nil
		},
	}
	root.PersistentFlags().StringVar(&a.cfgPath, "config", "", "YAML config file (default $KILN_CONFIG)")
	root.AddCommand(a.serveCmd(), a.workerCmd(), a.migrateCmd(), a.configCmd(), a.keysCmd(), a.adminCmd(), a.quickstartCmd(), a.llmCmd(), a.ragCmd(), a.versionCmd(), a.seedCmd(), a.genCmd())
	return root
}

func lookupEnv(environ []string, name string) string {
	for _, kv := range environ {
		if k, v, _ := strings.Cut(kv, "="); k == name {
			return v
		}
	}
	return ""
}

// deps are the connections and services a long-running command shares.
type deps struct {
	pool     *pgxpool.Pool
	rdb      redis.UniversalClient
	keyring  *secrets.Keyring
	flags    *flags.Evaluator
	identity server.Identity
	// jobs is the one registry of job kinds; every domain registers its kinds on it.
	jobs *jobs.Registry
	// notify is the notification center; its JobFinished is the jobs runtime's Finished hook.
	notify *notify.Center
	// exports builds and serves the privacy exports (its job kind is on jobs).
	exports *exports.Service
	// erasure deletes accounts and orgs after their grace period (its job kind is on jobs).
	erasure *erasure.Service
}

func (a *app) open(ctx context.Context) (*deps, func(), error) {
	var dbOpts []store.Option
	if a.tracer != nil {
		dbOpts = append(dbOpts, store.WithTracing(a.tracer))
	}
	pool, err := store.Open(ctx, a.cfg.Database.URL, a.cfg.Database.MaxConns, dbOpts...)
	if err != nil {
		return nil, nil, err
	}
	rdb, err := redisclient.Open(ctx, a.cfg.Redis.URL, 0)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	closeAll := func() { _ = rdb.Close(); pool.Close() }
	if a.tracer != nil {
		if err := redisclient.Trace(rdb, a.tracer); err != nil {
			closeAll()
			return nil, nil, err
		}
	}
	masterKeys := a.cfg.Secrets.MasterKeys
	if masterKeys == "" {
		a.log.Warn("secrets.master_keys is not set: signing keys and org provider keys are sealed with the public development key (never do this in production)")
		masterKeys = secrets.DevMasterKeys
	}
	keyring, err := secrets.ParseKeyring(masterKeys)
	if err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("secrets.master_keys: %w", err)
	}
	identity, err := a.newIdentity(store.New(pool), rdb, keyring)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	ks := redisclient.Keyspace{Env: a.cfg.Env}
	evaluator := flags.New(store.New(pool), rdb, ks, a.cfg.Flags.Defaults, a.cfg.Flags.CacheTTL, a.log, time.Now)
	registry := jobs.NewRegistry()
	center := notify.New(notify.Config{LongJob: a.cfg.Notifications.LongJob}, notify.Deps{
		Store: store.New(pool), Jobs: registry, Mailer: a.newMailer(), Redis: rdb, Keyspace: ks, Log: a.log, Now: time.Now,
	})
	// The identity emails are queued on the center in the transaction of their token.
	identity.Accounts.UseEmails(center, a.cfg.Mail.LinkBase)
	identity.Members.UseEmails(center, a.cfg.Mail.LinkBase)
	identity.Accounts.UseJobs(registry)
	eraser := erasure.New(erasure.Config{Grace: a.cfg.Privacy.EraseGrace}, erasure.Deps{
		Store: store.New(pool), Jobs: registry, Redis: rdb, Keyspace: ks, Passwords: identity.Accounts,
		Idempotency: idempotency.New(rdb, ks, idempotency.Config{Sealer: keyring}), Log: a.log, Now: time.Now,
	})
	eraser.NotifyRevoked(identity.Tokens.RevokeSessions)
	eraser.NotifyKeysChanged(identity.Keys.ForgetAll)
	closeAll = func() { _ = center.Close(); _ = rdb.Close(); pool.Close() }
	exp := exports.New(exports.Config{LinkTTL: a.cfg.Privacy.ExportLinkTTL, MaxBytes: a.cfg.Privacy.ExportMaxBytes, PublicURL: a.cfg.Privacy.PublicURL},
		exports.Deps{Store: store.New(pool), Jobs: registry, Keyring: keyring, Notify: center, Log: a.log, Now: time.Now})
	return &deps{pool: pool, rdb: rdb, keyring: keyring, flags: evaluator, identity: identity, jobs: registry, notify: center, exports: exp, erasure: eraser}, closeAll, nil
}

// newIdentity builds the identity services from the configuration.
func (a *app) newIdentity(st *store.Store, rdb redis.UniversalClient, keyring *secrets.Keyring) (server.Identity, error) {
	ks := redisclient.Keyspace{Env: a.cfg.Env}
	auth := a.cfg.Auth
	accounts := a.newAccounts(st, a.log)
	tokens := token.New(st, keyring, rdb, ks, token.Config{Issuer: auth.Issuer, Audience: auth.Audience, AccessTTL: auth.AccessTokenTTL}, a.log, time.Now)
	accounts.NotifyRevoked(tokens.RevokeSessions)
	providers := make([]oauth.ProviderConfig, len(auth.OAuth.Providers))
	for i, p := range auth.OAuth.Providers {
		providers[i] = oauth.ProviderConfig{
			Name: p.Name, Type: p.Type, DisplayName: p.DisplayName, Issuer: p.Issuer, ClientID: p.ClientID,
			ClientSecret: p.ClientSecret, AgentID: p.AgentID, Scopes: p.Scopes,
			AuthURL: p.AuthURL, TokenURL: p.TokenURL, UserInfoURL: p.UserInfoURL,
		}
	}
	logins, err := oauth.New(oauth.Config{
		CallbackBase: auth.OAuth.CallbackBase, RedirectAllowlist: auth.OAuth.RedirectAllowlist, Providers: providers,
	}, accounts, rdb, ks, a.log)
	if err != nil {
		return server.Identity{}, fmt.Errorf("auth.oauth: %w", err)
	}
	return server.Identity{
		Accounts: accounts,
		Tokens:   tokens,
		Keys:     a.newAPIKeys(st, rdb, a.log),
		Audit:    audit.New(st),
		Members:  members.New(st, time.Now),
		OAuth:    logins,
	}, nil
}

// newAccounts builds the account service from the configuration.
func (a *app) newAccounts(st *store.Store, log *slog.Logger) *account.Service {
	auth := a.cfg.Auth
	return account.New(st, account.Config{
		PasswordMinLength: auth.PasswordMinLength, Argon2Memory: auth.Argon2Memory, Argon2Time: auth.Argon2Time,
		Argon2Threads: auth.Argon2Threads, SessionTTL: auth.SessionTTL, RefreshReuseGrace: auth.RefreshReuseGrace,
	}, log, time.Now)
}

// newAPIKeys builds the API key service from the configuration.
func (a *app) newAPIKeys(st *store.Store, rdb redis.UniversalClient, log *slog.Logger) *apikey.Service {
	auth := a.cfg.Auth
	return apikey.New(st, rdb, redisclient.Keyspace{Env: a.cfg.Env}, apikey.Config{
		Env: auth.APIKeyEnv, CacheTTL: auth.APIKeyCacheTTL, LastUsedFlushInterval: 30 * time.Second,
	}, log, time.Now)
}

// newMailer sends over SMTP when mail.smtp_url is set; otherwise emails go to the log.
func (a *app) newMailer() notify.Mailer {
	if a.cfg.Mail.SMTPURL == "" {
		a.log.Warn("mail.smtp_url is not set: emails (verification, password reset, invitations) are written to the log instead of sent")
		return notify.LogMailer{Log: a.log}
	}
	m, err := notify.NewSMTPMailer(a.cfg.Mail.SMTPURL, a.cfg.Mail.From)
	if err != nil {
		// The error never repeats the URL, so the password stays out of the log.
		a.log.Error("mail.smtp_url or mail.from cannot be used: every email will fail until it is fixed", "error", err)
		return notify.Unavailable{Err: err}
	}
	a.log.Info("emails are sent over SMTP", "server", m.String())
	return m
}

func (a *app) serveCmd() *cobra.Command {
	var noWorker bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the HTTP API (and run the worker, unless --no-worker)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.serve(cmd.Context(), !noWorker)
		},
	}
	cmd.Flags().BoolVar(&noWorker, "no-worker", false, "do not run the embedded worker (run `kiln worker` separately)")
	return cmd
}

func (a *app) serve(ctx context.Context, withWorker bool) error {
	stopTracing, err := a.startTracing(ctx)
	if err != nil {
		return err
	}
	defer stopTracing() // last: the spans of the shutdown itself are flushed too
	reports, stopReports, err := a.startErrorReports()
	if err != nil {
		return err
	}
	defer stopReports()
	d, closeDeps, err := a.open(ctx)
	if err != nil {
		return err
	}
	defer closeDeps()
	migrator, err := store.NewMigrator(d.pool)
	if err != nil {
		return err
	}
	defer migrator.Close()

	reg := metrics.NewRegistry()
	reg.MustRegister(metrics.NewPgxPoolCollector(d.pool), metrics.NewRedisPoolCollector(d.rdb), worker.NewQueueCollector(d.rdb, a.cfg.Env))
	spec, err := api.GetSpec()
	if err != nil {
		return fmt.Errorf("load embedded spec: %w", err)
	}
	llmDeps, err := a.newLLM(ctx, store.New(d.pool), d.keyring, d.rdb, reg, d.notify)
	if err != nil {
		return err
	}
	defer llmDeps.Billing.WaitAlerts()
	d.identity.Members.UsePlanLimits(llmDeps.Billing)
	promptStore := prompts.New(store.New(d.pool), time.Now)
	promptStore.KnowModels(llmDeps.Runner.Gateway.Has)
	promptStore.UseRetention(a.retentionDays())
	convs, closeConvs, err := a.newConversations(ctx, d, llmDeps, promptStore)
	if err != nil {
		return err
	}
	defer closeConvs()
	knowledge, err := a.newRAG(d, llmDeps)
	if err != nil {
		return err
	}
	promptStore.KnowKnowledgeBases(knowledge.CheckKnowledgeBases)
	payments, err := a.newChinaPayments(llmDeps.Billing)
	if err != nil {
		return err
	}
	jobSvc, closeJobs, err := a.newJobs(ctx, d, llmDeps, convs, payments)
	if err != nil {
		return err
	}
	defer closeJobs()
	invoicePDF, err := a.newInvoicePDF()
	if err != nil {
		return err
	}
	schedules, err := a.newScheduler(ctx, d, d.jobs)
	if err != nil {
		return err
	}
	reg.MustRegister(jobs.NewCollector(jobSvc, 5*time.Second))
	admins := admin.New(store.New(d.pool), time.Now)
	admins.NotifyRevoked(d.identity.Tokens.RevokeSessions)
	admins.NotifyKeysChanged(d.identity.Keys.ForgetAll)
	srv, err := server.New(server.Deps{
		JobsAdmin:      server.JobsAdmin{Schedules: schedules, Jobs: jobs.NewAdmin(jobSvc)},
		LLM:            llmDeps,
		Conversations:  convs,
		Jobs:           jobSvc,
		Retention:      retention.New(store.New(d.pool), a.retentionDays(), time.Now),
		Notifications:  d.notify,
		Prompts:        promptStore,
		Knowledge:      knowledge,
		Tracing:        a.tracerProvider(),
		ErrorReports:   reports,
		ChinaPayments:  payments,
		StripePayments: a.newStripePayments(llmDeps.Billing),
		Invoices:       server.Invoices{Invoicer: a.newInvoicer(store.New(d.pool), llmDeps.Billing), PDF: invoicePDF},
		Exports:        d.exports,
		Erasure:        d.erasure,
		Config:         a.cfg.HTTP,
		Log:            a.log,
		Registry:       reg,
		Spec:           spec,
		Identity:       d.identity,
		Flags:          d.flags,
		Admin:          admins,
		Redis:          d.rdb,
		Keyspace:       redisclient.Keyspace{Env: a.cfg.Env},
		LimitAbuse:     a.cfg.Auth.LimitAbuse,
		APILimits:      a.cfg.RateLimit.API,
		Metrics:        a.cfg.Metrics,
		// A claim must outlive the longest request (a streamed reply), or a retry could
		// run beside it; the margin covers the handler's work after the reply's deadline.
		Idempotency: idempotency.New(d.rdb, redisclient.Keyspace{Env: a.cfg.Env}, idempotency.Config{
			LockTTL: max(a.cfg.LLM.StreamTimeout, a.cfg.HTTP.RequestTimeout) + time.Minute,
			Sealer:  d.keyring,
		}),
		Checks: []health.Check{
			health.Postgres(d.pool),
			health.Redis(d.rdb),
			health.EvictionPolicy(d.rdb),
			health.Migrations(migrator.Versions),
		},
	})
	if err != nil {
		return err
	}

	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", a.cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", a.cfg.HTTP.Addr, err)
	}
	httpSrv := srv.HTTPServer(a.cfg.HTTP.Addr)
	var mln net.Listener // metrics.listen's, when set
	if a.cfg.Metrics.Listen != "" {
		if mln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", a.cfg.Metrics.Listen); err != nil {
			_ = ln.Close()
			return fmt.Errorf("listen on %s (metrics.listen): %w", a.cfg.Metrics.Listen, err)
		}
	}

	bg, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	if err := d.identity.Tokens.EnsureKey(ctx); err != nil {
		stopBackground()
		return fmt.Errorf("token signing key: %w", err)
	}
	wg.Go(func() { srv.WatchReadiness(bg, 15*time.Second) })
	wg.Go(func() { llmDeps.Usage.Run(bg) }) // bg ends after the HTTP server stopped: every call is recorded
	for name, run := range map[string]func(context.Context) error{
		"token keys and revocations": d.identity.Tokens.Run,
		"api key invalidation":       d.identity.Keys.Run,
	} {
		wg.Go(func() {
			if err := run(bg); err != nil {
				a.log.Error(name+" stopped", "error", err)
			}
		})
	}
	wg.Go(func() { llmDeps.Billing.RunPlans(bg, a.log) })
	wg.Go(func() {
		if err := d.flags.Run(bg); err != nil {
			a.log.Error("feature flag invalidation stopped", "error", err)
		}
	})
	if withWorker {
		wg.Go(func() {
			if err := jobSvc.Run(bg); err != nil {
				a.log.Error("worker", "error", err)
			}
		})
		wg.Go(func() { _ = schedules.Run(bg) })
	}

	servers := []*http.Server{httpSrv}
	serveErr := make(chan error, 2)
	if mln != nil {
		metricsSrv := srv.MetricsServer(a.cfg.Metrics.Listen)
		servers = append(servers, metricsSrv)
		go func() { serveErr <- metricsSrv.Serve(srv.Listener(mln)) }()
		a.log.Info("metrics listening", "addr", mln.Addr().String())
	}
	go func() { serveErr <- httpSrv.Serve(srv.Listener(ln)) }()
	a.log.Info("listening", "addr", ln.Addr().String(), "worker", withWorker, "version", version.Get().Version)

	select {
	case err = <-serveErr:
		for _, s := range servers {
			_ = s.Close()
		}
	case <-ctx.Done():
		a.log.Info("shutting down", "timeout", a.cfg.HTTP.ShutdownTimeout)
		shutdownCtx, cancel := context.WithTimeout(context.Background(), a.cfg.HTTP.ShutdownTimeout)
		var shutdown sync.WaitGroup
		for _, s := range servers {
			shutdown.Go(func() {
				if err := s.Shutdown(shutdownCtx); err != nil {
					a.log.Warn("in-flight requests cut at the shutdown deadline", "addr", s.Addr, "error", err)
					_ = s.Close()
				}
			})
		}
		shutdown.Wait()
		convs.Replies.Shutdown(shutdownCtx) // replies still generating end as failed past the deadline
		cancel()
		err = nil
	}
	stopBackground()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	a.log.Info("stopped")
	return err
}

// contextWindow is a model alias's context window in tokens.
func (a *app) contextWindow(alias string) int {
	if m := a.cfg.LLM.Models[alias]; m.ContextWindow > 0 {
		return m.ContextWindow
	}
	return a.cfg.Conversations.ContextWindow
}

// retentionDays is the deployment's default retention (retention.*), for orgs that set none.
func (a *app) retentionDays() retention.Days {
	r := a.cfg.Retention
	return retention.Days{DeletedPrompts: r.DeletedPromptsDays, DeletedConversations: r.DeletedConversationsDays,
		FinishedJobs: r.FinishedJobsDays, FailedJobs: r.FailedJobsDays, Usage: r.UsageDays}
}

// newConversations builds the conversation service and the replies' (with their stream
// bus, which has a Redis pool of its own for the followers' blocking reads).
func (a *app) newConversations(ctx context.Context, d *deps, llmDeps server.LLM, promptStore *prompts.Service) (server.Conversations, func(), error) {
	ks := redisclient.Keyspace{Env: a.cfg.Env}
	blocking, err := redisclient.Open(ctx, a.cfg.Redis.URL, a.cfg.Conversations.MaxFollowers)
	if err != nil {
		return server.Conversations{}, nil, err
	}
	bus := streams.New(d.rdb, ks, streams.Config{TTL: a.cfg.Conversations.StreamTTL, Blocking: blocking})
	convs := conversations.New(store.New(d.pool), time.Now)
	convs.UseRetention(a.retentionDays())
	rd := replies.Deps{
		Conversations: convs, Prompts: promptStore, Runner: llmDeps.Runner, Usage: llmDeps.Usage, Streams: bus,
		Events: server.ReplyEvents{}, Log: a.log, StreamTimeout: a.cfg.LLM.StreamTimeout, LeaseTTL: a.cfg.Conversations.ReplyLease,
		ContextWindow: a.contextWindow,
	}
	c := server.Conversations{Service: convs, Replies: replies.New(rd)}
	c.Responses = responses.New(store.New(d.pool), convs, c.Replies, time.Now)
	return c, func() { bus.Close(); _ = blocking.Close() }, nil
}

func (a *app) workerCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "worker",
		Short: "Run the background worker alone",
		RunE: func(cmd *cobra.Command, _ []string) error {
			stopTracing, err := a.startTracing(cmd.Context())
			if err != nil {
				return err
			}
			defer stopTracing()
			d, closeDeps, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer closeDeps()
			llmDeps, err := a.newLLM(cmd.Context(), store.New(d.pool), d.keyring, d.rdb, metrics.NewRegistry(), d.notify)
			if err != nil {
				return err
			}
			defer llmDeps.Billing.WaitAlerts()
			convs, closeConvs, err := a.newConversations(cmd.Context(), d, llmDeps, prompts.New(store.New(d.pool), time.Now))
			if err != nil {
				return err
			}
			defer closeConvs()
			if _, err := a.newRAG(d, llmDeps); err != nil { // declares the ingestion job this worker runs
				return err
			}
			payments, err := a.newChinaPayments(llmDeps.Billing)
			if err != nil {
				return err
			}
			svc, closeJobs, err := a.newJobs(cmd.Context(), d, llmDeps, convs, payments)
			if err != nil {
				return err
			}
			defer closeJobs()
			schedules, err := a.newScheduler(cmd.Context(), d, d.jobs)
			if err != nil {
				return err
			}
			usageCtx, stopUsage := context.WithCancel(context.WithoutCancel(cmd.Context()))
			var wg sync.WaitGroup
			wg.Go(func() { llmDeps.Usage.Run(usageCtx) }) // the title calls' usage, flushed after the worker stopped
			wg.Go(func() { _ = schedules.Run(cmd.Context()) })
			wg.Go(func() { llmDeps.Billing.RunPlans(cmd.Context(), a.log) })
			err = svc.Run(cmd.Context())
			stopUsage()
			wg.Wait()
			return err
		},
	}
}

func (a *app) migrateCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "migrate", Short: "Apply, roll back or list database migrations"}
	run := func(fn func(ctx context.Context, m *store.Migrator) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			pool, err := store.Open(cmd.Context(), a.cfg.Database.URL, 2)
			if err != nil {
				return err
			}
			defer pool.Close()
			m, err := store.NewMigrator(pool)
			if err != nil {
				return err
			}
			defer m.Close()
			return fn(cmd.Context(), m)
		}
	}
	cmd.AddCommand(
		&cobra.Command{Use: "up", Short: "Apply every pending migration", RunE: run(func(ctx context.Context, m *store.Migrator) error {
			return m.Up(ctx, a.log)
		})},
		&cobra.Command{Use: "down", Short: "Roll back the latest migration", RunE: run(func(ctx context.Context, m *store.Migrator) error {
			return m.Down(ctx, a.log)
		})},
		&cobra.Command{Use: "status", Short: "List migrations and whether each is applied", RunE: run(func(ctx context.Context, m *store.Migrator) error {
			return m.PrintStatus(ctx, a.stdout)
		})},
	)
	return cmd
}

func (a *app) configCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Inspect the configuration"}
	cmd.AddCommand(&cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration as YAML, secrets masked",
		RunE: func(*cobra.Command, []string) error {
			b, err := yaml.Marshal(a.cfg.Masked().Tree())
			if err != nil {
				return err
			}
			_, err = a.stdout.Write(b)
			return err
		},
	})
	return cmd
}

func (a *app) keysCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Manage the access-token signing keys and sealed secrets"}
	cmd.AddCommand(&cobra.Command{
		Use:   "rotate",
		Short: "Make a new signing key; older keys verify until their tokens expire",
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, closeDeps, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer closeDeps()
			kid, err := rotateSigningKey(cmd.Context(), d, 0)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(a.stdout, "new signing key %s\n", kid)
			return err
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "List the signing keys with their age and state, and when the next scheduled rotation is due",
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, closeDeps, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer closeDeps()
			keys, err := d.identity.Tokens.Keys(cmd.Context())
			if err != nil {
				return err
			}
			return printKeyStatus(a.stdout, keys, a.cfg.Auth.SigningKeyRotation, time.Now())
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "rotate-secrets",
		Short: "Re-seal the orgs' provider keys under the first master key of secrets.master_keys",
		Long: "Put the new master key first in secrets.master_keys (keep the old ones after it), run this, " +
			"then drop the old master keys once no signing key sealed with them is still in use.",
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, closeDeps, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer closeDeps()
			n, err := a.newOrgKeys(store.New(d.pool), d.keyring).Reseal(cmd.Context())
			if err != nil {
				return err
			}
			if err := d.identity.Audit.Record(cmd.Context(), audit.Actor{Type: audit.ActorSystem}, audit.Event{Action: "secrets.reseal", TargetType: "master_key", TargetID: d.keyring.Current(), Data: map[string]any{"provider_keys": n}}); err != nil {
				return err
			}
			_, err = fmt.Fprintf(a.stdout, "re-sealed %d provider keys under master key %s\n", n, d.keyring.Current())
			return err
		},
	})
	return cmd
}

// adminCmd grants and revokes platform admin, the only way to make one: no API call can.
func (a *app) adminCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "admin", Short: "Grant or revoke platform admin (access to /v1/admin)"}
	for _, c := range []struct {
		use, short, action string
		grant              bool
	}{
		{"grant <email>", "Make a user a platform admin", "admin.grant", true},
		{"revoke <email>", "Make a platform admin an ordinary user again", "admin.revoke", false},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:   c.use,
			Short: c.short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				pool, err := store.Open(cmd.Context(), a.cfg.Database.URL, 2)
				if err != nil {
					return err
				}
				defer pool.Close()
				st := store.New(pool)
				svc := admin.New(st, time.Now)
				set := svc.Revoke
				if c.grant {
					set = svc.Grant
				}
				user, err := set(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				err = audit.New(st).Record(cmd.Context(), audit.Actor{Type: audit.ActorSystem}, audit.Event{Action: c.action,
					TargetType: "user", TargetID: user.ID.String(), Data: map[string]any{"email": user.Email}})
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(a.stdout, "%s (%s): platform admin %t\n", user.Email, user.ID, user.PlatformAdmin)
				return err
			},
		})
	}
	return cmd
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		RunE: func(*cobra.Command, []string) error {
			return json.NewEncoder(a.stdout).Encode(version.Get())
		},
	}
}
