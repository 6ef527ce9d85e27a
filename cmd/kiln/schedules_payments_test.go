package main

import (
	"testing"

	"github.com/kilnhq/kiln/internal/platform/config"
	"github.com/kilnhq/kiln/worker"
)

// TestPaymentOrdersSchedule: the order query job is scheduled every minute once WeChat
// Pay or Alipay is configured, and not otherwise.
func TestPaymentOrdersSchedule(t *testing.T) {
	t.Parallel()
	scheduled := func(cfg config.Config) string {
		t.Helper()
		specs, err := (&app{cfg: cfg}).scheduleSpecs()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range specs {
			if s.Name == paymentOrdersSchedule {
				if s.Kind != worker.KindResolvePaymentOrders.Name {
					t.Fatalf("payment_orders runs %s", s.Kind)
				}
				return s.Cron
			}
		}
		return ""
	}
	cfg := config.Default()
	if cron := scheduled(cfg); cron != "" {
		t.Errorf("scheduled without a provider: %q", cron)
	}
	cfg.Billing.Alipay.AppID = "2021000000000001"
	if cron := scheduled(cfg); cron != "@every 1m" {
		t.Errorf("with Alipay: %q, want @every 1m", cron)
	}
	cfg.Billing.Alipay.AppID, cfg.Billing.WeChatPay.MchID = "", "1900000109"
	if cron := scheduled(cfg); cron != "@every 1m" {
		t.Errorf("with WeChat Pay: %q, want @every 1m", cron)
	}
}
