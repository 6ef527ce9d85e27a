package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/billing/alipay"
	"github.com/kilnhq/kiln/internal/billing/invoicepdf"
	"github.com/kilnhq/kiln/internal/billing/wechatpay"
	"github.com/kilnhq/kiln/internal/platform/config"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/store"
)

// newBilling builds the billing service over the configured plans.
func (a *app) newBilling(st *store.Store, rdb redis.UniversalClient) *billing.Service {
	b := a.cfg.Billing
	quota := billing.NewQuota(rdb, redisclient.Keyspace{Env: a.cfg.Env}, b.ReservationTTL, time.Now)
	return billing.New(st, billing.NewCatalog(toPlans(b.Plans), b.DefaultPlan), quota, b.CacheTTL, b.GracePeriod, time.Now)
}

// toPlans converts billing.plans (validated by config) into the catalog's plans.
func toPlans(in map[string]config.Plan) []billing.Plan {
	out := make([]billing.Plan, 0, len(in))
	for id, p := range in {
		plan := billing.Plan{ID: id, Name: p.Name, Features: map[string]bool{}, Limits: map[string]billing.Limit{}}
		for interval, byCurrency := range p.Prices {
			for currency, amount := range byCurrency {
				plan.Prices = append(plan.Prices, billing.Price{Interval: interval, Currency: currency, Amount: amount,
					StripePrice: p.StripePrices[interval][currency]})
			}
		}
		for f, on := range p.Features {
			plan.Features[f] = on
		}
		for name, l := range p.Limits {
			plan.Limits[name] = billing.Limit{Value: l.Value, Overage: billing.Overage(l.Overage), UnitPrice: l.UnitPrice}
		}
		out = append(out, plan)
	}
	return out
}

// newInvoicer builds the invoicer of billing.invoices over bill.
func (a *app) newInvoicer(st *store.Store, bill *billing.Service) *billing.Invoicer {
	inv := a.cfg.Billing.Invoices
	return billing.NewInvoicer(st, bill, billing.Issuer{ID: inv.IssuerID, Prefix: inv.NumberPrefix, Name: inv.SellerName,
		Address: inv.SellerAddress, TaxID: inv.SellerTaxID, TaxRateBP: inv.TaxRateBP}, time.Now)
}

// newInvoicePDF builds the invoice renderer, in billing.invoices.font when it names one.
// The default font missing (fonts-droid-fallback not installed) is no error: the PDF
// falls back to Helvetica, and the log says once, at start, what Chinese text will lose.
func (a *app) newInvoicePDF() (*invoicepdf.Renderer, error) {
	path := a.cfg.Billing.Invoices.Font
	if path == "" {
		return invoicepdf.New(nil), nil
	}
	ttf, err := os.ReadFile(path) //nolint:gosec // the operator's own config names the file
	if errors.Is(err, fs.ErrNotExist) && path == config.DefaultInvoiceFont {
		a.log.Warn("the default invoice font is missing: invoice PDFs are set in Helvetica, which prints Chinese and other text outside Latin-1 as \".\"; install Debian's fonts-droid-fallback or set billing.invoices.font",
			"font", path)
		return invoicepdf.New(nil), nil
	}
	if err != nil {
		return nil, fmt.Errorf("billing.invoices.font: %w", err)
	}
	return invoicepdf.New(ttf), nil
}

// newChinaPayments builds the WeChat Pay and Alipay adapter over bill with the clients of
// billing.wechatpay and billing.alipay (each off when not configured).
func (a *app) newChinaPayments(bill *billing.Service) (*billing.ChinaPayments, error) {
	b := a.cfg.Billing
	cfg := billing.ChinaConfig{Expiry: b.OrderExpiry, QueryAfter: b.OrderQueryAfter, Log: a.log, Now: time.Now}
	if w := b.WeChatPay; w.MchID != "" {
		c, err := wechatpay.New(wechatpay.Config{MchID: w.MchID, AppID: w.AppID, MerchantSerial: w.MerchantSerial, MerchantKeyPEM: w.MerchantKey,
			APIv3Key: w.APIv3Key, PlatformKeyPEM: w.PlatformKey, PlatformSerial: w.PlatformSerial, NotifyURL: w.NotifyURL, BaseURL: w.BaseURL}, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("billing.wechatpay: %w", err)
		}
		cfg.WeChat = c
	}
	if al := b.Alipay; al.AppID != "" {
		c, err := alipay.New(alipay.Config{AppID: al.AppID, PrivateKeyPEM: al.PrivateKey, AlipayPublicKeyPEM: al.PublicKey,
			NotifyURL: al.NotifyURL, ReturnURL: al.ReturnURL, Gateway: al.Gateway}, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("billing.alipay: %w", err)
		}
		cfg.Alipay = c
	}
	return billing.NewChinaPayments(bill, cfg), nil
}

// newStripePayments builds the Stripe adapter over bill from billing.stripe (off without
// a secret key).
func (a *app) newStripePayments(bill *billing.Service) *billing.StripePayments {
	st := a.cfg.Billing.Stripe
	return billing.NewStripePayments(bill, billing.StripeConfig{SecretKey: st.SecretKey, WebhookSecret: st.WebhookSecret, BaseURL: st.BaseURL, Log: a.log})
}
