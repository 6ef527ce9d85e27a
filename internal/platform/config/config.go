// Package config loads Kiln's configuration in layers — built-in defaults, then a YAML
// file, then environment variables — and validates it, naming every bad key.
package config

import (
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"
)

// Config is the whole effective configuration of a Kiln process.
type Config struct {
	// Env names the deployment (development, test, production); it also prefixes Redis keys.
	Env      string   `koanf:"env" doc:"deployment name; prefixes Redis keys"`
	HTTP     HTTP     `koanf:"http"`
	Database Database `koanf:"database"`
	Redis    Redis    `koanf:"redis"`
	Log      Log      `koanf:"log"`
	Worker   Worker   `koanf:"worker"`
	Jobs     Jobs     `koanf:"jobs"`
	Flags    Flags    `koanf:"flags"`
	Auth     Auth     `koanf:"auth"`
	Secrets  Secrets  `koanf:"secrets"`
	Mail     Mail     `koanf:"mail"`
	LLM      LLM      `koanf:"llm"`
	// Conversations configures stored conversations and their resumable reply streams.
	Conversations Conversations `koanf:"conversations"`
	// Notifications configures the notification center.
	Notifications Notifications `koanf:"notifications"`
	// RAG configures knowledge bases, their ingestion and their searches.
	RAG RAG `koanf:"rag"`
	// Billing configures plans, subscriptions and quotas.
	Billing Billing `koanf:"billing"`
	// OTel configures OpenTelemetry tracing.
	OTel OTel `koanf:"otel"`
	// Sentry configures error reporting to Sentry.
	Sentry Sentry `koanf:"sentry"`
	// RateLimit configures the API's rate limits.
	RateLimit RateLimit `koanf:"ratelimit"`
	// Metrics configures who may read the Prometheus metrics.
	Metrics Metrics `koanf:"metrics"`
	// Retention holds the default retention of deleted and ended items; each org may set
	// its own (PUT /v1/orgs/{id}/retention).
	Retention Retention `koanf:"retention"`
	// Privacy configures the privacy exports.
	Privacy Privacy `koanf:"privacy"`
}

// Privacy configures the exports of a user's or an org's data (POST /v1/me/export,
// POST /v1/orgs/{id}/export) and deletion (DELETE /v1/me, DELETE /v1/orgs/{id}), which
// erases after a grace period in which it can be undone.
type Privacy struct {
	ExportLinkTTL  time.Duration `koanf:"export_link_ttl" doc:"how long an export's download link works once the archive is built (1m to 720h)"`
	ExportMaxBytes int64         `koanf:"export_max_bytes" doc:"largest archive an export may build (1 MiB to 1 GiB); past it the export job fails"`
	PublicURL      string        `koanf:"public_url" doc:"the API's public base URL (e.g. https://api.example.com), prefixed to download links; empty: the links are paths"`
	// EraseGrace is how long a deletion (DELETE /v1/me, DELETE /v1/orgs/{id}) can be undone.
	EraseGrace time.Duration `koanf:"erase_grace" doc:"how long a deleted account or org can be restored before the erase job removes it (1h to 2160h)"`
}

// Retention is the deployment's default retention, in days, of what an org has not set.
type Retention struct {
	DeletedPromptsDays       int `koanf:"deleted_prompts_days" doc:"days a deleted prompt stays restorable before housekeeping purges it (1-365)"`
	DeletedConversationsDays int `koanf:"deleted_conversations_days" doc:"days a deleted conversation stays restorable before housekeeping purges it (1-365)"`
	FinishedJobsDays         int `koanf:"finished_jobs_days" doc:"days a succeeded or cancelled job is kept after it ended (1-365)"`
	FailedJobsDays           int `koanf:"failed_jobs_days" doc:"days a failed job is kept after it ended (1-365)"`
	UsageDays                int `koanf:"usage_days" doc:"days usage rows are kept (400-3650); 0 keeps them for good"`
}

func (r Retention) validate() []string {
	var p []string
	check := func(key string, v, lo, hi int) {
		if v < lo || v > hi {
			p = append(p, fmt.Sprintf("retention.%s: must be between %d and %d, got %d", key, lo, hi, v))
		}
	}
	check("deleted_prompts_days", r.DeletedPromptsDays, 1, 365)
	check("deleted_conversations_days", r.DeletedConversationsDays, 1, 365)
	check("finished_jobs_days", r.FinishedJobsDays, 1, 365)
	check("failed_jobs_days", r.FailedJobsDays, 1, 365)
	if r.UsageDays != 0 {
		check("usage_days", r.UsageDays, 400, 3650)
	}
	return p
}

// Metrics says where GET /metrics is served and what it asks of a scraper; by default it
// is open on the API's listener.
type Metrics struct {
	Listen string `koanf:"listen" doc:"a listen address of its own for GET /metrics (e.g. 127.0.0.1:9090); the API's listener then answers /metrics 404. Empty: served on http.addr"`
	Token  string `koanf:"token" secret:"true" doc:"bearer token GET /metrics requires (Authorization: Bearer <token>; 401 without it); empty: none"`
}

// RateLimit configures the API's rate limits; the auth routes' abuse limits are apart
// (auth.limit_abuse).
type RateLimit struct {
	API APIRateLimits `koanf:"api"`
}

// APIRateLimits limit every authenticated request (the auth routes under the abuse limits
// aside) per API key, per signed-in user and per org; a request must pass each that applies.
type APIRateLimits struct {
	PerKey  Rate `koanf:"per_key"`
	PerUser Rate `koanf:"per_user"`
	PerOrg  Rate `koanf:"per_org"`
}

// Rate is a GCRA limit: Rate requests a minute on average, up to Burst at once.
type Rate struct {
	Rate  int `koanf:"rate" doc:"requests a minute on average; 0: no limit"`
	Burst int `koanf:"burst" doc:"requests allowed at once (at least 1 when rate is set)"`
}

// OTel configures OpenTelemetry tracing: off (no span made, nothing exported) unless an
// exporter endpoint is set.
type OTel struct {
	Endpoint      string  `koanf:"endpoint" doc:"OTLP collector base URL (http://collector:4318 for http/protobuf, http://collector:4317 for grpc; https:// for TLS); OTEL_EXPORTER_OTLP_ENDPOINT also sets it; empty: tracing off"`
	Protocol      string  `koanf:"protocol" doc:"OTLP protocol: http/protobuf or grpc; OTEL_EXPORTER_OTLP_PROTOCOL also sets it"`
	ServiceName   string  `koanf:"service_name" doc:"service.name of the spans; OTEL_SERVICE_NAME also sets it"`
	SampleRatio   float64 `koanf:"sample_ratio" doc:"share of new traces sampled, 0 to 1 (a trace continued from a trusted caller follows the caller's decision)"`
	RecordContent bool    `koanf:"record_content" doc:"record prompt and completion text on model-call spans (personal data: off unless your tracing backend may hold it)"`
}

// Sentry configures error reporting: panics and 5xx answers are sent to Sentry when a DSN
// is set.
type Sentry struct {
	DSN         string  `koanf:"dsn" secret:"true" doc:"Sentry DSN (https://key@host/project); SENTRY_DSN also sets it; empty: no reporting"`
	Environment string  `koanf:"environment" doc:"environment of the events; empty: env"`
	Release     string  `koanf:"release" doc:"release of the events; empty: the build's version"`
	SampleRate  float64 `koanf:"sample_rate" doc:"share of errors sent, 0 to 1 (0: none)"`
	SendPII     bool    `koanf:"send_pii" doc:"send personal data (the caller's user id, client IP, emails in error texts); request bodies, Authorization, cookies and query strings are never sent"`
}

// Billing configures plans, subscriptions and quotas.
type Billing struct {
	DefaultPlan     string          `koanf:"default_plan" doc:"plan of an org without a subscription (an id of billing.plans)"`
	ReservationTTL  time.Duration   `koanf:"reservation_ttl" doc:"how long a model call's token reservation holds before it lapses (a replica that died mid-call frees its reservation then)"`
	CacheTTL        time.Duration   `koanf:"cache_ttl" doc:"how long a replica trusts an org's cached subscription on the model-call path, and how often it reloads the admin API's plans (a subscription or plan change reaches other replicas within it)"`
	GracePeriod     time.Duration   `koanf:"grace_period" doc:"how long a subscription whose renewal went unpaid stays past_due (served) before it is frozen (model calls and ingestions refused with payment_required)"`
	Plans           map[string]Plan `koanf:"plans" doc:"plans by id: name, prices, features, limits (YAML only); see the README"`
	OrderExpiry     time.Duration   `koanf:"order_expiry" doc:"how long a WeChat Pay or Alipay order can be paid (the time_expire given to the provider); the order query job closes it after"`
	OrderQueryAfter time.Duration   `koanf:"order_query_after" doc:"a WeChat Pay or Alipay order still open this long after it was created is asked about by the order query job (its notification may be lost)"`
	WeChatPay       WeChatPay       `koanf:"wechatpay"`
	Alipay          Alipay          `koanf:"alipay"`
	Stripe          Stripe          `koanf:"stripe"`
	Invoices        Invoices        `koanf:"invoices"`
}

