package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/platform/config"
)

// writeYAML writes body to a config file in the test's temporary directory.
func writeYAML(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kiln.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatalf("write config file: %v", err)
	}
	return path
}

func mustLoad(t *testing.T, path string, environ []string) config.Config {
	t.Helper()
	cfg, err := config.Load(path, environ)
	if err != nil {
		t.Fatalf("Load(%q, %q): %v", path, environ, err)
	}
	return cfg
}

func TestLoad(t *testing.T) {
	t.Parallel()

	const yamlFile = `
env: staging
http:
  addr: ":9000"
  request_timeout: 750ms
database:
  url: postgres://yaml@db.internal:5432/kiln
  max_conns: 7
log:
  level: debug
flags:
  defaults:
    new_editor: true
`

	tests := []struct {
		name    string
		yaml    string // config file body; no file when empty
		environ []string
		check   func(t *testing.T, got config.Config)
	}{
		{
			name: "DefaultsWhenNothingIsSet",
			check: func(t *testing.T, got config.Config) {
				if want := config.Default(); !reflect.DeepEqual(got, want) {
					t.Errorf("got %+v\nwant the defaults %+v", got, want)
				}
			},
		},
		{
			name: "JobSchedules",
			yaml: "jobs:\n  schedules:\n    nightly-report:\n      cron: \"0 3 * * *\"\n      timezone: Asia/Shanghai\n      kind: reports.build\n      payload:\n        format: csv\n        days: 7\n",
			check: func(t *testing.T, got config.Config) {
				sc, ok := got.Jobs.Schedules["nightly-report"]
				if !ok || sc.Cron != "0 3 * * *" || sc.Timezone != "Asia/Shanghai" || sc.Kind != "reports.build" || sc.Payload["format"] != "csv" || sc.Payload["days"] != 7 {
					t.Errorf("schedule = %+v", got.Jobs.Schedules)
				}
			},
		},
		{
			name:    "CORSFromEnv",
			environ: []string{"KILN_HTTP_CORS_ALLOWED_ORIGINS=https://app.example.com, *.example.org", "KILN_HTTP_CORS_MAX_AGE=1h"},
			check: func(t *testing.T, got config.Config) {
				if got.HTTP.CORS.AllowedOrigins != "https://app.example.com, *.example.org" || got.HTTP.CORS.MaxAge != time.Hour {
					t.Errorf("cors = %+v", got.HTTP.CORS)
				}
			},
		},
		{
			name:    "HSTSMaxAgeInSecondsFromEnv",
			environ: []string{"KILN_HTTP_HSTS_MAX_AGE=31536000"},
			check: func(t *testing.T, got config.Config) {
				if got.HTTP.HSTSMaxAge != 365*24*time.Hour {
					t.Errorf("http.hsts_max_age = %s, want 8760h", got.HTTP.HSTSMaxAge)
				}
			},
		},
		{
			name: "BareNumbersAreSecondsInYAML",
			yaml: "http:\n  hsts_max_age: 63072000\n  request_timeout: 45\n",
			check: func(t *testing.T, got config.Config) {
				if got.HTTP.HSTSMaxAge != 2*365*24*time.Hour || got.HTTP.RequestTimeout != 45*time.Second {
					t.Errorf("http.hsts_max_age = %s, http.request_timeout = %s: want 17520h and 45s", got.HTTP.HSTSMaxAge, got.HTTP.RequestTimeout)
				}
			},
		},
		{
			name:    "QdrantFromEnv",
			environ: []string{"KILN_RAG_QDRANT_URL=http://qdrant:6334", "KILN_RAG_QDRANT_API_KEY=qk-secret", "KILN_RAG_QDRANT_COLLECTION_PREFIX=kiln_eu"},
			check: func(t *testing.T, got config.Config) {
				q := got.RAG.Qdrant
				if q.URL != "http://qdrant:6334" || q.APIKey != "qk-secret" || q.CollectionPrefix != "kiln_eu" || got.Masked().RAG.Qdrant.APIKey != "****" {
					t.Errorf("qdrant = %+v, masked %+v", q, got.Masked().RAG.Qdrant)
				}
			},
		},
		{
			name:    "KILNConfigIsNotAnUnknownVariable",
			environ: []string{"KILN_CONFIG=/ignored/here.yaml"},
			check: func(t *testing.T, got config.Config) {
				if got.Env != config.Default().Env {
					t.Errorf("env = %q, want the default", got.Env)
				}
			},
		},
		{
			// The quick start exports them for clients; kiln run in that shell ignores them.
			name:    "ClientVariablesAreNotUnknown",
			environ: []string{"KILN_API_KEY=kiln_dev_x", "KILN_BASE_URL=http://localhost:8080"},
			check: func(t *testing.T, got config.Config) {
				if got.HTTP.Addr != config.Default().HTTP.Addr {
					t.Errorf("http.addr = %q, want the default", got.HTTP.Addr)
				}
			},
		},
		{
			name: "YAMLOverridesDefaults",
			yaml: yamlFile,
			check: func(t *testing.T, got config.Config) {
				if got.Env != "staging" || got.HTTP.Addr != ":9000" || got.Log.Level != "debug" || got.Database.MaxConns != 7 {
					t.Errorf("YAML values not applied: %+v", got)
				}
				if got.HTTP.RequestTimeout != 750*time.Millisecond {
					t.Errorf("http.request_timeout = %s, want 750ms", got.HTTP.RequestTimeout)
				}
				if got.Database.URL != "postgres://yaml@db.internal:5432/kiln" {
					t.Errorf("database.url = %q", got.Database.URL)
				}
				if !got.Flags.Defaults["new_editor"] {
					t.Errorf("flags.defaults = %v, want new_editor: true", got.Flags.Defaults)
				}
				// Keys the file does not mention keep their defaults.
				if def := config.Default(); got.HTTP.ReadTimeout != def.HTTP.ReadTimeout || got.Redis.URL != def.Redis.URL {
					t.Errorf("unset keys lost their defaults: %+v", got)
				}
			},
		},
		{
			name: "EnvOverridesYAML",
			yaml: yamlFile,
			environ: []string{
				"KILN_HTTP_ADDR=127.0.0.1:7000",
				"KILN_LOG_LEVEL=warn",
				"KILN_HTTP_REQUEST_TIMEOUT=2s",
				"KILN_WORKER_CONCURRENCY=3",
				"UNRELATED=ignored",
			},
			check: func(t *testing.T, got config.Config) {
				if got.HTTP.Addr != "127.0.0.1:7000" || got.Log.Level != "warn" || got.Worker.Concurrency != 3 {
					t.Errorf("env values not applied: %+v", got)
				}
				if got.HTTP.RequestTimeout != 2*time.Second {
					t.Errorf("http.request_timeout = %s, want 2s from the env", got.HTTP.RequestTimeout)
				}
				if got.Env != "staging" {
					t.Errorf("env = %q, want the YAML value staging", got.Env)
				}
			},
		},
		{
			name:    "DurationsParse",
			environ: []string{"KILN_HTTP_READ_HEADER_TIMEOUT=750ms", "KILN_WORKER_HOUSEKEEPING_INTERVAL=1h30m", "KILN_FLAGS_CACHE_TTL=90s"},
			check: func(t *testing.T, got config.Config) {
				if got.HTTP.ReadHeaderTimeout != 750*time.Millisecond {
					t.Errorf("http.read_header_timeout = %s, want 750ms", got.HTTP.ReadHeaderTimeout)
				}
				if got.Worker.HousekeepingInterval != 90*time.Minute {
					t.Errorf("worker.housekeeping_interval = %s, want 1h30m", got.Worker.HousekeepingInterval)
				}
				if got.Flags.CacheTTL != 90*time.Second {
					t.Errorf("flags.cache_ttl = %s, want 90s", got.Flags.CacheTTL)
				}
			},
		},
		{
			name:    "AliasesApply",
			yaml:    yamlFile,
			environ: []string{"DATABASE_URL=postgres://alias@db:5432/kiln", "REDIS_URL=rediss://cache:6380/2"},
			check: func(t *testing.T, got config.Config) {
				if got.Database.URL != "postgres://alias@db:5432/kiln" {
					t.Errorf("database.url = %q, want DATABASE_URL over the YAML value", got.Database.URL)
				}
				if got.Redis.URL != "rediss://cache:6380/2" {
					t.Errorf("redis.url = %q, want REDIS_URL", got.Redis.URL)
				}
			},
		},
		{
			name:    "KILNVariableWinsOverAliasListedAfterIt",
			environ: []string{"KILN_DATABASE_URL=postgres://kiln@db/kiln", "DATABASE_URL=postgres://alias@db/kiln"},
			check: func(t *testing.T, got config.Config) {
				if got.Database.URL != "postgres://kiln@db/kiln" {
					t.Errorf("database.url = %q, want KILN_DATABASE_URL", got.Database.URL)
				}
			},
		},
		{
			name:    "KILNVariableWinsOverAliasListedBeforeIt",
			environ: []string{"REDIS_URL=redis://alias:6379/0", "KILN_REDIS_URL=redis://kiln:6379/1"},
			check: func(t *testing.T, got config.Config) {
				if got.Redis.URL != "redis://kiln:6379/1" {
					t.Errorf("redis.url = %q, want KILN_REDIS_URL", got.Redis.URL)
				}
			},
		},
		{
			name:    "EmptyAliasIsIgnored",
			environ: []string{"DATABASE_URL="},
			check: func(t *testing.T, got config.Config) {
				if got.Database.URL != config.Default().Database.URL {
					t.Errorf("database.url = %q, want the default", got.Database.URL)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if tt.yaml != "" {
				path = writeYAML(t, tt.yaml)
			}
			tt.check(t, mustLoad(t, path, tt.environ))
		})
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		yaml     string
		missing  bool // point Load at a file that does not exist
		environ  []string
		wantKeys []string // each must appear in the one error
	}{
		{
			name: "ErrEveryBadKeyNamedAtOnce",
			yaml: "http:\n  listen: \":1\"\nworker:\n  concurency: 4\nnope: 1\n",
			environ: []string{
				"KILN_NOPE=1",
				"KILN_HTTP_READ_TIMEOUT=soon",
				"KILN_LOG_LEVEL=loud",
				"DATABASE_URL=mysql://u:p@db/kiln",
			},
			wantKeys: []string{"http.listen", "worker.concurency", "nope:", "KILN_NOPE", "http.read_timeout", "log.level", "database.url"},
		},
		{
			name:     "ErrJobSchedule",
			yaml:     "jobs:\n  schedules:\n    Bad Name:\n      cron: \"@daily\"\n      kind: x\n    nocron:\n      kind: x\n    nokind:\n      cron: \"@daily\"\n      timezone: Mars/Base\n",
			wantKeys: []string{"jobs.schedules.Bad Name", "jobs.schedules.nocron.cron", "jobs.schedules.nokind.kind", "jobs.schedules.nokind.timezone"},
		},
		{
			name:     "ErrPlanRequestRateNotBlocking",
			yaml:     "billing:\n  plans:\n    free:\n      name: Free\n      limits:\n        requests_per_minute: {value: 60, overage: allow_and_alert}\n",
			wantKeys: []string{"billing.plans.free.limits.requests_per_minute.overage"},
		},
		{
			name:     "ErrCORS",
			environ:  []string{"KILN_HTTP_CORS_ALLOWED_ORIGINS=https://app.example.com/path", "KILN_HTTP_CORS_MAX_AGE=-1s"},
			wantKeys: []string{"http.cors.allowed_origins", "https://app.example.com/path", "http.cors.max_age"},
		},
		{
			name:     "ErrHSTSMaxAge",
			environ:  []string{"KILN_HTTP_HSTS_MAX_AGE=-1h"},
			wantKeys: []string{"http.hsts_max_age"},
		},
		{
			name:     "ErrQdrant",
			environ:  []string{"KILN_RAG_QDRANT_URL=qdrant:6334", "KILN_RAG_QDRANT_COLLECTION_PREFIX=a b"},
			wantKeys: []string{"rag.qdrant.url", "qdrant:6334", "rag.qdrant.collection_prefix"},
		},
		{
			name:     "ErrUnknownYAMLKey",
			yaml:     "http:\n  listen: \":1\"\n",
			wantKeys: []string{"http.listen"},
		},
		{
			name:     "ErrUnknownEnvVar",
			environ:  []string{"KILN_HTTP_LISTEN=:1"},
			wantKeys: []string{"KILN_HTTP_LISTEN"},
		},
		{
			name:     "ErrMapKeyFromEnv",
			environ:  []string{"KILN_FLAGS_DEFAULTS=x"},
			wantKeys: []string{"KILN_FLAGS_DEFAULTS"},
		},
		{
			name:     "ErrMalformedDuration",
			yaml:     "http:\n  idle_timeout: forever\n",
			wantKeys: []string{"http.idle_timeout"},
		},
		{
			name:     "ErrNegativeDuration",
			environ:  []string{"KILN_FLAGS_CACHE_TTL=-1s"},
			wantKeys: []string{"flags.cache_ttl"},
		},
		{
			name:     "ErrMalformedInteger",
			environ:  []string{"KILN_WORKER_CONCURRENCY=many"},
			wantKeys: []string{"worker.concurrency"},
		},
		{
			name:     "ErrStreamTTLShorterThanAReply",
			environ:  []string{"KILN_CONVERSATIONS_STREAM_TTL=5m", "KILN_LLM_STREAM_TIMEOUT=10m"},
			wantKeys: []string{"conversations.stream_ttl"},
		},
		{
			name:     "ErrTitleModelNotAnAlias",
			environ:  []string{"KILN_CONVERSATIONS_TITLE_MODEL=nope", "KILN_CONVERSATIONS_CONTEXT_WINDOW=10"},
			wantKeys: []string{"conversations.context_window", "conversations.title_model"},
		},
		{
			name:     "ErrInvalidLogLevel",
			environ:  []string{"KILN_LOG_LEVEL=loud"},
			wantKeys: []string{"log.level"},
		},
		{
			name:     "ErrNonPostgresDatabaseURL",
			environ:  []string{"KILN_DATABASE_URL=mysql://db/kiln"},
			wantKeys: []string{"database.url"},
		},
		{
			name:     "ErrNonRedisURL",
			environ:  []string{"REDIS_URL=http://cache"},
			wantKeys: []string{"redis.url"},
		},
		{
			name:     "ErrSizeLimitsTooSmall",
			environ:  []string{"KILN_HTTP_MAX_BODY_BYTES=10", "KILN_HTTP_MAX_HEADER_BYTES=10"},
			wantKeys: []string{"http.max_body_bytes", "http.max_header_bytes"},
		},
		{
			name:     "ErrEmptyRequiredValues",
			environ:  []string{"KILN_ENV=", "KILN_HTTP_ADDR=", "KILN_DATABASE_MAX_CONNS=0"},
			wantKeys: []string{"env:", "http.addr", "database.max_conns"},
		},
		{
			name:     "ErrMissingConfigFile",
			missing:  true,
			wantKeys: []string{"config file", "missing.yaml"},
		},
		{
			name:     "ErrMalformedYAML",
			yaml:     "http: [unclosed\n",
			wantKeys: []string{"config file"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			switch {
			case tt.missing:
				path = filepath.Join(t.TempDir(), "missing.yaml")
			case tt.yaml != "":
				path = writeYAML(t, tt.yaml)
			}
			cfg, err := config.Load(path, tt.environ)
			if err == nil {
				t.Fatalf("Load succeeded with %+v, want an error naming %q", cfg, tt.wantKeys)
			}
			for _, key := range tt.wantKeys {
				if !strings.Contains(err.Error(), key) {
					t.Errorf("error does not name %q:\n%v", key, err)
				}
			}
			if !reflect.DeepEqual(cfg, config.Config{}) {
				t.Errorf("Load returned a partial config with its error: %+v", cfg)
			}
		})
	}
}

// A key that fails to decode is reported once, not again by validation as a zero value.
func TestLoadReportsADecodeFailureOnce(t *testing.T) {
	t.Parallel()
	_, err := config.Load("", []string{"KILN_HTTP_IDLE_TIMEOUT=soon"})
	if err == nil {
		t.Fatal("Load succeeded, want an error")
	}
	if n := strings.Count(err.Error(), "http.idle_timeout"); n != 1 {
		t.Errorf("http.idle_timeout named %d times, want once:\n%v", n, err)
	}
}

func TestMasked(t *testing.T) {
	t.Parallel()

	const (
		dbPassword    = "pg-Secret-7f3a"
		queryPassword = "query-Secret-91c2"
		redisPassword = "redis-Secret-c0de"
	)
	tests := []struct {
		name      string
		environ   []string
		wantDB    string
		wantRedis string
		secrets   []string
	}{
		{
			name: "PasswordsHiddenUsersKept",
			environ: []string{
				"DATABASE_URL=postgres://kiln:" + dbPassword + "@db:5432/kiln?sslmode=disable",
				"REDIS_URL=redis://default:" + redisPassword + "@cache:6379/0",
			},
			wantDB:    "postgres://kiln:****@db:5432/kiln?sslmode=disable",
			wantRedis: "redis://default:****@cache:6379/0",
			secrets:   []string{dbPassword, redisPassword},
		},
		{
			name: "PasswordOnlyAndQueryPasswordHidden",
			environ: []string{
				"DATABASE_URL=postgresql://kiln@db/kiln?password=" + queryPassword,
				"REDIS_URL=rediss://:" + redisPassword + "@cache:6380/1",
			},
			wantDB:    "postgresql://kiln@db/kiln?password=****",
			wantRedis: "rediss://:****@cache:6380/1",
			secrets:   []string{queryPassword, redisPassword},
		},
		{
			name:      "URLsWithoutSecretsUnchanged",
			wantDB:    config.Default().Database.URL,
			wantRedis: config.Default().Redis.URL,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := mustLoad(t, "", tt.environ)
			masked := cfg.Masked()
			if masked.Database.URL != tt.wantDB {
				t.Errorf("masked database.url = %q, want %q", masked.Database.URL, tt.wantDB)
			}
			if masked.Redis.URL != tt.wantRedis {
				t.Errorf("masked redis.url = %q, want %q", masked.Redis.URL, tt.wantRedis)
			}
			tree := fmt.Sprintf("%v", masked.Tree())
			for _, secret := range tt.secrets {
				if strings.Contains(tree, secret) {
					t.Errorf("Tree() of the masked config leaks %q: %s", secret, tree)
				}
				if !strings.Contains(cfg.Database.URL+cfg.Redis.URL, secret) {
					t.Errorf("Masked() changed the original config: %+v", cfg)
				}
			}
		})
	}
}

