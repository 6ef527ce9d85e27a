package prometheus_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
)

const (
	rulesFile     = "alerts.yml"
	rulesTestFile = "alerts_test.yml"
	groupName     = "kiln"
)

// The alerts Kiln documents; each must exist in group "kiln".
var requiredAlerts = []string{
	"KilnHigh5xxRatio",
	"KilnHighP99Latency",
	"KilnNotReady",
	"KilnDown",
	"KilnQueueBacklog",
	"KilnArchivedTasks",
	"KilnTooManyInFlight",
	"KilnLLMCircuitOpen",
	"KilnLLMProviderAuthFailing",
	"KilnLLMHighErrorRate",
	"KilnLLMUsageRecordsDropped",
	"KilnLLMSlowFirstToken",
	"KilnJobsHighFailureRatio",
	"KilnJobsQueueLatency",
	"KilnJobsStuckRunning",
}

// Metric names Kiln exports. Any kiln_* name in an expression or annotation
// must be one of these (a typo there is valid PromQL that never matches).
var knownMetrics = map[string]bool{
	"kiln_http_requests_total":                  true,
	"kiln_http_request_duration_seconds_bucket": true,
	"kiln_http_request_duration_seconds_count":  true,
	"kiln_http_request_duration_seconds_sum":    true,
	"kiln_http_requests_in_flight":              true,
	"kiln_ready":                                true,
	"kiln_worker_queue_size":                    true,
	"kiln_build_info":                           true,
	// internal/llm/gateway.go
	"kiln_llm_attempts_total":  true,
	"kiln_llm_failovers_total": true,
	"kiln_llm_circuit_open":    true,
	// internal/llm/usage/usage.go
	"kiln_llm_requests_total":                     true,
	"kiln_llm_tokens_total":                       true,
	"kiln_llm_cost_usd_total":                     true,
	"kiln_llm_time_to_first_token_seconds_bucket": true,
	"kiln_llm_time_to_first_token_seconds_count":  true,
	"kiln_llm_time_to_first_token_seconds_sum":    true,
	"kiln_llm_request_duration_seconds_bucket":    true,
	"kiln_llm_request_duration_seconds_count":     true,
	"kiln_llm_request_duration_seconds_sum":       true,
	"kiln_llm_usage_records_written_total":        true,
	"kiln_llm_usage_records_dropped_total":        true,
	// internal/jobs/metrics.go
	"kiln_jobs":                       true,
	"kiln_jobs_queue_latency_seconds": true,
	"kiln_jobs_stale_running":         true,
	"kiln_jobs_processed_total":       true,
	"kiln_jobs_failed_total":          true,
}

// Values of kiln_worker_queue_size's state label (Asynq's queue states).
var queueStates = map[string]bool{"pending": true, "active": true, "scheduled": true, "retry": true, "archived": true}

// Label values of the LLM metrics that alerts filter on: a misspelt value
// (outcome="rate_limit") is valid PromQL that never matches.
var llmLabelValues = map[string]map[string]map[string]bool{
	// outcome: ok, "error" (not an upstream error), or an llm.ErrorKind.
	"kiln_llm_attempts_total": {"outcome": {
		"ok": true, "error": true, "rate_limited": true, "overloaded": true, "timeout": true,
		"connection": true, "auth": true, "invalid_request": true, "protocol": true, "unsupported": true,
	}},
	// status: the usage package's StatusOK, StatusError, StatusCancelled.
	"kiln_llm_requests_total": {"status": {"ok": true, "error": true, "cancelled": true}},
}