// Invoices configures the seller on invoices and their numbering.
type Invoices struct {
	IssuerID      string `koanf:"issuer_id" doc:"names the invoice number sequence: numbers run without gaps per issuer (a new issuer starts at 1)"`
	NumberPrefix  string `koanf:"number_prefix" doc:"starts every invoice number, followed by the sequence (six digits at least)"`
	SellerName    string `koanf:"seller_name" doc:"the seller's legal name on invoices"`
	SellerAddress string `koanf:"seller_address" doc:"the seller's address on invoices"`
	SellerTaxID   string `koanf:"seller_tax_id" doc:"the seller's tax id (VAT number, 纳税人识别号) on invoices"`
	TaxRateBP     int    `koanf:"tax_rate_bp" doc:"tax on invoices in basis points of the subtotal (2000 = 20 %); 0: none"`
	Font          string `koanf:"font" doc:"a TrueType font file (one .ttf, not a .ttc collection) the invoice PDF sets its text in; the default, Droid Sans Fallback (Debian's fonts-droid-fallback), has the CJK glyphs of Chinese names, and when it is missing the PDF falls back to Helvetica with a warning at start; empty: Helvetica, Latin-1 characters only"`
}

// DefaultInvoiceFont is billing.invoices.font's default: Droid Sans Fallback, one
// TrueType file with CJK glyphs (Debian's fonts-droid-fallback, which scripts/dev-deps.sh
// installs), so invoices to Chinese buyers render their names and addresses.
const DefaultInvoiceFont = "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"

// Stripe configures Stripe (Checkout, the billing portal, webhooks); an empty secret_key
// leaves it off.
type Stripe struct {
	SecretKey     string `koanf:"secret_key" secret:"true" doc:"the secret API key (sk_live_… or sk_test_…, or a restricted key); empty: Stripe is off"`
	WebhookSecret string `koanf:"webhook_secret" secret:"true" doc:"the signing secret (whsec_…) of the webhook endpoint POST /v1/webhooks/stripe"`
	BaseURL       string `koanf:"base_url" doc:"Stripe's API; empty: https://api.stripe.com (tests point it at stripe-mock)"`
}

// WeChatPay configures WeChat Pay (API v3, a direct merchant); an empty mch_id leaves it
// off.
type WeChatPay struct {
	MchID          string `koanf:"mch_id" doc:"merchant id (商户号); empty: WeChat Pay is off"`
	AppID          string `koanf:"app_id" doc:"the AppID the merchant is bound to (official account, mini program or app)"`
	MerchantSerial string `koanf:"merchant_serial" doc:"serial number of the merchant's API certificate"`
	MerchantKey    string `koanf:"merchant_key" secret:"true" doc:"the merchant's API private key, PEM (apiclient_key.pem)"`
	APIv3Key       string `koanf:"api_v3_key" secret:"true" doc:"the 32-byte APIv3 key that decrypts notifications"`
	PlatformKey    string `koanf:"platform_key" doc:"WeChat Pay's public key (PUBLIC KEY PEM) or platform certificate (CERTIFICATE PEM) that signs notifications and answers"`
	PlatformSerial string `koanf:"platform_serial" doc:"the id WeChat sends in Wechatpay-Serial with that key (PUB_KEY_ID_…); empty: the certificate's serial"`
	NotifyURL      string `koanf:"notify_url" doc:"https URL of POST /v1/webhooks/wechatpay as WeChat reaches it"`
	BaseURL        string `koanf:"base_url" doc:"WeChat Pay's API; empty: https://api.mch.weixin.qq.com"`
}

// Alipay configures Alipay (open platform, public-key mode); an empty app_id leaves it off.
type Alipay struct {
	AppID      string `koanf:"app_id" doc:"the app's id on Alipay's open platform; empty: Alipay is off"`
	PrivateKey string `koanf:"private_key" secret:"true" doc:"the app's RSA2 private key, PEM"`
	PublicKey  string `koanf:"public_key" doc:"Alipay's public key of the app (支付宝公钥), PEM"`
	NotifyURL  string `koanf:"notify_url" doc:"URL of POST /v1/webhooks/alipay as Alipay reaches it"`
	ReturnURL  string `koanf:"return_url" doc:"where the payer's browser returns after paying; empty: Alipay's page"`
	Gateway    string `koanf:"gateway" doc:"Alipay's gateway; empty: https://openapi.alipay.com/gateway.do (the sandbox's to test)"`
}

// Plan is one plan of billing.plans.
type Plan struct {
	Name string `koanf:"name" yaml:"name"`
	// Prices in minor units (cents, fen) by interval (month, year) and currency (USD, CNY).
	Prices   map[string]map[string]int64 `koanf:"prices" yaml:"prices"`
	Features map[string]bool             `koanf:"features" yaml:"features"`
	// Limits by name: tokens (per period), requests_per_minute, seats, knowledge_bases,
	// documents, storage_bytes.
	Limits map[string]PlanLimit `koanf:"limits" yaml:"limits"`
	// StripePrices are the ids of the Stripe Prices (price_…) a Checkout subscribes to,
	// by interval and currency, each for the amount of Prices.
	StripePrices map[string]map[string]string `koanf:"stripe_prices" yaml:"stripe_prices"`
}

// PlanLimit is one limit of a plan and what happens past it.
type PlanLimit struct {
	Value int64 `koanf:"value" yaml:"value"`
	// Overage is block (refuse), allow_and_bill (at UnitPrice) or allow_and_alert.
	Overage string `koanf:"overage" yaml:"overage"`
	// UnitPrice is the price of one unit past the limit, in minor units (allow_and_bill).
	UnitPrice float64 `koanf:"unit_price" yaml:"unit_price"`
}

// RAG configures knowledge bases, their ingestion and their searches.
type RAG struct {
	EmbeddingModel       string  `koanf:"embedding_model" doc:"model alias that embeds a new knowledge base's chunks when it names none"`
	Dimensions           int     `koanf:"dimensions" doc:"vector size of a new knowledge base that names none: 256, 384, 512, 768, 1024, 1536 or 3072"`
	ChunkMaxTokens       int     `koanf:"chunk_max_tokens" doc:"largest chunk, in tokens, of a new knowledge base that sets no chunking"`
	ChunkOverlap         int     `koanf:"chunk_overlap" doc:"tokens of a chunk repeated at the start of the next one, for a new knowledge base that sets no chunking"`
	MaxDocumentBytes     int64   `koanf:"max_document_bytes" doc:"largest document a knowledge base takes, in bytes (413 request_too_large past it)"`
	MaxDocumentPages     int     `koanf:"max_document_pages" doc:"most pages of a PDF a knowledge base takes (413 request_too_large past it)"`
	EmbedBatch           int     `koanf:"embed_batch" doc:"chunks per embedding call while ingesting"`
	HNSWEfSearch         int     `koanf:"hnsw_ef_search" doc:"HNSW candidate list size of a vector search (hnsw.ef_search; raised to k when smaller)"`
	HNSWMaxScanTuples    int     `koanf:"hnsw_max_scan_tuples" doc:"most index tuples an iterative HNSW scan visits to fill k filtered results before searching exactly"`
	ExactSearchBelow     int     `koanf:"exact_search_below" doc:"a knowledge base with fewer chunks is searched exactly instead of through HNSW"`
	RRFK                 float64 `koanf:"rrf_k" doc:"reciprocal rank fusion's k in hybrid search"`
	HybridVectorWeight   float64 `koanf:"hybrid_vector_weight" doc:"weight of the vector ranking in hybrid search"`
	HybridFulltextWeight float64 `koanf:"hybrid_fulltext_weight" doc:"weight of the full-text ranking in hybrid search"`
	HybridCandidates     int     `koanf:"hybrid_candidates" doc:"results each ranking contributes to a hybrid search (at least 4 × k)"`
	AnswerK              int     `koanf:"answer_k" doc:"chunks a reply grounded in knowledge_bases retrieves (hybrid search over all of them)"`
	AnswerTokens         int     `koanf:"answer_tokens" doc:"most tokens the sources of a grounded reply take in the model's context (less when the context window leaves less room)"`
	Qdrant               Qdrant  `koanf:"qdrant"`
}

// Qdrant configures the Qdrant vector store that knowledge bases created with
// vector_store qdrant use.
type Qdrant struct {
	URL              string `koanf:"url" doc:"Qdrant's gRPC endpoint, http://host:6334 (https:// for TLS); empty: no Qdrant, knowledge bases use pgvector"`
	APIKey           string `koanf:"api_key" secret:"true" doc:"Qdrant API key (sent as the api-key header); empty: none"`
	CollectionPrefix string `koanf:"collection_prefix" doc:"collections are <prefix>_<dimensions>, one per vector size, shared by all orgs (filtered by org and knowledge base)"`
}

// Notifications configures the notification center.
type Notifications struct {
	LongJob time.Duration `koanf:"long_job" doc:"a job that ran at least this long notifies its creator when it succeeds or fails (category jobs); 0: every job"`
}