func TestTree(t *testing.T) {
	t.Parallel()
	cfg := mustLoad(t, "", []string{"KILN_HTTP_REQUEST_TIMEOUT=750ms"})
	tree := cfg.Tree()

	httpTree, ok := tree["http"].(map[string]any)
	if !ok {
		t.Fatalf("tree[http] = %T, want a nested map: %v", tree["http"], tree)
	}
	if got := httpTree["request_timeout"]; got != "750ms" {
		t.Errorf("http.request_timeout = %#v, want the string \"750ms\"", got)
	}
	if got := httpTree["addr"]; got != ":8080" {
		t.Errorf("http.addr = %#v, want \":8080\"", got)
	}
	for _, section := range []string{"env", "http", "database", "redis", "log", "worker", "flags"} {
		if _, ok := tree[section]; !ok {
			t.Errorf("tree has no %q: %v", section, tree)
		}
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	keys := config.Keys()
	byPath := map[string]config.Key{}
	envs := map[string]string{}
	for _, k := range keys {
		if _, dup := byPath[k.Path]; dup {
			t.Errorf("path %q listed twice", k.Path)
		}
		byPath[k.Path] = k
		if k.Doc == "" {
			t.Errorf("%s has no doc string", k.Path)
		}
		if k.Env == "" {
			continue
		}
		if other, dup := envs[k.Env]; dup {
			t.Errorf("%s and %s share the env var %s", other, k.Path, k.Env)
		}
		envs[k.Env] = k.Path
	}

	t.Run("HTTPAddrMapsToKILNHTTPAddr", func(t *testing.T) {
		t.Parallel()
		if got := byPath["http.addr"].Env; got != "KILN_HTTP_ADDR" {
			t.Errorf("http.addr env = %q, want KILN_HTTP_ADDR", got)
		}
		if got := byPath["worker.housekeeping_interval"].Env; got != "KILN_WORKER_HOUSEKEEPING_INTERVAL" {
			t.Errorf("worker.housekeeping_interval env = %q", got)
		}
	})
	t.Run("SecretsMarked", func(t *testing.T) {
		t.Parallel()
		for _, path := range []string{"database.url", "redis.url"} {
			if !byPath[path].Secret {
				t.Errorf("%s is not marked secret", path)
			}
		}
		if byPath["http.addr"].Secret {
			t.Error("http.addr is marked secret")
		}
	})
	t.Run("MapsAreYAMLOnly", func(t *testing.T) {
		t.Parallel()
		if k := byPath["flags.defaults"]; k.Env != "" {
			t.Errorf("flags.defaults has env var %q, want none", k.Env)
		}
	})
	t.Run("EveryFieldListed", func(t *testing.T) {
		t.Parallel()
		if got, want := len(keys), countLeaves(reflect.TypeFor[config.Config]()); got != want {
			t.Errorf("Keys() lists %d keys, Config has %d leaf fields", got, want)
		}
	})
	// Every documented env var is accepted by Load and sets its key: setting it to its
	// own default loads cleanly.
	t.Run("EveryEnvVarAccepted", func(t *testing.T) {
		t.Parallel()
		for _, k := range keys {
			if k.Env == "" {
				continue
			}
			if _, err := config.Load("", []string{k.Env + "=" + k.Default}); err != nil {
				t.Errorf("%s=%s: %v", k.Env, k.Default, err)
			}
		}
	})
}

func countLeaves(t reflect.Type) int {
	n := 0
	for f := range t.Fields() {
		if f.Type.Kind() == reflect.Struct {
			n += countLeaves(f.Type)
			continue
		}
		n++
	}
	return n
}

func TestLoadLLM(t *testing.T) {
	t.Parallel()

	t.Run("OKTheDevCatalogWhenNothingIsConfigured", func(t *testing.T) {
		t.Parallel()
		cfg := mustLoad(t, "", nil)
		if len(cfg.LLM.Providers) != 1 || cfg.LLM.Providers[0].Type != "dev" {
			t.Fatalf("providers %+v", cfg.LLM.Providers)
		}
		for _, alias := range []string{"default", "fast", "smart"} {
			if ts := cfg.LLM.Models[alias].Targets; len(ts) != 1 || ts[0].Provider != "dev" {
				t.Errorf("%s: %+v", alias, ts)
			}
		}
	})

	t.Run("OKConfiguredProvidersReplaceTheDevCatalogWithEnvReferences", func(t *testing.T) {
		t.Parallel()
		path := writeYAML(t, `
llm:
  providers:
    - name: local-vllm
      type: openai_compatible
      base_url: http://127.0.0.1:8000/v1
      api_key: ${VLLM_KEY}
      headers: {X-Team: "${TEAM}"}
  models:
    default:
      targets:
        - {provider: local-vllm, model: qwen2.5-7b, weight: 1, timeout: 30s, max_concurrency: 8, price: {input: 0.5, output: 1.5}}
`)
		cfg := mustLoad(t, path, []string{"VLLM_KEY=sk-vllm-secret", "TEAM=ml", "KILN_LLM_RETRIES=2"})
		if len(cfg.LLM.Providers) != 1 || cfg.LLM.Providers[0].APIKey != "sk-vllm-secret" || cfg.LLM.Providers[0].Headers["X-Team"] != "ml" {
			t.Fatalf("providers %+v", cfg.LLM.Providers)
		}
		if _, ok := cfg.LLM.Models["fast"]; ok {
			t.Error("the dev aliases leaked into a configured catalog")
		}
		want := config.LLMTarget{Provider: "local-vllm", Model: "qwen2.5-7b", Weight: 1, Timeout: 30 * time.Second, MaxConcurrency: 8, Price: config.LLMPrice{Input: 0.5, Output: 1.5}}
		if got := cfg.LLM.Models["default"].Targets; len(got) != 1 || got[0] != want {
			t.Errorf("targets %+v, want %+v", got, want)
		}
		if cfg.LLM.Retries != 2 {
			t.Errorf("retries %d", cfg.LLM.Retries)
		}
		masked := fmt.Sprintf("%+v", cfg.Masked().LLM)
		if strings.Contains(masked, "sk-vllm-secret") || strings.Contains(masked, "ml]") {
			t.Errorf("masked config shows a secret: %s", masked)
		}
	})

	t.Run("ErrAMissingEnvironmentVariableIsNamed", func(t *testing.T) {
		t.Parallel()
		path := writeYAML(t, "llm:\n  providers:\n    - {name: a, type: openai, api_key: ${NOT_SET_ANYWHERE}}\n")
		_, err := config.Load(path, nil)
		if err == nil || !strings.Contains(err.Error(), "NOT_SET_ANYWHERE") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("ErrEveryBadLLMKeyNamed", func(t *testing.T) {
		t.Parallel()
		path := writeYAML(t, `
llm:
  providers:
    - {name: a, type: openai}
    - {name: a, type: nope}
    - {name: Bad Name, type: azure_openai}
  models:
    fast:
      targets: [{provider: ghost, model: ""}]
    empty:
      targets: []
`)
		_, err := config.Load(path, []string{"KILN_LLM_RETRIES=9"})
		if err == nil {
			t.Fatal("no error")
		}
		for _, want := range []string{
			"llm.providers[1].name", "llm.providers[1].type", "llm.providers[2].name", "llm.providers[2].base_url",
			`llm.models: must define the alias "default"`, "llm.models.fast.targets[0].provider", "llm.models.fast.targets[0].model",
			"llm.models.empty.targets", "llm.retries",
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not name %s:\n%v", want, err)
			}
		}
	})
}

func TestParseOrigins(t *testing.T) {
	t.Parallel()
	got, err := config.ParseOrigins(" HTTPS://App.Example.com:443 , http://localhost:3000/, *.example.org,https://*.example.net, http://[::1]:8080, chrome-extension://abcdef,*,")
	if err != nil {
		t.Fatal(err)
	}
	want := []config.Origin{
		{Value: "https://app.example.com", Exact: true}, {Value: "http://localhost:3000", Exact: true},
		{Value: "*.example.org"}, {Value: "https://*.example.net"}, {Value: "http://[::1]:8080", Exact: true},
		{Value: "chrome-extension://abcdef", Exact: true}, {Value: "*"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	for _, bad := range []string{
		"app.example.com", "https://app.example.com/path", "https://u@app.example.com", "https://app.example.com?x=1",
		"null", "ftp://*.example.com", "*.example.com/x", "https://[*]", "http*://example.com", "https://*.exa?ple.com",
	} {
		if _, err := config.ParseOrigins(bad); err == nil || !strings.Contains(err.Error(), strings.ToLower(bad)) {
			t.Errorf("ParseOrigins(%q) = %v, want an error naming it", bad, err)
		}
	}
}

// TestObservabilityConfig: the standard OTEL_* and SENTRY_DSN variables set their keys (a
// KILN_ variable wins), bad values are named, and the DSN is masked.
func TestObservabilityConfig(t *testing.T) {
	t.Parallel()
	const dsn = "https://0123456789abcdef@sentry.example.com/42"
	t.Run("StandardVariables", func(t *testing.T) {
		t.Parallel()
		cfg, err := config.Load("", []string{
			"OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
			"OTEL_SERVICE_NAME=kiln-eu", "KILN_OTEL_SERVICE_NAME=kiln-api", "SENTRY_DSN=" + dsn,
		})
		if err != nil {
			t.Fatal(err)
		}
		if o := cfg.OTel; o.Endpoint != "http://collector:4318" || o.Protocol != "grpc" || o.ServiceName != "kiln-api" || o.SampleRatio != 1 {
			t.Errorf("otel = %+v", o)
		}
		if cfg.Sentry.DSN != dsn || cfg.Masked().Sentry.DSN != "****" {
			t.Errorf("sentry.dsn = %q, masked %q", cfg.Sentry.DSN, cfg.Masked().Sentry.DSN)
		}
	})
	t.Run("BadValuesNamed", func(t *testing.T) {
		t.Parallel()
		_, err := config.Load("", []string{
			"KILN_OTEL_ENDPOINT=collector:4318", "KILN_OTEL_PROTOCOL=http/json", "KILN_OTEL_SAMPLE_RATIO=2",
			"KILN_SENTRY_DSN=https://sentry.example.com/42", "KILN_SENTRY_SAMPLE_RATE=-1",
		})
		if err == nil {
			t.Fatal("Load accepted bad observability settings")
		}
		for _, key := range []string{"otel.endpoint", "otel.protocol", "otel.sample_ratio", "sentry.dsn", "sentry.sample_rate"} {
			if !strings.Contains(err.Error(), key+":") {
				t.Errorf("error does not name %s:\n%v", key, err)
			}
		}
	})
}

func TestMetricsConfig(t *testing.T) {
	t.Parallel()
	t.Run("OKFromEnvTokenMasked", func(t *testing.T) {
		t.Parallel()
		const token = "metrics-Secret-2b9d"
		cfg := mustLoad(t, "", []string{"KILN_METRICS_LISTEN=127.0.0.1:9090", "KILN_METRICS_TOKEN=" + token})
		if cfg.Metrics.Listen != "127.0.0.1:9090" || cfg.Metrics.Token != token {
			t.Fatalf("metrics = %+v", cfg.Metrics)
		}
		masked := cfg.Masked()
		if masked.Metrics.Token != "****" || strings.Contains(fmt.Sprintf("%v", masked.Tree()), token) {
			t.Errorf("masked metrics = %+v", masked.Metrics)
		}
		if cfg.Metrics.Token != token {
			t.Error("Masked() changed the original config")
		}
	})
	t.Run("OKDefaultOpen", func(t *testing.T) {
		t.Parallel()
		if m := mustLoad(t, "", nil).Metrics; m.Listen != "" || m.Token != "" {
			t.Errorf("default metrics = %+v, want served open on http.addr", m)
		}
	})
	for name, listen := range map[string]string{"ErrNoPort": "localhost", "ErrSameAsHTTPAddr": ":8080"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load("", []string{"KILN_METRICS_LISTEN=" + listen})
			if err == nil || !strings.Contains(err.Error(), "metrics.listen") {
				t.Errorf("metrics.listen %q: err = %v, want one naming metrics.listen", listen, err)
			}
		})
	}
}
