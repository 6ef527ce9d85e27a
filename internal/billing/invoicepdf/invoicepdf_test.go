package invoicepdf_test

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/ledongthuc/pdf"

	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/billing/invoicepdf"
)

func sample() billing.Invoice {
	order := uuid.MustParse("01900000-0000-7000-8000-000000000001")
	url := "https://invoice.stripe.com/i/acct_1/test_1"
	return billing.Invoice{
		ID: uuid.MustParse("01900000-0000-7000-8000-000000000002"), Number: "INV-000042", Kind: billing.KindInvoice,
		Status: billing.StatusIssued, Currency: "USD", Plan: "biz",
		Period:   billing.Period{Start: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), End: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)},
		Subtotal: 6075, TaxRateBP: 2000, Tax: 1215, Total: 7290,
		Seller:   billing.Party{Name: "Kiln Ltd", Address: "1 Kiln Way, London", TaxID: "GB123456789"},
		Buyer:    billing.Party{Name: "Café Müller GmbH", Address: "Hauptstraße 1, Berlin", TaxID: "DE999"},
		IssuedAt: time.Date(2026, 3, 1, 0, 30, 0, 0, time.UTC), ProviderURL: &url,
		Lines: []billing.InvoiceLine{
			{Kind: billing.LinePlan, Description: "Biz plan, 2026-02-01 2026-03-01", Quantity: 1, UnitAmount: 5000, Amount: 5000},
			{Kind: billing.LineOverage, Description: "Tokens past the plan's 100", Quantity: 150, UnitAmount: 0.5, Amount: 75},
			{Kind: billing.LineTopup, Description: "Credit top-up, paid 2026-02-10", Quantity: 1, UnitAmount: 1000, Amount: 1000, Order: &order},
		},
	}
}

// text extracts the text of a PDF's pages, as a reader of the document would.
func text(t *testing.T, doc []byte) string {
	t.Helper()
	r, err := pdf.NewReader(bytes.NewReader(doc), int64(len(doc)))
	if err != nil {
		t.Fatalf("not a PDF a reader opens: %v", err)
	}
	var b strings.Builder
	for i := 1; i <= r.NumPage(); i++ {
		s, err := r.Page(i).GetPlainText(nil)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(s)
	}
	return b.String()
}

// TestRender: the PDF opens, holds the number, both parties with their tax ids, every
// line and the totals, and renders the same bytes twice.
func TestRender(t *testing.T) {
	t.Parallel()
	var a, b bytes.Buffer
	r := invoicepdf.New(nil)
	if err := r.Render(&a, sample()); err != nil {
		t.Fatal(err)
	}
	if err := r.Render(&b, sample()); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(a.Bytes(), []byte("%PDF-")) || !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatalf("not a PDF, or not the same twice (%d and %d bytes)", a.Len(), b.Len())
	}
	got := strings.Join(strings.Fields(text(t, a.Bytes())), "")
	for _, want := range []string{"Invoice", "INV-000042", "KilnLtd", "GB123456789", "CaféMüllerGmbH", "DE999",
		"Bizplan", "Tokenspasttheplan's100", "150", "0.005", "50.00", "0.75", "10.00", "60.75", "Tax(20.00%)", "12.15", "TotalUSD", "72.90",
		"invoice.stripe.com"} {
		if !strings.Contains(got, want) {
			t.Errorf("the PDF's text lacks %q:\n%s", want, got)
		}
	}
}