// Conversations configures stored conversations and their resumable reply streams.
type Conversations struct {
	StreamTTL     time.Duration `koanf:"stream_ttl" doc:"how long a reply's events are kept, after it ended, for clients to resume"`
	ContextWindow int           `koanf:"context_window" doc:"context window in tokens of a model alias that sets none (llm.models.<alias>.context_window)"`
	TitleModel    string        `koanf:"title_model" doc:"model alias that titles new conversations in the background; empty: no titles"`
	MaxFollowers  int           `koanf:"max_followers" doc:"reply streams one replica serves at once (each waits on a Redis connection of a pool of this size)"`
	ReplyLease    time.Duration `koanf:"reply_lease" doc:"lease of a generating reply, renewed every third of it; a reply in progress without one lost its replica and is ended (failed, its published text kept) by the next message, a follower or housekeeping"`
}

// HTTP configures the API server, its timeouts and its size limits.
type HTTP struct {
	Addr              string        `koanf:"addr" doc:"listen address"`
	ReadHeaderTimeout time.Duration `koanf:"read_header_timeout" doc:"time to read request headers"`
	ReadTimeout       time.Duration `koanf:"read_timeout" doc:"time to read a whole request, body included"`
	IdleTimeout       time.Duration `koanf:"idle_timeout" doc:"keep-alive idle time"`
	RequestTimeout    time.Duration `koanf:"request_timeout" doc:"deadline of a non-streaming handler (503 timeout past it)"`
	ShutdownTimeout   time.Duration `koanf:"shutdown_timeout" doc:"time given to in-flight requests on SIGTERM"`
	MaxHeaderBytes    int           `koanf:"max_header_bytes" doc:"request header size limit (431 past it)"`
	MaxBodyBytes      int64         `koanf:"max_body_bytes" doc:"request body size limit (413 past it)"`
	TrustedProxies    string        `koanf:"trusted_proxies" doc:"comma-separated CIDRs of proxies whose X-Forwarded-For names the client (for rate limits, sessions, audit)"`
	HSTSMaxAge        time.Duration `koanf:"hsts_max_age" doc:"max-age of Strict-Transport-Security (sent with includeSubDomains) as a duration or a number of seconds; 0: not sent. Set it only when every client reaches Kiln's host and its subdomains over HTTPS"`
	CORS              CORS          `koanf:"cors"`
}

// CORS says which browser pages of other origins may call the API and read its answers.
type CORS struct {
	AllowedOrigins string        `koanf:"allowed_origins" doc:"comma-separated origins (https://app.example.com) and patterns (*.example.com, https://*.example.com) whose pages may call the API and open its WebSockets; credentials for exact origins only; empty: none"`
	MaxAge         time.Duration `koanf:"max_age" doc:"how long a browser may reuse a preflight's answer"`
}

// Database configures the PostgreSQL pool.
type Database struct {
	URL      string `koanf:"url" secret:"true" doc:"PostgreSQL URL; DATABASE_URL also sets it"`
	MaxConns int32  `koanf:"max_conns" doc:"pool size"`
}

// Redis configures the Redis client.
type Redis struct {
	URL string `koanf:"url" secret:"true" doc:"Redis URL; REDIS_URL also sets it"`
}

// Log configures logging.
type Log struct {
	Level string `koanf:"level" doc:"debug, info, warn or error"`
}

// Worker configures the background worker.
type Worker struct {
	Concurrency          int           `koanf:"concurrency" doc:"tasks run at once per worker process"`
	HousekeepingInterval time.Duration `koanf:"housekeeping_interval" doc:"how often expired rows are purged"`
}

// Jobs configures the job runtime: its relay, heartbeats, reconciliation and the settings
// of each job kind.
type Jobs struct {
	PollInterval      time.Duration `koanf:"poll_interval" doc:"how often an idle relay looks for due jobs besides notifications (also how soon a retry is picked up)"`
	ReconcileInterval time.Duration `koanf:"reconcile_interval" doc:"how often the leading replica re-enqueues jobs Asynq lost or whose worker died"`
	Heartbeat         time.Duration `koanf:"heartbeat" doc:"how often a running job's heartbeat is stored; a job that missed three is run again"`
	// Kinds overrides the settings of registered job kinds by name.
	Kinds map[string]JobKind `koanf:"kinds" doc:"per-kind overrides: jobs.kinds.<name>.{queue, max_attempts, timeout, backoff_base, backoff_max, unique} (YAML only)"`
	// Schedules are cron schedules creating jobs, by name.
	Schedules map[string]JobSchedule `koanf:"schedules" doc:"cron schedules: jobs.schedules.<name>.{cron, kind, payload, timezone} (YAML only)"`
}

// JobSchedule is a cron schedule from config: a job of Kind with Payload at every slot.
type JobSchedule struct {
	Cron     string         `koanf:"cron" yaml:"cron"`         // five fields or @hourly, @every 10m, …
	Kind     string         `koanf:"kind" yaml:"kind"`         // a registered job kind
	Payload  map[string]any `koanf:"payload" yaml:"payload"`   // each run's payload; empty: {}
	Timezone string         `koanf:"timezone" yaml:"timezone"` // IANA name of the cron's zone; empty: UTC
}

// JobKind overrides a job kind's settings; zero fields keep the kind's own.
type JobKind struct {
	Queue       string        `koanf:"queue" yaml:"queue"`
	MaxAttempts int           `koanf:"max_attempts" yaml:"max_attempts"`
	Timeout     time.Duration `koanf:"timeout" yaml:"timeout"`
	BackoffBase time.Duration `koanf:"backoff_base" yaml:"backoff_base"`
	BackoffMax  time.Duration `koanf:"backoff_max" yaml:"backoff_max"`
	Unique      time.Duration `koanf:"unique" yaml:"unique"`
}

// Flags configures the feature-flag evaluator.
type Flags struct {
	Defaults map[string]bool `koanf:"defaults" doc:"flag key → value used when the flag is not in the database (YAML only)"`
	CacheTTL time.Duration   `koanf:"cache_ttl" doc:"how long a replica trusts its cached flags without an invalidation"`
}

// Auth configures accounts, tokens, sessions and API keys.
type Auth struct {
	Issuer         string        `koanf:"issuer" doc:"JWT iss claim"`
	Audience       string        `koanf:"audience" doc:"JWT aud claim"`
	AccessTokenTTL time.Duration `koanf:"access_token_ttl" doc:"lifetime of an access token (JWT)"`
	// SigningKeyRotation is the age at which a scheduled job replaces the signing key.
	SigningKeyRotation time.Duration `koanf:"signing_key_rotation" doc:"age at which the access-token signing key is replaced by a new one (checked hourly; 0: only kiln keys rotate)"`
	SessionTTL         time.Duration `koanf:"session_ttl" doc:"lifetime of a session and its refresh tokens"`
	RefreshReuseGrace  time.Duration `koanf:"refresh_reuse_grace" doc:"window in which a spent refresh token may be reused by a concurrent refresh"`
	PasswordMinLength  int           `koanf:"password_min_length" doc:"shortest password accepted at sign-up"`
	Argon2Memory       uint32        `koanf:"argon2_memory_kib" doc:"argon2id memory per hash, in KiB"`
	Argon2Time         uint32        `koanf:"argon2_time" doc:"argon2id passes"`
	Argon2Threads      uint8         `koanf:"argon2_threads" doc:"argon2id lanes"`
	APIKeyEnv          string        `koanf:"api_key_env" doc:"the <env> part of new API keys (kiln_<env>_…), e.g. live or test"`
	APIKeyCacheTTL     time.Duration `koanf:"api_key_cache_ttl" doc:"how long a replica trusts a cached API key without an invalidation"`
	LimitAbuse         bool          `koanf:"limit_abuse" doc:"rate-limit login, sign-up, password reset and refresh per IP and per account"`
	OAuth              OAuth         `koanf:"oauth"`
}

// OAuth configures external login (OIDC, GitHub, WeChat, WeCom).
type OAuth struct {
	// CallbackBase is this API's public base URL; providers redirect to
	// <callback_base>/v1/auth/oauth/<name>/callback.
	CallbackBase string `koanf:"callback_base" doc:"this API's public base URL, for provider callbacks"`
	// RedirectAllowlist lists the client URLs a login may end at (exact match, or a prefix
	// ending in /).
	RedirectAllowlist []string        `koanf:"redirect_allowlist" doc:"client URLs an external login may return to (YAML only)"`
	Providers         []OAuthProvider `koanf:"providers" doc:"external login providers (YAML only); see the README"`
}

// OAuthProvider is one configured external login provider.
type OAuthProvider struct {
	Name         string   `koanf:"name" yaml:"name"`                   // in URLs: /v1/auth/oauth/<name>/start
	Type         string   `koanf:"type" yaml:"type"`                   // oidc, github, wechat, wecom
	DisplayName  string   `koanf:"display_name" yaml:"display_name"`   // for login pages
	Issuer       string   `koanf:"issuer" yaml:"issuer"`               // oidc: discovery at <issuer>/.well-known/openid-configuration
	ClientID     string   `koanf:"client_id" yaml:"client_id"`         // WeChat: appid; WeCom: corpid
	ClientSecret string   `koanf:"client_secret" yaml:"client_secret"` // WeChat: secret; WeCom: the app's secret
	AgentID      string   `koanf:"agent_id" yaml:"agent_id"`           // wecom only
	Scopes       []string `koanf:"scopes" yaml:"scopes"`               // oidc/github extra scopes; wechat: snsapi_login or snsapi_userinfo
	// Endpoint overrides (tests, GitHub Enterprise, regional WeChat hosts).
	AuthURL     string `koanf:"auth_url" yaml:"auth_url"`
	TokenURL    string `koanf:"token_url" yaml:"token_url"`
	UserInfoURL string `koanf:"userinfo_url" yaml:"userinfo_url"`
}

