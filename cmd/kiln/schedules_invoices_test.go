package main

import (
	"testing"

	"github.com/kilnhq/kiln/internal/platform/config"
	"github.com/kilnhq/kiln/worker"
)

// TestInvoicesSchedule: the invoice job is scheduled hourly by default, and a
// jobs.schedules.invoices entry replaces the built-in schedule.
func TestInvoicesSchedule(t *testing.T) {
	t.Parallel()
	find := func(cfg config.Config) (string, string) {
		t.Helper()
		specs, err := (&app{cfg: cfg}).scheduleSpecs()
		if err != nil {
			t.Fatal(err)
		}
		n, cron, kind := 0, "", ""
		for _, s := range specs {
			if s.Name == invoicesSchedule {
				n, cron, kind = n+1, s.Cron, s.Kind
			}
		}
		if n != 1 {
			t.Fatalf("%d schedules named %s, want 1", n, invoicesSchedule)
		}
		return cron, kind
	}
	if cron, kind := find(config.Default()); cron != "@every 1h" || kind != worker.KindIssueInvoices.Name {
		t.Errorf("built in: %s %s, want @every 1h %s", cron, kind, worker.KindIssueInvoices.Name)
	}
	cfg := config.Default()
	cfg.Jobs.Schedules = map[string]config.JobSchedule{invoicesSchedule: {Cron: "30 0 * * *", Kind: worker.KindIssueInvoices.Name}}
	if cron, _ := find(cfg); cron != "30 0 * * *" {
		t.Errorf("from config: %s, want 30 0 * * *", cron)
	}
}
