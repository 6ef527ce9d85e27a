package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/trace"

	"github.com/kilnhq/kiln/internal/cache"
	"github.com/kilnhq/kiln/internal/chat"
	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/anthropic"
	"github.com/kilnhq/kiln/internal/llm/dev"
	"github.com/kilnhq/kiln/internal/llm/gemini"
	"github.com/kilnhq/kiln/internal/llm/ollama"
	"github.com/kilnhq/kiln/internal/llm/openai"
	"github.com/kilnhq/kiln/internal/llm/orgkeys"
	"github.com/kilnhq/kiln/internal/llm/tools"
	"github.com/kilnhq/kiln/internal/llm/usage"
	"github.com/kilnhq/kiln/internal/notify"
	"github.com/kilnhq/kiln/internal/platform/config"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/platform/secrets"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/server"
)

// newProvider builds the adapter for one configured provider.
func newProvider(p config.LLMProvider, client *http.Client) (llm.Provider, error) {
	cfg := llm.ProviderConfig{Name: p.Name, Type: p.Type, BaseURL: p.BaseURL, APIKey: p.APIKey, BearerToken: p.BearerToken, APIVersion: p.APIVersion, Headers: p.Headers}
	switch p.Type {
	case "openai", "azure_openai", "openai_compatible":
		return openai.New(cfg, client)
	case "gemini":
		return gemini.New(cfg, client)
	case "anthropic":
		return anthropic.New(cfg, client)
	case "ollama":
		return ollama.New(cfg, client)
	case "dev":
		return dev.New(cfg), nil
	}
	return nil, fmt.Errorf("llm provider %s: unknown type %q", p.Name, p.Type)
}

// newProviders builds every configured provider.
func newProviders(c config.LLM) (map[string]llm.Provider, error) {
	client := llm.NewHTTPClient()
	out := map[string]llm.Provider{}
	for _, p := range c.Providers {
		pr, err := newProvider(p, client)
		if err != nil {
			return nil, fmt.Errorf("llm provider %s: %w", p.Name, err)
		}
		out[p.Name] = pr
	}
	return out, nil
}

// newOrgKeys stores orgs' own keys for the configured providers that take one.
func (a *app) newOrgKeys(st *store.Store, keyring *secrets.Keyring) *orgkeys.Service {
	known := func(name string) bool {
		for _, p := range a.cfg.LLM.Providers {
			if p.Name == name {
				return p.Type != "dev"
			}
		}
		return false
	}
	return orgkeys.New(st, keyring, known, time.Now)
}

// newGateway builds the gateway over the model catalog; orgKeys and meter may be nil.
func newGateway(c config.LLM, orgKeys *orgkeys.Service, meter llm.Meter, log *slog.Logger, reg prometheus.Registerer, tp trace.TracerProvider, recordContent bool) (*llm.Gateway, error) {
	providers, err := newProviders(c)
	if err != nil {
		return nil, err
	}
	client := llm.NewHTTPClient()
	withKey := func(name, apiKey string) (llm.Provider, error) {
		for _, p := range c.Providers {
			if p.Name == name {
				p.APIKey, p.BearerToken = apiKey, ""
				return newProvider(p, client)
			}
		}
		return nil, fmt.Errorf("no provider named %q", name)
	}
	aliases := map[string][]llm.Target{}
	for alias, m := range c.Models {
		for _, t := range m.Targets {
			aliases[alias] = append(aliases[alias], llm.Target{
				Provider: t.Provider, Model: t.Model, Weight: t.Weight, Timeout: t.Timeout, MaxConcurrency: t.MaxConcurrency,
				Price: llm.Price{Input: t.Price.Input, Output: t.Price.Output, Cached: t.Price.Cached},
			})
		}
	}
	return llm.NewGateway(llm.GatewayConfig{
		Providers: providers, Aliases: aliases, Timeout: c.Timeout, Retries: c.Retries, MaxRetryAfter: c.MaxRetryAfter,
		BreakerFailures: c.BreakerFailures, BreakerCooldown: c.BreakerCooldown, Log: log, Registry: reg,
		OrgKeys: orgKeys, WithKey: withKey, Meter: meter, DefaultMaxTokens: c.MaxTokens,
		Tracing: tp, RecordContent: recordContent,
	})
}

