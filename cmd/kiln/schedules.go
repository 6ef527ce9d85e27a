package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
	"github.com/kilnhq/kiln/worker"
)

// housekeepingSchedule is the built-in schedule of the housekeeping job; a
// jobs.schedules.housekeeping entry in config replaces it.
const housekeepingSchedule = "housekeeping"

// paymentOrdersSchedule is the built-in schedule of the order query job, there when WeChat
// Pay or Alipay is configured; a jobs.schedules.payment_orders entry replaces it.
const paymentOrdersSchedule = "payment_orders"

// invoicesSchedule is the built-in schedule of the invoice job (hourly: it issues each
// org's invoices within the hour its period ends); a jobs.schedules.invoices entry
// replaces it.
const invoicesSchedule = "invoices"

// newScheduler builds the job scheduler and writes the configured schedules (with the
// built-in housekeeping one) to the database, where every replica reads them.
func (a *app) newScheduler(ctx context.Context, d *deps, reg *jobs.Registry) (*jobs.Scheduler, error) {
	s := jobs.NewScheduler(store.New(d.pool), reg, a.log, time.Second, time.Now)
	specs, err := a.scheduleSpecs()
	if err != nil {
		return nil, err
	}
	if err := s.SyncConfig(ctx, specs); err != nil {
		return nil, fmt.Errorf("job schedules: %w", err)
	}
	return s, nil
}

// scheduleSpecs are jobs.schedules, by name, the built-in housekeeping schedule (every
// worker.housekeeping_interval), the signing-key rotation check (hourly, when
// auth.signing_key_rotation is set), the invoice job (hourly) and, with WeChat Pay or
// Alipay, the order query job's (every minute), unless config names one so.
func (a *app) scheduleSpecs() ([]jobs.ScheduleSpec, error) {
	var specs []jobs.ScheduleSpec
	for _, name := range slices.Sorted(maps.Keys(a.cfg.Jobs.Schedules)) {
		sc := a.cfg.Jobs.Schedules[name]
		payload, err := json.Marshal(sc.Payload)
		if err != nil {
			return nil, fmt.Errorf("jobs.schedules.%s.payload: %w", name, err)
		}
		if sc.Payload == nil {
			payload = nil
		}
		specs = append(specs, jobs.ScheduleSpec{Name: name, Cron: sc.Cron, Timezone: sc.Timezone, Kind: sc.Kind, Payload: payload})
	}
	if _, ok := a.cfg.Jobs.Schedules[housekeepingSchedule]; !ok {
		specs = append(specs, jobs.ScheduleSpec{
			Name: housekeepingSchedule, Cron: "@every " + a.cfg.Worker.HousekeepingInterval.String(), Kind: worker.KindHousekeeping.Name,
		})
	}
	if _, named := a.cfg.Jobs.Schedules[keyRotationSchedule]; !named && a.cfg.Auth.SigningKeyRotation > 0 {
		specs = append(specs, jobs.ScheduleSpec{Name: keyRotationSchedule, Cron: "@every 1h", Kind: worker.KindRotateSigningKey.Name})
	}
	if _, named := a.cfg.Jobs.Schedules[invoicesSchedule]; !named {
		specs = append(specs, jobs.ScheduleSpec{Name: invoicesSchedule, Cron: "@every 1h", Kind: worker.KindIssueInvoices.Name})
	}
	_, named := a.cfg.Jobs.Schedules[paymentOrdersSchedule]
	if b := a.cfg.Billing; !named && (b.WeChatPay.MchID != "" || b.Alipay.AppID != "") {
		specs = append(specs, jobs.ScheduleSpec{Name: paymentOrdersSchedule, Cron: "@every 1m", Kind: worker.KindResolvePaymentOrders.Name})
	}
	return specs, nil
}
