// Package invoicepdf renders invoices and credit notes as PDF (fpdf).
package invoicepdf

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"

	"codeberg.org/go-pdf/fpdf"

	"github.com/kilnhq/kiln/internal/billing"
)

// Renderer renders invoices. Without a font, text is set in Helvetica, which holds the
// Latin-1 (Windows-1252) characters only: others print as ".". With a TrueType font
// (one with CJK glyphs for Chinese names), text is set in it as UTF-8.
type Renderer struct {
	font []byte
}

// New returns a renderer that sets text in the TrueType font ttf, or in Helvetica when
// ttf is empty.
func New(ttf []byte) *Renderer { return &Renderer{font: ttf} }

const (
	family = "invoice"
	margin = 15.0
	width  = 210 - 2*margin // A4, mm
)

// Render writes inv as a one- or more-page A4 PDF to w. The same invoice renders to the
// same bytes (its dates are the invoice's).
func (r *Renderer) Render(w io.Writer, inv billing.Invoice) error {
	pdf := fpdf.New("P", "mm", "A4", "")
	pdf.SetMargins(margin, margin, margin)
	pdf.SetAutoPageBreak(true, margin)
	pdf.SetCreationDate(inv.IssuedAt)
	pdf.SetModificationDate(inv.IssuedAt)
	pdf.SetProducer("Kiln", false)
	pdf.SetCatalogSort(true) // the same invoice, the same bytes
	tr, fam := pdf.UnicodeTranslatorFromDescriptor(""), "Helvetica"
	if len(r.font) > 0 {
		pdf.AddUTF8FontFromBytes(family, "", r.font)
		pdf.AddUTF8FontFromBytes(family, "B", r.font)
		tr, fam = func(s string) string { return s }, family
	}
	title := "Invoice"
	if inv.Kind == billing.KindCreditNote {
		title = "Credit note"
	}
	pdf.SetTitle(title+" "+inv.Number, true)
	pdf.AddPage()

	pdf.SetFont(fam, "B", 18)
	pdf.CellFormat(width/2, 10, tr(title), "", 0, "L", false, 0, "")
	pdf.SetFont(fam, "", 10)
	pdf.CellFormat(width/2, 10, tr(inv.Number), "", 1, "R", false, 0, "")
	facts := [][2]string{
		{"Issued", inv.IssuedAt.UTC().Format("2006-01-02")},
		{"Period", inv.Period.Start.UTC().Format("2006-01-02") + " to " + inv.Period.End.UTC().Format("2006-01-02")},
		{"Currency", inv.Currency},
		{"Status", inv.Status},
	}
	if inv.Credits != nil {
		facts = append(facts, [2]string{"Credits invoice", inv.Credits.String()})
	}
	for _, f := range facts {
		pdf.CellFormat(35, 5, tr(f[0]), "", 0, "L", false, 0, "")
		pdf.CellFormat(width-35, 5, tr(f[1]), "", 1, "L", false, 0, "")
	}
	pdf.Ln(4)

	y := pdf.GetY()
	party := func(x float64, heading string, p billing.Party) {
		pdf.SetXY(x, y)
		pdf.SetFont(fam, "B", 10)
		pdf.CellFormat(width/2-5, 5, tr(heading), "", 2, "L", false, 0, "")
		pdf.SetFont(fam, "", 10)
		text := p.Name
		if p.Address != "" {
			text += "\n" + p.Address
		}
		if p.TaxID != "" {
			text += "\nTax id: " + p.TaxID
		}
		pdf.MultiCell(width/2-5, 5, tr(text), "", "L", false)
	}
	party(margin, "From", inv.Seller)
	sellerEnd := pdf.GetY()
	party(margin+width/2, "Bill to", inv.Buyer)
	pdf.SetXY(margin, max(sellerEnd, pdf.GetY())+6)

	cols := []float64{width - 30 - 35 - 35, 30, 35, 35}
	pdf.SetFont(fam, "B", 10)
	for i, h := range []string{"Description", "Quantity", "Unit price", "Amount"} {
		align := "R"
		if i == 0 {
			align = "L"
		}
		pdf.CellFormat(cols[i], 7, tr(h), "B", 0, align, false, 0, "")
	}
	pdf.Ln(-1)
	pdf.SetFont(fam, "", 10)
	for _, l := range inv.Lines {
		pdf.CellFormat(cols[0], 6, tr(l.Description), "", 0, "L", false, 0, "")
		pdf.CellFormat(cols[1], 6, strconv.FormatInt(l.Quantity, 10), "", 0, "R", false, 0, "")
		pdf.CellFormat(cols[2], 6, UnitPrice(l.UnitAmount), "", 0, "R", false, 0, "")
		pdf.CellFormat(cols[3], 6, Money(l.Amount), "", 1, "R", false, 0, "")
	}
	pdf.Ln(2)
	total := func(label, amount string, style string) {
		pdf.SetFont(fam, style, 10)
		pdf.CellFormat(width-35, 6, tr(label), "", 0, "R", false, 0, "")
		pdf.CellFormat(35, 6, amount, "", 1, "R", false, 0, "")
	}
	total("Subtotal", Money(inv.Subtotal), "")
	total(fmt.Sprintf("Tax (%s %%)", UnitPrice(float64(inv.TaxRateBP))), Money(inv.Tax), "")
	total("Total "+inv.Currency, Money(inv.Total), "B")
	if inv.ProviderURL != nil {
		pdf.Ln(4)
		pdf.SetFont(fam, "", 9)
		pdf.CellFormat(width, 5, tr("Online: "+*inv.ProviderURL), "", 1, "L", false, 0, *inv.ProviderURL)
	}
	var buf bytes.Buffer
	if err := pdf.Output(&buf); err != nil {
		return fmt.Errorf("render invoice %s: %w", inv.Number, err)
	}
	_, err := buf.WriteTo(w)
	return err
}

// Money formats minor units (cents, fen) as major units with two decimals.
func Money(minor int64) string {
	sign := ""
	if minor < 0 {
		sign, minor = "-", -minor
	}
	return fmt.Sprintf("%s%d.%02d", sign, minor/100, minor%100)
}

// UnitPrice formats a price per unit in minor units as major units, with as many
// decimals as it has (at least two, at most eight).
func UnitPrice(minor float64) string {
	s := strconv.FormatFloat(minor/100, 'f', 8, 64)
	s = strings.TrimRight(s, "0")
	if i := strings.IndexByte(s, '.'); len(s)-i-1 < 2 {
		s += strings.Repeat("0", 2-(len(s)-i-1))
	}
	return s
}