// newLLM wires the model endpoints, with the plans of config and of the admin API loaded;
// run the recorder's Run until the HTTP server stopped, and Billing.RunPlans in a process
// that lives on. Quota alerts go through center; wait for them (Billing.WaitAlerts) before
// closing it.
func (a *app) newLLM(ctx context.Context, st *store.Store, keyring *secrets.Keyring, rdb redis.UniversalClient, reg prometheus.Registerer, center *notify.Center) (server.LLM, error) {
	orgKeys := a.newOrgKeys(st, keyring)
	bill := a.newBilling(st, rdb)
	if err := bill.LoadPlans(ctx); err != nil {
		// Served without them, their subscribers would fall back to the default plan.
		return server.LLM{}, fmt.Errorf("%w (is the schema migrated? kiln migrate up)", err)
	}
	bill.EnableAlerts(center, a.log)
	g, err := newGateway(a.cfg.LLM, orgKeys, bill, a.log, reg, a.tracerProvider(), a.cfg.OTel.RecordContent)
	if err != nil {
		return server.LLM{}, err
	}
	registry, err := tools.NewRegistry(tools.Builtins()...)
	if err != nil {
		return server.LLM{}, err
	}
	rec, err := usage.NewRecorder(st, a.log, reg, a.cfg.LLM.UsageFlush)
	if err != nil {
		return server.LLM{}, err
	}
	return server.LLM{
		Runner: &chat.Runner{
			Gateway: g, Tools: registry, MaxSteps: a.cfg.LLM.ToolMaxSteps, ToolTimeout: a.cfg.LLM.ToolTimeout,
			Cache:     cache.New(rdb, redisclient.Keyspace{Env: a.cfg.Env}, a.cfg.LLM.CacheTTL),
			MaxTokens: a.cfg.LLM.MaxTokens, Now: time.Now,
			ContextWindow: a.contextWindow, SourceTokens: a.cfg.RAG.AnswerTokens,
		},
		Usage:         rec,
		Billing:       bill,
		OrgKeys:       orgKeys,
		StreamTimeout: a.cfg.LLM.StreamTimeout,
	}, nil
}

func (a *app) llmCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "llm", Short: "Check the configured model providers"}
	var only string
	ping := &cobra.Command{
		Use:   "ping",
		Short: "List each provider's models and send it a tiny prompt, printing latency and time to first token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.ping(cmd.Context(), cmd.OutOrStdout(), only)
		},
	}
	ping.Flags().StringVar(&only, "provider", "", "ping only this provider")
	cmd.AddCommand(ping)
	return cmd
}

// ping checks every provider (or only one) and prints a table; it fails when any failed.
func (a *app) ping(ctx context.Context, out io.Writer, only string) error {
	providers, err := newProviders(a.cfg.LLM)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(providers))
	for name := range providers {
		if only == "" || name == only {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("no provider named %q is configured", only)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROVIDER\tMODEL\tMODELS\tLATENCY\tTTFT\tRESULT")
	failed := 0
	for _, name := range names {
		r := pingOne(ctx, providers[name], a.modelFor(name))
		if r.err != nil {
			failed++
		}
		result := "ok: " + r.reply
		if r.err != nil {
			result = "FAILED: " + plainError(r.err)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", name, r.model, r.models, ms(r.latency), ms(r.ttft), result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d providers failed", failed, len(names))
	}
	return nil
}

// modelFor picks the model to ping a provider with: the first catalog target using it.
func (a *app) modelFor(provider string) string {
	aliases := make([]string, 0, len(a.cfg.LLM.Models))
	for alias := range a.cfg.LLM.Models {
		aliases = append(aliases, alias)
	}
	sort.Strings(aliases)
	for _, alias := range aliases {
		for _, t := range a.cfg.LLM.Models[alias].Targets {
			if t.Provider == provider {
				return t.Model
			}
		}
	}
	return ""
}

type pingResult struct {
	model, models, reply string
	latency, ttft        time.Duration
	err                  error
}

func pingOne(ctx context.Context, p llm.Provider, model string) pingResult {
	r := pingResult{model: model, models: "-"}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if list, err := p.Models(ctx); err == nil {
		r.models = fmt.Sprint(len(list))
		if model == "" && len(list) > 0 {
			r.model = list[0].ID
		}
	} else if ue, ok := errors.AsType[*llm.Error](err); !ok || ue.Kind != llm.KindUnsupported {
		r.err = fmt.Errorf("list models: %w", err)
		return r
	}
	maxTokens := 8
	start := time.Now()
	s, err := p.ChatStream(ctx, &llm.Request{Model: r.model, MaxTokens: &maxTokens, Messages: []llm.Message{llm.TextMessage(llm.RoleUser, "Reply with the word pong.")}})
	if err != nil {
		r.err = err
		return r
	}
	defer s.Close()
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			r.err = err
			return r
		}
		if r.ttft == 0 {
			r.ttft = time.Since(start)
		}
		r.reply += ev.Text
	}
	r.latency = time.Since(start)
	if len(r.reply) > 40 {
		r.reply = r.reply[:40] + "…"
	}
	return r
}

// plainError says what went wrong in words an operator acts on.
func plainError(err error) string {
	ue, ok := errors.AsType[*llm.Error](err)
	if !ok {
		return err.Error()
	}
	hint := map[llm.ErrorKind]string{
		llm.KindAuth:        "the provider refused the key: check api_key",
		llm.KindConnection:  "cannot reach the provider: check base_url and the network",
		llm.KindTimeout:     "the provider did not answer in time",
		llm.KindRateLimited: "rate limited by the provider",
		llm.KindOverloaded:  "the provider is failing or overloaded",
		llm.KindInvalid:     "the provider refused the request: check the model name",
		llm.KindProtocol:    "the provider's answer could not be read: check type and base_url",
	}[ue.Kind]
	return fmt.Sprintf("%s (%s)", hint, ue.Error())
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
}