// TestRenderCreditNote: a credit note says so, names the invoice it credits and shows
// negative amounts.
func TestRenderCreditNote(t *testing.T) {
	t.Parallel()
	inv := sample()
	credited := inv.ID
	inv.Kind, inv.Credits, inv.ProviderURL = billing.KindCreditNote, &credited, nil
	inv.Lines = []billing.InvoiceLine{{Kind: billing.LineRefund, Description: "Refund, payment of 2026-02-10", Quantity: 1, UnitAmount: -3000, Amount: -3000}}
	inv.Subtotal, inv.Tax, inv.Total = -3000, -600, -3600
	var buf bytes.Buffer
	if err := invoicepdf.New(nil).Render(&buf, inv); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(strings.Fields(text(t, buf.Bytes())), "")
	for _, want := range []string{"Creditnote", credited.String(), "-30.00", "-6.00", "-36.00"} {
		if !strings.Contains(got, want) {
			t.Errorf("the credit note's text lacks %q:\n%s", want, got)
		}
	}
}

func TestMoney(t *testing.T) {
	t.Parallel()
	for minor, want := range map[int64]string{0: "0.00", 5: "0.05", 1234: "12.34", -3600: "-36.00", -7: "-0.07"} {
		if got := invoicepdf.Money(minor); got != want {
			t.Errorf("Money(%d) = %q, want %q", minor, got, want)
		}
	}
	for minor, want := range map[float64]string{5000: "50.00", 0.5: "0.005", 0.002: "0.00002", 2000: "20.00", 12.5: "0.125"} {
		if got := invoicepdf.UnitPrice(minor); got != want {
			t.Errorf("UnitPrice(%g) = %q, want %q", minor, got, want)
		}
	}
}

// cjkFont is the CJK font Kiln sets invoices in by default: Droid Sans Fallback, a single
// TrueType file of Debian's fonts-droid-fallback, which scripts/dev-deps.sh installs.
const cjkFont = "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"

// pdftotext extracts doc's text with poppler's pdftotext (Debian's poppler-utils, which
// scripts/dev-deps.sh --test installs), which maps a CID font's glyphs back to text
// through its ToUnicode map as every PDF viewer does.
func pdftotext(t *testing.T, doc []byte) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "pdftotext", "-enc", "UTF-8", "-", "-")
	cmd.Stdin = bytes.NewReader(doc)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pdftotext (run scripts/dev-deps.sh --test, which installs poppler-utils): %v", err)
	}
	return strings.Join(strings.Fields(string(out)), "")
}

// TestRenderChinese: an invoice to a Chinese buyer, set in the default CJK font, holds
// the buyer's name and address as text (pdftotext extracts them), and embeds only the
// glyphs it uses (the font file is 4 MB); in Helvetica the Chinese is lost.
func TestRenderChinese(t *testing.T) {
	t.Parallel()
	ttf, err := os.ReadFile(cjkFont)
	if err != nil {
		t.Fatalf("the default invoice font (run scripts/dev-deps.sh, which installs fonts-droid-fallback): %v", err)
	}
	inv := sample()
	inv.Currency = "CNY"
	inv.Buyer = billing.Party{Name: "上海示例科技有限公司", Address: "上海市浦东新区世纪大道100号", TaxID: "91310000MA1FL0000X"}
	inv.Lines[0].Description = "专业版套餐 2026-02"
	chinese := []string{"上海示例科技有限公司", "上海市浦东新区世纪大道100号", "专业版套餐"}
	var buf bytes.Buffer
	if err := invoicepdf.New(ttf).Render(&buf, inv); err != nil {
		t.Fatal(err)
	}
	got := pdftotext(t, buf.Bytes())
	for _, want := range append(chinese, "91310000MA1FL0000X", "INV-000042", "TotalCNY", "72.90") {
		if !strings.Contains(got, want) {
			t.Errorf("the PDF's text lacks %q:\n%s", want, got)
		}
	}
	if buf.Len() > 64<<10 {
		t.Errorf("the PDF is %d bytes: the font is not subset", buf.Len())
	}
	var latin bytes.Buffer
	if err := invoicepdf.New(nil).Render(&latin, inv); err != nil {
		t.Fatal(err)
	}
	if got := pdftotext(t, latin.Bytes()); strings.Contains(got, chinese[0]) || !strings.Contains(got, "INV-000042") {
		t.Errorf("in Helvetica: %s", got)
	}
}
