package main_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/internal/store/storetest"
)

// TestServeRunsHousekeepingOnItsSchedule starts the real binary with a one-second
// housekeeping interval: the built-in schedule is stored, its runs are created as jobs and
// succeed, and /metrics exposes them as kiln_jobs_*.
func TestServeRunsHousekeepingOnItsSchedule(t *testing.T) {
	t.Parallel()
	s := startServeWithEnv(t, []string{"KILN_WORKER_HOUSEKEEPING_INTERVAL=1s"})
	pool := storetest.Pool(t, s.dbURL)
	st := store.New(pool)
	ctx := context.Background()

	deadline := time.Now().Add(20 * time.Second)
	var succeeded int
	for time.Now().Before(deadline) {
		err := pool.QueryRow(ctx, "SELECT count(*) FROM jobs WHERE kind = 'housekeeping.purge_expired' AND state = 'succeeded'").Scan(&succeeded)
		if err != nil {
			t.Fatal(err)
		}
		if succeeded >= 2 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if succeeded < 2 {
		t.Fatalf("housekeeping runs succeeded: %d, want 2 within 20 s\n%s", succeeded, s.output())
	}
	sc, err := st.LockJobSchedule(ctx, "housekeeping")
	if err != nil || sc.Source != "config" || sc.Cron != "@every 1s" || sc.LastJobID.Valid == false {
		t.Fatalf("housekeeping schedule = %+v, %v", sc, err)
	}

	code, body := s.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d", code)
	}
	for _, re := range []string{
		`(?m)^kiln_jobs\{kind="housekeeping.purge_expired",queue="default",state="failed"\} 0$`,
		`(?m)^kiln_jobs_processed_total\{queue="default"\} [1-9][0-9]*$`,
		`(?m)^kiln_jobs_queue_latency_seconds\{queue="default"\} `,
		`(?m)^kiln_jobs_stale_running\{kind="housekeeping.purge_expired",queue="default"\} 0$`,
	} {
		if !regexp.MustCompile(re).MatchString(body) {
			t.Errorf("/metrics lacks %s:\n%s", re, grepLines(body, "kiln_jobs"))
		}
	}
}

// grepLines returns the lines of text containing sub.
func grepLines(text, sub string) string {
	var out []string
	for line := range strings.SplitSeq(text, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