// Mail configures outgoing email.
type Mail struct {
	SMTPURL  string `koanf:"smtp_url" secret:"true" doc:"smtp://user:pass@host:587 (STARTTLS) or smtps://…:465; empty: emails are written to the log"`
	From     string `koanf:"from" doc:"From address of outgoing email"`
	LinkBase string `koanf:"link_base" doc:"base URL of the client pages that receive emailed tokens (verify-email, reset-password, accept-invitation)"`
}

// LLM configures the model gateway: upstream providers, the model catalog of aliases,
// and the limits every call runs under.
type LLM struct {
	Providers []LLMProvider       `koanf:"providers" doc:"upstream providers (YAML only; values may use ${ENV_VAR}); none configured: the offline dev provider"`
	Models    map[string]LLMModel `koanf:"models" doc:"model catalog: alias → ordered targets (YAML only); see the README"`
	// MaxTokens caps what a request may ask for, and is the default when it asks nothing.
	MaxTokens       int           `koanf:"max_tokens" doc:"upper bound (and default) of a request's max_tokens"`
	StreamTimeout   time.Duration `koanf:"stream_timeout" doc:"longest a streamed reply may run"`
	Timeout         time.Duration `koanf:"timeout" doc:"default per-attempt timeout of a target (a blocking call, or a stream's first event)"`
	Retries         int           `koanf:"retries" doc:"extra attempts at the same target on a retryable error, before failing over"`
	MaxRetryAfter   time.Duration `koanf:"max_retry_after" doc:"longest Retry-After honoured before moving to the next target instead"`
	BreakerFailures int           `koanf:"breaker_failures" doc:"consecutive failures that open a target's circuit"`
	BreakerCooldown time.Duration `koanf:"breaker_cooldown" doc:"how long an open circuit rejects calls before one probe is let through"`
	ToolMaxSteps    int           `koanf:"tool_max_steps" doc:"model calls per request when server-side tools run"`
	ToolTimeout     time.Duration `koanf:"tool_timeout" doc:"time limit of one server-side tool call"`
	UsageFlush      time.Duration `koanf:"usage_flush_interval" doc:"how often buffered usage records are written"`
	CacheTTL        time.Duration `koanf:"cache_ttl" doc:"how long a reply stays in the response cache"`
}

// LLMProvider is one upstream provider.
type LLMProvider struct {
	Name        string            `koanf:"name" yaml:"name"`
	Type        string            `koanf:"type" yaml:"type"` // openai, azure_openai, gemini, ollama, anthropic, openai_compatible, dev
	BaseURL     string            `koanf:"base_url" yaml:"base_url"`
	APIKey      string            `koanf:"api_key" yaml:"api_key"`
	BearerToken string            `koanf:"bearer_token" yaml:"bearer_token"` // azure_openai: a Microsoft Entra token instead of api_key
	APIVersion  string            `koanf:"api_version" yaml:"api_version"`   // azure_openai api-version, anthropic-version
	Headers     map[string]string `koanf:"headers" yaml:"headers"`
}

// LLMModel is an alias of the model catalog.
type LLMModel struct {
	Targets []LLMTarget `koanf:"targets" yaml:"targets"`
	// ContextWindow is the tokens the alias's models take in (prompt and reply); 0: the
	// conversations.context_window default. Conversation history is trimmed to it.
	ContextWindow int `koanf:"context_window" yaml:"context_window"`
}

// LLMTarget is one provider model an alias can be served by.
type LLMTarget struct {
	Provider string `koanf:"provider" yaml:"provider"`
	Model    string `koanf:"model" yaml:"model"`
	// Weight shares first attempts among the weighted targets; weight 0 makes a
	// fallback, tried in order after them.
	Weight         int           `koanf:"weight" yaml:"weight"`
	Timeout        time.Duration `koanf:"timeout" yaml:"timeout"`
	MaxConcurrency int           `koanf:"max_concurrency" yaml:"max_concurrency"` // 0: unbounded
	// Price is in US dollars per million tokens.
	Price LLMPrice `koanf:"price" yaml:"price"`
}

// LLMPrice is a price table, in US dollars per million tokens.
type LLMPrice struct {
	Input  float64 `koanf:"input" yaml:"input"`
	Output float64 `koanf:"output" yaml:"output"`
	Cached float64 `koanf:"cached" yaml:"cached"`
}

// ProviderTypes are the provider types Kiln has adapters for.
var ProviderTypes = []string{"openai", "azure_openai", "gemini", "ollama", "anthropic", "openai_compatible", "dev"}

// devLLM is the catalog used when no provider is configured: the offline dev provider
// behind the usual aliases.
func devLLM(l LLM) LLM {
	l.Providers = []LLMProvider{{Name: "dev", Type: "dev"}}
	l.Models = map[string]LLMModel{}
	for _, alias := range []string{"default", "fast", "smart"} {
		l.Models[alias] = LLMModel{Targets: []LLMTarget{{Provider: "dev", Model: "dev-echo", Weight: 1}}}
	}
	return l
}

// Secrets configures encryption at rest.
type Secrets struct {
	MasterKeys string `koanf:"master_keys" secret:"true" doc:"id:base64(32 bytes)[,…]; the first seals, all open. Required when env starts with prod; else a public development key is used"`
}

// Default returns the built-in defaults: a development setup on this machine.
func Default() Config {
	return Config{
		Env: "development",
		HTTP: HTTP{
			Addr:              ":8080",
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       60 * time.Second,
			IdleTimeout:       120 * time.Second,
			RequestTimeout:    30 * time.Second,
			ShutdownTimeout:   20 * time.Second,
			MaxHeaderBytes:    64 << 10,
			MaxBodyBytes:      1 << 20,
			CORS:              CORS{MaxAge: 10 * time.Minute},
		},
		Database: Database{URL: "postgres://postgres@127.0.0.1:5432/kiln?sslmode=disable", MaxConns: 20},
		Redis:    Redis{URL: "redis://127.0.0.1:6379/0"},
		Log:      Log{Level: "info"},
		Worker:   Worker{Concurrency: 10, HousekeepingInterval: 5 * time.Minute},
		Jobs:     Jobs{PollInterval: time.Second, ReconcileInterval: 15 * time.Second, Heartbeat: 5 * time.Second, Kinds: map[string]JobKind{}, Schedules: map[string]JobSchedule{}},
		Flags:    Flags{Defaults: map[string]bool{}, CacheTTL: time.Minute},
		Auth: Auth{
			Issuer:             "kiln",
			Audience:           "kiln-api",
			AccessTokenTTL:     15 * time.Minute,
			SigningKeyRotation: 30 * 24 * time.Hour,
			SessionTTL:         30 * 24 * time.Hour,
			RefreshReuseGrace:  10 * time.Second,
			PasswordMinLength:  10,
			Argon2Memory:       64 * 1024,
			Argon2Time:         2,
			Argon2Threads:      2,
			APIKeyEnv:          "dev",
			APIKeyCacheTTL:     5 * time.Minute,
			LimitAbuse:         true,
			OAuth:              OAuth{CallbackBase: "http://localhost:8080", RedirectAllowlist: []string{}, Providers: []OAuthProvider{}},
		},
		Mail:   Mail{From: "Kiln <no-reply@localhost>", LinkBase: "http://localhost:3000"},
		OTel:   OTel{Protocol: "http/protobuf", ServiceName: "kiln", SampleRatio: 1},
		Sentry: Sentry{SampleRate: 1},
		LLM: devLLM(LLM{
			MaxTokens: 4096, StreamTimeout: 10 * time.Minute, Timeout: 2 * time.Minute,
			Retries: 1, MaxRetryAfter: 10 * time.Second, BreakerFailures: 5, BreakerCooldown: 30 * time.Second,
			ToolMaxSteps: 5, ToolTimeout: 10 * time.Second, UsageFlush: time.Second, CacheTTL: time.Hour,
		}),
		Conversations: Conversations{StreamTTL: 24 * time.Hour, ContextWindow: 32768, TitleModel: "default", MaxFollowers: 1000, ReplyLease: 6 * time.Second},
		Notifications: Notifications{LongJob: 30 * time.Second},
		Retention:     Retention{DeletedPromptsDays: 30, DeletedConversationsDays: 7, FinishedJobsDays: 7, FailedJobsDays: 30},
		Privacy:       Privacy{ExportLinkTTL: 24 * time.Hour, ExportMaxBytes: 512 << 20, EraseGrace: 14 * 24 * time.Hour},
		RAG: RAG{EmbeddingModel: "default", Dimensions: 256, ChunkMaxTokens: 300, ChunkOverlap: 40, MaxDocumentBytes: 10 << 20,
			MaxDocumentPages: 2000, EmbedBatch: 64, HNSWEfSearch: 100, HNSWMaxScanTuples: 20000, ExactSearchBelow: 20000, RRFK: 60,
			HybridVectorWeight: 1, HybridFulltextWeight: 1, HybridCandidates: 40, AnswerK: 8, AnswerTokens: 4096, Qdrant: Qdrant{CollectionPrefix: "kiln_chunks"}},
		Billing: Billing{DefaultPlan: "free", ReservationTTL: 15 * time.Minute, CacheTTL: 5 * time.Second, GracePeriod: 7 * 24 * time.Hour,
			OrderExpiry: 30 * time.Minute, OrderQueryAfter: 5 * time.Minute, Invoices: Invoices{IssuerID: "default", NumberPrefix: "INV-", SellerName: "Kiln", Font: DefaultInvoiceFont}, Plans: map[string]Plan{
				"free": {Name: "Free", Prices: map[string]map[string]int64{}, Features: map[string]bool{}, Limits: map[string]PlanLimit{
					"tokens": {Value: 1_000_000, Overage: "block"}, "requests_per_minute": {Value: 60, Overage: "block"},
					"seats": {Value: 3, Overage: "block"}, "knowledge_bases": {Value: 3, Overage: "block"},
					"documents": {Value: 100, Overage: "block"}, "storage_bytes": {Value: 100 << 20, Overage: "block"},
				}},
			}},
	}
}