var (
	metricNameRE = regexp.MustCompile(`\bkiln_[a-z0-9_]+\b`)
	stateMatchRE = regexp.MustCompile(`\bstate\s*(?:=|!=)\s*"([^"]*)"`)
	// A selector's metric name and its matchers, e.g. foo_total{a="b",c=~"d|e"}.
	selectorRE = regexp.MustCompile(`\b(kiln_[a-z0-9_]+)\s*\{([^}]*)\}`)
	// One label matcher: name, operator, value.
	matcherRE = regexp.MustCompile(`\b([a-z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	// A Prometheus duration (e.g. 5m, 1h30m) that is not zero.
	durationRE = regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)
)

// promtool returns the path of promtool, failing the test when it is missing:
// these rules must not go unchecked because a tool was not installed.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found in PATH (%v): run scripts/dev-deps.sh, which installs "+
			"Debian's prometheus package (it provides /usr/bin/promtool)", err)
	}
	return path
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	bin := promtool(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s failed: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

// TestRulesValid: alerts.yml parses, every expression is valid PromQL, every
// duration and template is valid, and no rule is duplicated.
func TestRulesValid(t *testing.T) {
	runPromtool(t, "check", "rules", "--lint=all", "--lint-fatal", rulesFile)
}

// TestRulesBehave: alerts_test.yml's synthetic series make each alert fire
// (with the expected labels and rendered annotations) and stay quiet on
// healthy data.
func TestRulesBehave(t *testing.T) {
	runPromtool(t, "test", "rules", rulesTestFile)
}

// TestRulesConventions: what promtool does not check. Every alert has a
// non-zero `for`, severity page|ticket, a templated summary and description,
// no runbook_url, only known metric names, and unit tests in alerts_test.yml
// that see it fire and see it stay quiet.
func TestRulesConventions(t *testing.T) {
	doc := parseYAML(t, rulesFile)
	groups := list(doc["groups"])
	if len(groups) == 0 {
		t.Fatalf("%s: no groups", rulesFile)
	}

	alerts := map[string]map[string]any{}
	var kilnGroup bool
	for _, g := range groups {
		gm := dict(g)
		if gm["name"] == groupName {
			kilnGroup = true
		}
		for i, r := range list(gm["rules"]) {
			rm := dict(r)
			name, _ := rm["alert"].(string)
			if name == "" {
				if _, ok := rm["record"]; !ok {
					t.Errorf("%s: group %v rule %d has neither alert nor record", rulesFile, gm["name"], i)
				}
				continue
			}
			if _, dup := alerts[name]; dup {
				t.Errorf("%s: alert %s defined twice", rulesFile, name)
			}
			alerts[name] = rm
			if gm["name"] != groupName {
				t.Errorf("%s: alert %s is in group %v, want %q", rulesFile, name, gm["name"], groupName)
			}
		}
	}
	if !kilnGroup {
		t.Errorf("%s: no group named %q", rulesFile, groupName)
	}
	for _, name := range requiredAlerts {
		if _, ok := alerts[name]; !ok {
			t.Errorf("%s: alert %s is missing", rulesFile, name)
		}
	}

	for _, name := range sortedKeys(alerts) {
		checkAlert(t, name, alerts[name])
	}

	fires, quiet := unitTestCoverage(t)
	for _, name := range sortedKeys(alerts) {
		if !fires[name] {
			t.Errorf("%s: no test case where %s fires (an alert_rule_test with non-empty exp_alerts)", rulesTestFile, name)
		}
		if !quiet[name] {
			t.Errorf("%s: no test case where %s stays quiet (an alert_rule_test with exp_alerts: [])", rulesTestFile, name)
		}
	}
	for name := range fires {
		if _, ok := alerts[name]; !ok {
			t.Errorf("%s: tests alert %s, which %s does not define", rulesTestFile, name, rulesFile)
		}
	}
}

func checkAlert(t *testing.T, name string, rule map[string]any) {
	t.Helper()
	errorf := func(format string, args ...any) {
		t.Helper()
		t.Errorf("%s: alert %s: %s", rulesFile, name, fmt.Sprintf(format, args...))
	}

	expr, _ := rule["expr"].(string)
	if strings.TrimSpace(expr) == "" {
		errorf("no expr")
	}
	forDur, _ := rule["for"].(string)
	switch {
	case forDur == "":
		errorf("no `for:` (every alert must hold for a while before it fires)")
	case !durationRE.MatchString(forDur):
		errorf("for: %q is not a Prometheus duration", forDur)
	case strings.Trim(forDur, "0msdhwy") == "":
		errorf("for: %q is zero", forDur)
	}

	labels := dict(rule["labels"])
	if sev := labels["severity"]; sev != "page" && sev != "ticket" {
		errorf("labels.severity is %v, want page or ticket", sev)
	}

	ann := dict(rule["annotations"])
	for _, key := range []string{"summary", "description"} {
		text, _ := ann[key].(string)
		switch {
		case strings.TrimSpace(text) == "":
			errorf("annotations.%s is missing", key)
		case !strings.Contains(text, "$labels") && !strings.Contains(text, "$value"):
			errorf("annotations.%s is not templated with $labels or $value: %q", key, text)
		}
	}
	if _, ok := ann["runbook_url"]; ok {
		errorf("has a runbook_url; say what to check in the description instead")
	}
	if desc, _ := ann["description"].(string); desc != "" && len(desc) < 80 {
		errorf("annotations.description is too short to say what to check: %q", desc)
	}

	texts := []string{expr}
	for _, v := range ann {
		if s, ok := v.(string); ok {
			texts = append(texts, s)
		}
	}
	for _, text := range texts {
		for _, m := range metricNameRE.FindAllString(text, -1) {
			if !knownMetrics[m] {
				errorf("unknown metric %s (Kiln exports %s)", m, strings.Join(sortedKeys(knownMetrics), ", "))
			}
		}
	}
	if strings.Contains(expr, "kiln_worker_queue_size") {
		for _, m := range stateMatchRE.FindAllStringSubmatch(expr, -1) {
			if !queueStates[m[1]] {
				errorf("state=%q is not an Asynq queue state (%s)", m[1], strings.Join(sortedKeys(queueStates), ", "))
			}
		}
	}
	checkLabelValues(errorf, expr)
}

// checkLabelValues reports matchers on the labels in llmLabelValues whose
// values (each alternative of a regexp made of plain alternatives) the metric
// never has.
func checkLabelValues(errorf func(string, ...any), expr string) {
	for _, sel := range selectorRE.FindAllStringSubmatch(expr, -1) {
		labels := llmLabelValues[sel[1]]
		for _, m := range matcherRE.FindAllStringSubmatch(sel[2], -1) {
			allowed := labels[m[1]]
			if allowed == nil {
				continue
			}
			values := []string{m[3]}
			if m[2] == "=~" || m[2] == "!~" {
				if strings.ContainsAny(m[3], `.*+?()[]{}\^$`) {
					continue // a real pattern: not checked
				}
				values = strings.Split(m[3], "|")
			}
			for _, v := range values {
				if !allowed[v] {
					errorf("%s{%s%s%q}: %q is not a value of %s (%s)", sel[1], m[1], m[2], m[3], v, m[1], strings.Join(sortedKeys(allowed), ", "))
				}
			}
		}
	}
}

// unitTestCoverage reads alerts_test.yml and reports, per alert name, whether
// some case expects it to fire and some case expects it to stay quiet.
func unitTestCoverage(t *testing.T) (fires, quiet map[string]bool) {
	t.Helper()
	doc := parseYAML(t, rulesTestFile)
	files := list(doc["rule_files"])
	if !slices.ContainsFunc(files, func(f any) bool { return f == rulesFile }) {
		t.Errorf("%s: rule_files %v does not load %s", rulesTestFile, files, rulesFile)
	}
	fires, quiet = map[string]bool{}, map[string]bool{}
	for _, tc := range list(doc["tests"]) {
		for _, art := range list(dict(tc)["alert_rule_test"]) {
			am := dict(art)
			name, _ := am["alertname"].(string)
			if len(list(am["exp_alerts"])) > 0 {
				fires[name] = true
			} else {
				quiet[name] = true
			}
		}
	}
	return fires, quiet
}

func parseYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := yaml.Parser().Unmarshal(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return doc
}

func dict(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