// Key describes one configuration key for documentation and env mapping.
type Key struct {
	Path    string // dotted YAML path, e.g. http.addr
	Env     string // environment variable, e.g. KILN_HTTP_ADDR
	Default string
	Doc     string
	Secret  bool
}

// clientVariables are the variables a client of Kiln reads (the README's quick start
// exports them, the SDK examples use them): a shell that has them can still run kiln.
var clientVariables = map[string]bool{"KILN_API_KEY": true, "KILN_BASE_URL": true}

// aliases are conventional environment variables accepted beside the KILN_ ones.
var aliases = map[string]string{
	"DATABASE_URL": "database.url", "REDIS_URL": "redis.url",
	"OTEL_EXPORTER_OTLP_ENDPOINT": "otel.endpoint", "OTEL_EXPORTER_OTLP_PROTOCOL": "otel.protocol", "OTEL_SERVICE_NAME": "otel.service_name",
	"SENTRY_DSN": "sentry.dsn",
}

// Keys lists every configuration key with its env name and default, in declaration order.
func Keys() []Key {
	var keys []Key
	eachField(Default(), func(path string, f reflect.StructField, v reflect.Value) {
		k := Key{Path: path, Doc: f.Tag.Get("doc"), Secret: f.Tag.Get("secret") == "true", Default: fmt.Sprint(v.Interface())}
		switch f.Type.Kind() {
		case reflect.Map:
			k.Default = "{}" // maps and lists are set in YAML only
		case reflect.Slice:
			k.Default = "[]"
		default:
			k.Env = "KILN_" + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
		}
		keys = append(keys, k)
	})
	return keys
}

// eachField calls fn for every leaf field of c with its dotted path.
func eachField(c Config, fn func(path string, f reflect.StructField, v reflect.Value)) {
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			path := f.Tag.Get("koanf")
			if prefix != "" {
				path = prefix + "." + path
			}
			if f.Type.Kind() == reflect.Struct {
				walk(path, v.Field(i))
				continue
			}
			fn(path, f, v.Field(i))
		}
	}
	walk("", reflect.ValueOf(c))
}

// Load builds the configuration from defaults, the YAML file at path (if not empty) and the
// environment (a list of KEY=value). Unknown keys, malformed values and invalid settings
// are all reported in one error, each naming its key.
func Load(path string, environ []string) (Config, error) {
	k := koanf.New(".")
	// The dev catalog is the default only as a whole: a configured provider list replaces
	// it, so its aliases must not merge into the configured ones.
	defaults := Default()
	defaults.LLM.Providers, defaults.LLM.Models = []LLMProvider{}, map[string]LLMModel{}
	if err := k.Load(confmap.Provider(toMap(defaults), "."), nil); err != nil {
		return Config{}, fmt.Errorf("load defaults: %w", err)
	}
	if path != "" {
		if _, err := os.Stat(path); err != nil {
			return Config{}, fmt.Errorf("config file: %w", err)
		}
		raw, err := os.ReadFile(path) //nolint:gosec // the operator names the config file
		if err != nil {
			return Config{}, fmt.Errorf("config file: %w", err)
		}
		expanded, missing := expandEnv(raw, environ)
		if len(missing) > 0 {
			return Config{}, fmt.Errorf("config file %s: environment variables not set: %s", path, strings.Join(missing, ", "))
		}
		if err := k.Load(rawbytes.Provider(expanded), yaml.Parser()); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	var problems []string
	byEnv := map[string]string{}
	for _, key := range Keys() {
		if key.Env != "" {
			byEnv[key.Env] = key.Path
		}
	}
	envValues := map[string]any{}
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if p, ok := aliases[name]; ok && value != "" {
			envValues[p] = value
		}
	}
	for _, kv := range environ { // KILN_* wins over the conventional aliases
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "KILN_") || name == "KILN_CONFIG" || clientVariables[name] {
			continue
		}
		p, ok := byEnv[name]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: unknown environment variable", name))
			continue
		}
		envValues[p] = value
	}
	if err := k.Load(confmap.Provider(envValues, "."), nil); err != nil {
		return Config{}, fmt.Errorf("load environment: %w", err)
	}

	var cfg Config
	dec := koanf.UnmarshalConf{Tag: "koanf", DecoderConfig: &mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			secondsToDuration,
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.TextUnmarshallerHookFunc()),
		ErrorUnused:      true,
		WeaklyTypedInput: true,
		Result:           &cfg,
		TagName:          "koanf",
	}}
	if err := k.UnmarshalWithConf("", &cfg, dec); err != nil {
		problems = append(problems, decodeProblems(err)...)
	}
	if len(cfg.LLM.Providers) == 0 && len(cfg.LLM.Models) == 0 {
		cfg.LLM = devLLM(cfg.LLM)
	}
	for _, p := range cfg.validate() {
		key, _, _ := strings.Cut(p, ":")
		if !slices.ContainsFunc(problems, func(q string) bool { return strings.Contains(q, "'"+key+"'") }) {
			problems = append(problems, p) // a key that failed to decode is reported once
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		return Config{}, fmt.Errorf("invalid configuration:\n  %s", strings.Join(problems, "\n  "))
	}
	return cfg, nil
}

// secondsToDuration reads a bare number given for a duration as seconds: without it a
// YAML 31536000 would decode as nanoseconds and an environment "31536000" would fail
// for want of a unit.
func secondsToDuration(_, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[time.Duration]() {
		return data, nil
	}
	switch v := data.(type) {
	case int:
		return time.Duration(v) * time.Second, nil
	case int64:
		return time.Duration(v) * time.Second, nil
	case float64:
		return time.Duration(v * float64(time.Second)), nil
	case string:
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return time.Duration(n) * time.Second, nil
		}
	}
	return data, nil
}

// decodeProblems splits mapstructure's joined errors, one line per bad key. Unknown keys,
// which mapstructure groups under their parent ("'http' has invalid keys: a, b"), are
// named by their full dotted path.
func decodeProblems(err error) []string {
	var p []string
	for line := range strings.SplitSeq(err.Error(), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "decoding failed due to the following error") {
			continue
		}
		if parent, keys, ok := unusedKeys(line); ok {
			for key := range strings.SplitSeq(keys, ", ") {
				if parent != "" {
					key = parent + "." + key
				}
				p = append(p, key+": unknown key")
			}
			continue
		}
		p = append(p, line)
	}
	return p
}

// unusedKeys parses mapstructure's "'<parent>' has invalid keys: <k1>, <k2>".
func unusedKeys(line string) (parent, keys string, ok bool) {
	rest, found := strings.CutPrefix(line, "'")
	if !found {
		return "", "", false
	}
	parent, keys, found = strings.Cut(rest, "' has invalid keys: ")
	if !found || strings.Contains(parent, "'") {
		return "", "", false
	}
	return parent, keys, true
}

func (c Config) validate() []string {
	var p []string
	bad := func(key, format string, args ...any) { p = append(p, key+": "+fmt.Sprintf(format, args...)) }
	p = append(p, c.Billing.validate()...)
	p = append(p, c.OTel.validate()...)
	p = append(p, c.Sentry.validate()...)
	p = append(p, c.Retention.validate()...)
	if c.Env == "" {
		bad("env", "must not be empty")
	}
	if c.HTTP.Addr == "" {
		bad("http.addr", "must not be empty")
	}
	if c.Metrics.Listen != "" {
		if _, port, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			bad("metrics.listen", "must be host:port or :port, got %q", c.Metrics.Listen)
		} else if c.Metrics.Listen == c.HTTP.Addr && port != "0" {
			bad("metrics.listen", "must differ from http.addr (%q); leave it empty to serve /metrics there", c.HTTP.Addr)
		}
	}
	for key, d := range map[string]time.Duration{
		"http.read_header_timeout":     c.HTTP.ReadHeaderTimeout,
		"http.read_timeout":            c.HTTP.ReadTimeout,
		"http.idle_timeout":            c.HTTP.IdleTimeout,
		"http.request_timeout":         c.HTTP.RequestTimeout,
		"http.shutdown_timeout":        c.HTTP.ShutdownTimeout,
		"worker.housekeeping_interval": c.Worker.HousekeepingInterval,
		"jobs.poll_interval":           c.Jobs.PollInterval,
		"jobs.reconcile_interval":      c.Jobs.ReconcileInterval,
		"jobs.heartbeat":               c.Jobs.Heartbeat,
		"flags.cache_ttl":              c.Flags.CacheTTL,
		"auth.access_token_ttl":        c.Auth.AccessTokenTTL,
		"auth.session_ttl":             c.Auth.SessionTTL,
		"auth.refresh_reuse_grace":     c.Auth.RefreshReuseGrace,
		"auth.api_key_cache_ttl":       c.Auth.APIKeyCacheTTL,
		"billing.reservation_ttl":      c.Billing.ReservationTTL,
		"billing.cache_ttl":            c.Billing.CacheTTL,
		"billing.grace_period":         c.Billing.GracePeriod,
		"billing.order_expiry":         c.Billing.OrderExpiry,
		"billing.order_query_after":    c.Billing.OrderQueryAfter,
	} {
		if d <= 0 {
			bad(key, "must be a positive duration, got %s", d)
		}
	}
	if inv := c.Billing.Invoices; inv.TaxRateBP < 0 || inv.TaxRateBP > 10000 {
		bad("billing.invoices.tax_rate_bp", "must be between 0 and 10000, got %d", inv.TaxRateBP)
	}
	if g := c.Privacy.EraseGrace; g < time.Hour || g > 2160*time.Hour {
		bad("privacy.erase_grace", "must be between 1h and 2160h (90 days), got %s", g)
	}
	if c.Billing.Invoices.IssuerID == "" {
		bad("billing.invoices.issuer_id", "must not be empty")
	}
	if c.HTTP.MaxHeaderBytes < 4<<10 {
		bad("http.max_header_bytes", "must be at least 4096, got %d", c.HTTP.MaxHeaderBytes)
	}
	if _, err := ParsePrefixes(c.HTTP.TrustedProxies); err != nil {
		bad("http.trusted_proxies", "%v", err)
	}
	if _, err := ParseOrigins(c.HTTP.CORS.AllowedOrigins); err != nil {
		bad("http.cors.allowed_origins", "%v", err)
	}
	for key, r := range map[string]Rate{"ratelimit.api.per_key": c.RateLimit.API.PerKey, "ratelimit.api.per_user": c.RateLimit.API.PerUser, "ratelimit.api.per_org": c.RateLimit.API.PerOrg} {
		if r.Rate < 0 || r.Burst < 0 || (r.Rate > 0 && r.Burst < 1) {
			bad(key, "rate must not be negative, and burst at least 1 when rate is set; got rate %d, burst %d", r.Rate, r.Burst)
		}
	}
	if c.HTTP.HSTSMaxAge < 0 {
		bad("http.hsts_max_age", "must not be negative, got %s", c.HTTP.HSTSMaxAge)
	}
	if c.HTTP.CORS.MaxAge < 0 || c.HTTP.CORS.MaxAge > 24*time.Hour {
		bad("http.cors.max_age", "must be between 0s and 24h, got %s", c.HTTP.CORS.MaxAge)
	}
	if c.HTTP.MaxBodyBytes < 1<<10 {
		bad("http.max_body_bytes", "must be at least 1024, got %d", c.HTTP.MaxBodyBytes)
	}
	if u, err := url.Parse(c.Database.URL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		bad("database.url", "must be a postgres:// URL")
	}
	if c.Database.MaxConns < 1 {
		bad("database.max_conns", "must be at least 1, got %d", c.Database.MaxConns)
	}
	if u, err := url.Parse(c.Redis.URL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
		bad("redis.url", "must be a redis:// or rediss:// URL")
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		bad("log.level", "must be debug, info, warn or error, got %q", c.Log.Level)
	}
	if c.Auth.Issuer == "" || c.Auth.Audience == "" {
		bad("auth.issuer", "issuer and audience must not be empty")
	}
	if r := c.Auth.SigningKeyRotation; r != 0 && r < time.Hour {
		bad("auth.signing_key_rotation", "must be 0 (no scheduled rotation) or at least 1h, got %s", r)
	}
	if c.Auth.PasswordMinLength < 8 || c.Auth.PasswordMinLength > 128 {
		bad("auth.password_min_length", "must be between 8 and 128, got %d", c.Auth.PasswordMinLength)
	}
	if c.Auth.Argon2Memory < 8*1024 || c.Auth.Argon2Time < 1 || c.Auth.Argon2Threads < 1 {
		bad("auth.argon2_memory_kib", "argon2id needs at least 8192 KiB, 1 pass and 1 lane")
	}
	if !apiKeyEnv.MatchString(c.Auth.APIKeyEnv) {
		bad("auth.api_key_env", "must be 1–8 characters of a-z0-9, got %q", c.Auth.APIKeyEnv)
	}
	if c.Secrets.MasterKeys == "" && strings.HasPrefix(c.Env, "prod") {
		bad("secrets.master_keys", "required when env is %q: without it a public development key would encrypt secrets", c.Env)
	}
	if c.Mail.SMTPURL != "" {
		if u, err := url.Parse(c.Mail.SMTPURL); err != nil || (u.Scheme != "smtp" && u.Scheme != "smtps") || u.Host == "" {
			bad("mail.smtp_url", "must be an smtp:// or smtps:// URL")
		}
	}
	if _, err := mail.ParseAddress(c.Mail.From); err != nil {
		bad("mail.from", "must be an email address, e.g. Kiln <no-reply@example.com>")
	}
	if u, err := url.Parse(c.Mail.LinkBase); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("mail.link_base", "must be an http(s) URL")
	}
	p = append(p, c.LLM.validate()...)
	if c.Conversations.StreamTTL < c.LLM.StreamTimeout+time.Minute { // a reply's events must outlive the reply and its storing
		bad("conversations.stream_ttl", "must be at least llm.stream_timeout + 1m (%s), got %s", c.LLM.StreamTimeout+time.Minute, c.Conversations.StreamTTL)
	}
	if _, ok := c.LLM.Models[c.RAG.EmbeddingModel]; !ok {
		bad("rag.embedding_model", "names no alias of llm.models: %q", c.RAG.EmbeddingModel)
	}
	if !slices.Contains([]int{256, 384, 512, 768, 1024, 1536, 3072}, c.RAG.Dimensions) {
		bad("rag.dimensions", "must be 256, 384, 512, 768, 1024, 1536 or 3072, got %d", c.RAG.Dimensions)
	}
	if c.RAG.ChunkMaxTokens < 32 || c.RAG.ChunkMaxTokens > 8192 {
		bad("rag.chunk_max_tokens", "must be 32 to 8192, got %d", c.RAG.ChunkMaxTokens)
	}
	if c.RAG.ChunkOverlap < 0 || c.RAG.ChunkOverlap >= c.RAG.ChunkMaxTokens {
		bad("rag.chunk_overlap", "must be at least 0 and less than rag.chunk_max_tokens, got %d", c.RAG.ChunkOverlap)
	}
	for key, n := range map[string]int64{"rag.max_document_bytes": c.RAG.MaxDocumentBytes, "rag.max_document_pages": int64(c.RAG.MaxDocumentPages), "rag.embed_batch": int64(c.RAG.EmbedBatch),
		"rag.hnsw_ef_search": int64(c.RAG.HNSWEfSearch), "rag.hnsw_max_scan_tuples": int64(c.RAG.HNSWMaxScanTuples), "rag.hybrid_candidates": int64(c.RAG.HybridCandidates),
		"rag.answer_k": int64(c.RAG.AnswerK), "rag.answer_tokens": int64(c.RAG.AnswerTokens)} {
		if n < 1 {
			bad(key, "must be at least 1, got %d", n)
		}
	}
	if c.RAG.ExactSearchBelow < 0 {
		bad("rag.exact_search_below", "must not be negative, got %d", c.RAG.ExactSearchBelow)
	}
	if c.RAG.RRFK <= 0 {
		bad("rag.rrf_k", "must be positive, got %v", c.RAG.RRFK)
	}
	if c.RAG.HybridVectorWeight < 0 || c.RAG.HybridFulltextWeight < 0 || c.RAG.HybridVectorWeight+c.RAG.HybridFulltextWeight == 0 {
		bad("rag.hybrid_vector_weight", "the hybrid weights must not be negative, and not both 0")
	}
	if q := c.RAG.Qdrant; q.URL != "" {
		if u, err := url.Parse(q.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || (u.Path != "" && u.Path != "/") {
			bad("rag.qdrant.url", "must be http://host:port or https://host:port (Qdrant's gRPC port, 6334 by default), got %q", q.URL)
		}
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`).MatchString(c.RAG.Qdrant.CollectionPrefix) {
		bad("rag.qdrant.collection_prefix", "must be 1 to 64 letters, digits, '_' or '-', got %q", c.RAG.Qdrant.CollectionPrefix)
	}
	if c.Privacy.ExportLinkTTL < time.Minute || c.Privacy.ExportLinkTTL > 720*time.Hour {
		bad("privacy.export_link_ttl", "must be between 1m and 720h, got %s", c.Privacy.ExportLinkTTL)
	}
	if c.Privacy.ExportMaxBytes < 1<<20 || c.Privacy.ExportMaxBytes > 1<<30 {
		bad("privacy.export_max_bytes", "must be between 1048576 (1 MiB) and 1073741824 (1 GiB), got %d", c.Privacy.ExportMaxBytes)
	}
	if u := c.Privacy.PublicURL; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" || pu.RawQuery != "" {
			bad("privacy.public_url", "must be an http(s) URL without a query, got %q", u)
		}
	}
	if c.Notifications.LongJob < 0 {
		bad("notifications.long_job", "must not be negative, got %s", c.Notifications.LongJob)
	}
	if c.Conversations.ReplyLease < time.Second {
		bad("conversations.reply_lease", "must be at least 1s, got %s", c.Conversations.ReplyLease)
	}
	if c.Conversations.MaxFollowers < 1 {
		bad("conversations.max_followers", "must be at least 1, got %d", c.Conversations.MaxFollowers)
	}
	if c.Conversations.ContextWindow < 1024 {
		bad("conversations.context_window", "must be at least 1024, got %d", c.Conversations.ContextWindow)
	}
	if _, ok := c.LLM.Models[c.Conversations.TitleModel]; c.Conversations.TitleModel != "" && !ok {
		bad("conversations.title_model", "names no alias of llm.models: %q", c.Conversations.TitleModel)
	}
	for name, k := range c.Jobs.Kinds {
		key := "jobs.kinds." + name
		if !jobQueue.MatchString(k.Queue) && k.Queue != "" {
			bad(key+".queue", "must be 1–64 characters of a-z0-9_-, got %q", k.Queue)
		}
		if k.MaxAttempts < 0 || k.MaxAttempts > 100 {
			bad(key+".max_attempts", "must be between 1 and 100, got %d", k.MaxAttempts)
		}
		for field, d := range map[string]time.Duration{"timeout": k.Timeout, "backoff_base": k.BackoffBase, "backoff_max": k.BackoffMax, "unique": k.Unique} {
			if d < 0 {
				bad(key+"."+field, "must be a positive duration, got %s", d)
			}
		}
	}
	for name, sc := range c.Jobs.Schedules {
		key := "jobs.schedules." + name
		if !jobScheduleName.MatchString(name) {
			bad(key, "the name must be 1–64 characters of a-z0-9_.- starting with a letter or digit")
		}
		if strings.TrimSpace(sc.Cron) == "" {
			bad(key+".cron", "is required (five fields, or @hourly, @every 10m, …)")
		}
		if sc.Kind == "" {
			bad(key+".kind", "is required (a job kind)")
		}
		if _, err := time.LoadLocation(sc.Timezone); sc.Timezone != "" && (err != nil || sc.Timezone == "Local") {
			bad(key+".timezone", "is not an IANA time zone: %q", sc.Timezone)
		}
	}
	if c.Worker.Concurrency < 1 {
		bad("worker.concurrency", "must be at least 1, got %d", c.Worker.Concurrency)
	}
	return p
}

// jobScheduleName is a schedule's name.
var jobScheduleName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// jobQueue is a job queue's name (without the env prefix).
var jobQueue = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

func (l LLM) validate() []string {
	var p []string
	bad := func(key, format string, args ...any) { p = append(p, key+": "+fmt.Sprintf(format, args...)) }
	for key, d := range map[string]time.Duration{
		"llm.stream_timeout": l.StreamTimeout, "llm.timeout": l.Timeout, "llm.max_retry_after": l.MaxRetryAfter,
		"llm.breaker_cooldown": l.BreakerCooldown, "llm.tool_timeout": l.ToolTimeout, "llm.usage_flush_interval": l.UsageFlush,
		"llm.cache_ttl": l.CacheTTL,
	} {
		if d <= 0 {
			bad(key, "must be a positive duration, got %s", d)
		}
	}
	for key, n := range map[string]int{"llm.max_tokens": l.MaxTokens, "llm.breaker_failures": l.BreakerFailures, "llm.tool_max_steps": l.ToolMaxSteps} {
		if n < 1 {
			bad(key, "must be at least 1, got %d", n)
		}
	}
	if l.Retries < 0 || l.Retries > 5 {
		bad("llm.retries", "must be between 0 and 5, got %d", l.Retries)
	}
	providers := map[string]bool{}
	for i, pr := range l.Providers {
		key := fmt.Sprintf("llm.providers[%d]", i)
		switch {
		case !providerName.MatchString(pr.Name):
			bad(key+".name", "must be 1–64 characters of a-z0-9_-, got %q", pr.Name)
		case providers[pr.Name]:
			bad(key+".name", "duplicates provider %q", pr.Name)
		}
		providers[pr.Name] = true
		if !slices.Contains(ProviderTypes, pr.Type) {
			bad(key+".type", "must be one of %s, got %q", strings.Join(ProviderTypes, ", "), pr.Type)
		}
		if pr.BaseURL != "" {
			if u, err := url.Parse(pr.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad(key+".base_url", "must be an http(s) URL")
			}
		} else if pr.Type == "azure_openai" || pr.Type == "openai_compatible" {
			bad(key+".base_url", "is required for type %s", pr.Type)
		}
	}
	if _, ok := l.Models["default"]; !ok {
		bad("llm.models", "must define the alias \"default\"")
	}
	for alias, m := range l.Models {
		key := "llm.models." + alias
		if !providerName.MatchString(alias) && !strings.ContainsAny(alias, "./:") {
			bad(key, "an alias is 1–64 characters of a-z0-9_-./:")
		}
		if len(m.Targets) == 0 {
			bad(key+".targets", "must list at least one target")
		}
		for i, t := range m.Targets {
			tkey := fmt.Sprintf("%s.targets[%d]", key, i)
			if !providers[t.Provider] {
				bad(tkey+".provider", "names no configured provider: %q", t.Provider)
			}
			if t.Model == "" {
				bad(tkey+".model", "must not be empty")
			}
			if t.Weight < 0 || t.MaxConcurrency < 0 || t.Timeout < 0 {
				bad(tkey, "weight, max_concurrency and timeout must not be negative")
			}
			if t.Price.Input < 0 || t.Price.Output < 0 || t.Price.Cached < 0 {
				bad(tkey+".price", "prices must not be negative")
			}
		}
		if m.ContextWindow < 0 {
			bad(key+".context_window", "must not be negative")
		}
	}
	return p
}

var providerName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// envRef matches ${NAME} in a configuration file.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces each ${NAME} in a configuration file with the variable's value from
// environ; it returns the names that are not set. Only the braced form is expanded, so a
// literal $ in a password stays as it is.
func expandEnv(raw []byte, environ []string) ([]byte, []string) {
	env := map[string]string{}
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		env[name] = value
	}
	var missing []string
	out := envRef.ReplaceAllFunc(raw, func(m []byte) []byte {
		name := string(m[2 : len(m)-1])
		v, ok := env[name]
		if !ok {
			if !slices.Contains(missing, name) {
				missing = append(missing, name)
			}
			return m
		}
		return []byte(v)
	})
	return out, missing
}

// ParsePrefixes reads a comma-separated list of CIDRs (a bare address is a /32 or /128).
func ParsePrefixes(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for part := range strings.SplitSeq(list, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if addr, err := netip.ParseAddr(part); err == nil {
			out = append(out, netip.PrefixFrom(addr, addr.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR or an address", part)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Origin is an entry of http.cors.allowed_origins: an exact origin (scheme://host[:port],
// lower case, default port dropped, as browsers send it) or a pattern where * stands for
// any run of characters but "/" (path.Match, as coder/websocket matches OriginPatterns). A
// pattern with a scheme is matched against "scheme://host[:port]", one without against
// "host[:port]" only.
type Origin struct {
	Value string
	Exact bool
}

// ParseOrigins reads a comma-separated list of allowed origins. A pattern may use * only,
// so IPv6 origins are written exactly; an exact origin needs its scheme, so that
// "app.example.com" is not mistaken for one.
func ParseOrigins(list string) ([]Origin, error) {
	var out []Origin
	for part := range strings.SplitSeq(list, ",") {
		part = strings.ToLower(strings.TrimSpace(part))
		if part == "" {
			continue
		}
		if strings.ContainsAny(part, "*") {
			scheme, host, hasScheme := strings.Cut(part, "://")
			if !hasScheme {
				scheme, host = "", part
			}
			if strings.ContainsAny(host, "/?#@[]\\") || strings.Contains(scheme, "*") || (hasScheme && scheme != "http" && scheme != "https") {
				return nil, fmt.Errorf("%q is not an origin pattern (*.example.com, https://*.example.com)", part)
			}
			out = append(out, Origin{Value: part})
			continue
		}
		u, err := url.Parse(part)
		if err != nil || u.Scheme == "" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
			return nil, fmt.Errorf("%q is not an origin: write scheme://host[:port] (https://app.example.com), or a pattern with *", part)
		}
		host := u.Host
		if (u.Scheme == "https" && u.Port() == "443") || (u.Scheme == "http" && u.Port() == "80") {
			host = strings.TrimSuffix(host, ":"+u.Port())
		}
		out = append(out, Origin{Value: u.Scheme + "://" + host, Exact: true})
	}
	return out, nil
}

// validate checks the exporter's endpoint and protocol and the sampling ratio.
func (o OTel) validate() []string {
	var p []string
	if o.Endpoint != "" {
		if u, err := url.Parse(o.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p = append(p, "otel.endpoint: must be an http:// or https:// URL (http://collector:4318)")
		}
	}
	if o.Protocol != "http/protobuf" && o.Protocol != "grpc" {
		p = append(p, fmt.Sprintf("otel.protocol: must be http/protobuf or grpc, got %q", o.Protocol))
	}
	if o.ServiceName == "" {
		p = append(p, "otel.service_name: must not be empty")
	}
	if o.SampleRatio < 0 || o.SampleRatio > 1 {
		p = append(p, fmt.Sprintf("otel.sample_ratio: must be between 0 and 1, got %g", o.SampleRatio))
	}
	return p
}

// validate checks the DSN's shape and the sample rate.
func (s Sentry) validate() []string {
	var p []string
	if s.DSN != "" {
		if u, err := url.Parse(s.DSN); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User == nil {
			p = append(p, "sentry.dsn: must be a DSN, https://<key>@<host>/<project>")
		}
	}
	if s.SampleRate < 0 || s.SampleRate > 1 {
		p = append(p, fmt.Sprintf("sentry.sample_rate: must be between 0 and 1, got %g", s.SampleRate))
	}
	return p
}

var apiKeyEnv = regexp.MustCompile(`^[a-z0-9]{1,8}$`)

// Masked returns a copy with every secret (passwords inside URLs) replaced by "****".
func (c Config) Masked() Config {
	c.Database.URL = maskURL(c.Database.URL)
	c.Redis.URL = maskURL(c.Redis.URL)
	if c.Secrets.MasterKeys != "" {
		c.Secrets.MasterKeys = "****"
	}
	if c.Mail.SMTPURL != "" {
		c.Mail.SMTPURL = maskURL(c.Mail.SMTPURL)
	}
	if c.RAG.Qdrant.APIKey != "" {
		c.RAG.Qdrant.APIKey = "****"
	}
	if c.Sentry.DSN != "" {
		c.Sentry.DSN = "****" // its user part is the project's key
	}
	for _, secret := range []*string{&c.Billing.WeChatPay.MerchantKey, &c.Billing.WeChatPay.APIv3Key, &c.Billing.Alipay.PrivateKey, &c.Metrics.Token,
		&c.Billing.Stripe.SecretKey, &c.Billing.Stripe.WebhookSecret} {
		if *secret != "" {
			*secret = "****"
		}
	}
	providers := make([]OAuthProvider, len(c.Auth.OAuth.Providers))
	for i, p := range c.Auth.OAuth.Providers {
		if p.ClientSecret != "" {
			p.ClientSecret = "****"
		}
		providers[i] = p
	}
	c.Auth.OAuth.Providers = providers
	llmProviders := make([]LLMProvider, len(c.LLM.Providers))
	for i, p := range c.LLM.Providers {
		if p.APIKey != "" {
			p.APIKey = "****"
		}
		if p.BearerToken != "" {
			p.BearerToken = "****"
		}
		if len(p.Headers) > 0 { // headers may carry credentials too
			masked := make(map[string]string, len(p.Headers))
			for k := range p.Headers {
				masked[k] = "****"
			}
			p.Headers = masked
		}
		llmProviders[i] = p
	}
	c.LLM.Providers = llmProviders
	return c
}

func maskURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "****"
	}
	const mask = "MASKED"
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), mask)
	}
	q := u.Query()
	for _, secret := range []string{"password", "sslpassword"} {
		if q.Has(secret) {
			q.Set(secret, mask)
		}
	}
	u.RawQuery = q.Encode()
	return strings.ReplaceAll(u.String(), mask, "****")
}

// toMap flattens a Config into koanf's dotted map, so defaults go through the same decoder.
func toMap(c Config) map[string]any {
	m := map[string]any{}
	eachField(c, func(path string, _ reflect.StructField, v reflect.Value) {
		if d, ok := v.Interface().(time.Duration); ok {
			m[path] = d.String()
			return
		}
		m[path] = v.Interface()
	})
	return m
}

// Tree returns the configuration as nested maps keyed like the YAML file, durations as
// strings, for printing.
func (c Config) Tree() map[string]any {
	k := koanf.New(".")
	_ = k.Load(confmap.Provider(toMap(c), "."), nil) // a flat map of plain values cannot fail
	return k.Raw()
}

// PlanLimitNames are the limits a plan may set.
var PlanLimitNames = []string{"tokens", "requests_per_minute", "seats", "knowledge_bases", "documents", "storage_bytes"}

var planID = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,63}$`)

// validate checks billing.*: the default plan exists, and each plan's ids, intervals,
// currencies, limit names, values and overage policies.
func (b Billing) validate() []string {
	var p []string
	bad := func(key, format string, args ...any) { p = append(p, key+": "+fmt.Sprintf(format, args...)) }
	if _, ok := b.Plans[b.DefaultPlan]; !ok {
		bad("billing.default_plan", "names no plan of billing.plans: %q", b.DefaultPlan)
	}
	for id, plan := range b.Plans {
		key := "billing.plans." + id
		if !planID.MatchString(id) {
			bad(key, "a plan id is lowercase letters, digits, _ and -, starting with a letter")
		}
		if plan.Name == "" {
			bad(key+".name", "must not be empty")
		}
		for interval, byCurrency := range plan.Prices {
			if interval != "month" && interval != "year" {
				bad(key+".prices."+interval, "interval must be month or year")
			}
			for cur, amount := range byCurrency {
				if cur != "USD" && cur != "CNY" {
					bad(key+".prices."+interval+"."+cur, "currency must be USD or CNY")
				}
				if amount < 0 {
					bad(key+".prices."+interval+"."+cur, "must not be negative, got %d", amount)
				}
			}
		}
		for interval, byCurrency := range plan.StripePrices {
			for cur, price := range byCurrency {
				pk := key + ".stripe_prices." + interval + "." + cur
				if amount, ok := plan.Prices[interval][cur]; !ok || amount <= 0 {
					bad(pk, "needs a price of %s.prices.%s.%s", key, interval, cur)
				}
				if !strings.HasPrefix(price, "price_") {
					bad(pk, "must be a Stripe Price id (price_…), got %q", price)
				}
			}
		}
		for name, l := range plan.Limits {
			lk := key + ".limits." + name
			if !slices.Contains(PlanLimitNames, name) {
				bad(lk, "unknown limit (one of %s)", strings.Join(PlanLimitNames, ", "))
			}
			if l.Value < 0 {
				bad(lk+".value", "must not be negative, got %d", l.Value)
			}
			if name == "requests_per_minute" && l.Overage != "block" {
				bad(lk+".overage", "must be block for requests_per_minute (a rate is refused past its limit, never billed)")
			}
			switch l.Overage {
			case "block", "allow_and_alert":
			case "allow_and_bill":
				if l.UnitPrice <= 0 {
					bad(lk+".unit_price", "must be positive with overage allow_and_bill")
				}
			default:
				bad(lk+".overage", "must be block, allow_and_bill or allow_and_alert, got %q", l.Overage)
			}
		}
	}
	if w := b.WeChatPay; w.MchID != "" {
		for key, v := range map[string]string{"app_id": w.AppID, "merchant_serial": w.MerchantSerial, "merchant_key": w.MerchantKey,
			"api_v3_key": w.APIv3Key, "platform_key": w.PlatformKey, "notify_url": w.NotifyURL} {
			if v == "" {
				bad("billing.wechatpay."+key, "required when billing.wechatpay.mch_id is set")
			}
		}
		if w.APIv3Key != "" && len(w.APIv3Key) != 32 {
			bad("billing.wechatpay.api_v3_key", "must be 32 bytes, got %d", len(w.APIv3Key))
		}
	}
	if st := b.Stripe; st.SecretKey != "" && st.WebhookSecret == "" {
		bad("billing.stripe.webhook_secret", "required when billing.stripe.secret_key is set")
	}
	if a := b.Alipay; a.AppID != "" {
		for key, v := range map[string]string{"private_key": a.PrivateKey, "public_key": a.PublicKey, "notify_url": a.NotifyURL} {
			if v == "" {
				bad("billing.alipay."+key, "required when billing.alipay.app_id is set")
			}
		}
	}
	return p
}
