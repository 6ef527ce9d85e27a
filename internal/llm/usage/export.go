package usage

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/store"
)

// ExportPageSize is how many rows one page of an export reads: the most an export holds.
const ExportPageSize = 1000

// ExportRow is one call as an export writes it.
type ExportRow struct {
	ID, OrgID                                    uuid.UUID
	UserID, APIKeyID                             *uuid.UUID
	RequestID, Endpoint, Alias, Provider, Model  string
	Status, ErrorCode                            string
	PromptTokens, CompletionTokens, CachedTokens int64
	CostUSD                                      float64
	LatencyMs                                    int64
	Cached                                       bool
	CreatedAt                                    time.Time
}

// Export reads the calls of a window page by page, in (org, time, id) order.
type Export struct {
	st     *store.Store
	org    uuid.UUID // zero: every org
	window Filter
	after  ExportRow
	done   bool
}

// Export starts an export of org's calls in q's window (every org's when org is zero),
// resolved as Query resolves it (defaults, MaxWindow; /query/from named when it is wrong).
// Nothing is read until Next.
func (r *Recorder) Export(org uuid.UUID, from, to *time.Time) (*Export, error) {
	f, err := Query{From: from, To: to}.filter(org, time.Now().UTC())
	if err != nil {
		return nil, err
	}
	return &Export{st: r.store, org: org, window: f, after: ExportRow{CreatedAt: f.From}}, nil
}

// From and To are the export's window.
func (e *Export) From() time.Time { return e.window.From }

// To is the end of the export's window (exclusive).
func (e *Export) To() time.Time { return e.window.To }

// Next reads the next page, at most ExportPageSize rows; an empty page ends the export.
func (e *Export) Next(ctx context.Context) ([]ExportRow, error) {
	if e.done {
		return nil, nil
	}
	var out []ExportRow
	if e.org != uuid.Nil {
		rows, err := e.st.UsageExportOrgPage(ctx, db.UsageExportOrgPageParams{OrgID: e.org, FromTime: e.window.From, ToTime: e.window.To,
			AfterCreated: e.after.CreatedAt, AfterID: e.after.ID, PageSize: ExportPageSize})
		if err != nil {
			return nil, fmt.Errorf("export usage: %w", err)
		}
		out = make([]ExportRow, len(rows))
		for i, row := range rows {
			out[i] = toExportRow(db.UsageExportAllPageRow(row))
		}
	} else {
		rows, err := e.st.UsageExportAllPage(ctx, db.UsageExportAllPageParams{FromTime: e.window.From, ToTime: e.window.To,
			AfterOrg: e.after.OrgID, AfterCreated: e.after.CreatedAt, AfterID: e.after.ID, PageSize: ExportPageSize})
		if err != nil {
			return nil, fmt.Errorf("export usage: %w", err)
		}
		out = make([]ExportRow, len(rows))
		for i, row := range rows {
			out[i] = toExportRow(row)
		}
	}
	if len(out) < ExportPageSize {
		e.done = true
	}
	if len(out) > 0 {
		e.after = out[len(out)-1]
	}
	return out, nil
}

func toExportRow(row db.UsageExportAllPageRow) ExportRow {
	return ExportRow{
		ID: row.ID, OrgID: row.OrgID, UserID: store.UUIDPtr(row.UserID), APIKeyID: store.UUIDPtr(row.ApiKeyID),
		RequestID: row.RequestID, Endpoint: row.Endpoint, Alias: row.Alias, Provider: row.Provider, Model: row.Model,
		Status: row.Status, ErrorCode: row.ErrorCode, PromptTokens: int64(row.PromptTokens), CompletionTokens: int64(row.CompletionTokens),
		CachedTokens: int64(row.CachedTokens), CostUSD: row.CostUsd, LatencyMs: int64(row.LatencyMs), Cached: row.Cached,
		CreatedAt: row.CreatedAt.UTC(),
	}
}

// ExportWriter writes export rows in one format.
type ExportWriter interface {
	// Write writes one page of rows.
	Write(rows []ExportRow) error
}

// CSVColumns are the columns of a CSV export, org_id second in the admin export.
func CSVColumns(withOrg bool) []string {
	cols := []string{"id", "created_at", "org_id", "user_id", "api_key_id", "request_id", "endpoint", "alias", "provider", "model",
		"status", "error_code", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd", "latency_ms", "cached"}
	if !withOrg {
		cols = append(cols[:2], cols[3:]...)
	}
	return cols
}

// NewCSVWriter writes RFC 4180 CSV (CRLF line ends, quoted where needed) to w, header
// first, with org_id when withOrg. Text cells a spreadsheet would run as a formula are
// defused (see defuse).
func NewCSVWriter(w io.Writer, withOrg bool) (ExportWriter, error) {
	cw := csv.NewWriter(w)
	cw.UseCRLF = true
	if err := cw.Write(CSVColumns(withOrg)); err != nil {
		return nil, fmt.Errorf("write csv header: %w", err)
	}
	return &csvWriter{w: cw, withOrg: withOrg, rec: make([]string, 0, 18)}, nil
}

type csvWriter struct {
	w       *csv.Writer
	withOrg bool
	rec     []string
}

func (c *csvWriter) Write(rows []ExportRow) error {
	for _, r := range rows {
		rec := append(c.rec[:0], r.ID.String(), r.CreatedAt.Format(time.RFC3339Nano))
		if c.withOrg {
			rec = append(rec, r.OrgID.String())
		}
		rec = append(rec, optionalID(r.UserID), optionalID(r.APIKeyID), defuse(r.RequestID), defuse(r.Endpoint), defuse(r.Alias),
			defuse(r.Provider), defuse(r.Model), r.Status, defuse(r.ErrorCode),
			strconv.FormatInt(r.PromptTokens, 10), strconv.FormatInt(r.CompletionTokens, 10), strconv.FormatInt(r.CachedTokens, 10),
			strconv.FormatFloat(r.CostUSD, 'g', -1, 64), strconv.FormatInt(r.LatencyMs, 10), strconv.FormatBool(r.Cached))
		if err := c.w.Write(rec); err != nil {
			return fmt.Errorf("write csv: %w", err)
		}
	}
	c.w.Flush()
	if err := c.w.Error(); err != nil {
		return fmt.Errorf("write csv: %w", err)
	}
	return nil
}

// defuse prefixes s with a quote when it begins with a character that makes a spreadsheet
// read a cell as a formula (OWASP's CSV injection list), so the cell stays text.
func defuse(s string) string {
	if s != "" {
		switch s[0] {
		case '=', '+', '-', '@', '\t', '\r':
			return "'" + s
		}
	}
	return s
}

func optionalID(id *uuid.UUID) string {
	if id == nil {
		return ""
	}
	return id.String()
}

// NewNDJSONWriter writes one JSON object per line (UsageExportRow in the spec), with
// org_id when withOrg.
func NewNDJSONWriter(w io.Writer, withOrg bool) ExportWriter {
	return &ndjsonWriter{enc: json.NewEncoder(w), withOrg: withOrg}
}

type ndjsonWriter struct {
	enc     *json.Encoder
	withOrg bool
}

// ndjsonRow is the JSON of one row; the spec's UsageExportRow.
type ndjsonRow struct {
	ID               uuid.UUID  `json:"id"`
	CreatedAt        time.Time  `json:"created_at"`
	OrgID            *uuid.UUID `json:"org_id,omitempty"`
	UserID           *uuid.UUID `json:"user_id"`
	APIKeyID         *uuid.UUID `json:"api_key_id"`
	RequestID        string     `json:"request_id"`
	Endpoint         string     `json:"endpoint"`
	Alias            string     `json:"alias"`
	Provider         string     `json:"provider"`
	Model            string     `json:"model"`
	Status           string     `json:"status"`
	ErrorCode        string     `json:"error_code"`
	PromptTokens     int64      `json:"prompt_tokens"`
	CompletionTokens int64      `json:"completion_tokens"`
	CachedTokens     int64      `json:"cached_tokens"`
	CostUSD          float64    `json:"cost_usd"`
	LatencyMs        int64      `json:"latency_ms"`
	Cached           bool       `json:"cached"`
}

func (n *ndjsonWriter) Write(rows []ExportRow) error {
	for _, r := range rows {
		out := ndjsonRow{ID: r.ID, CreatedAt: r.CreatedAt, UserID: r.UserID, APIKeyID: r.APIKeyID, RequestID: r.RequestID,
			Endpoint: r.Endpoint, Alias: r.Alias, Provider: r.Provider, Model: r.Model, Status: r.Status, ErrorCode: r.ErrorCode,
			PromptTokens: r.PromptTokens, CompletionTokens: r.CompletionTokens, CachedTokens: r.CachedTokens, CostUSD: r.CostUSD,
			LatencyMs: r.LatencyMs, Cached: r.Cached}
		if n.withOrg {
			out.OrgID = &r.OrgID
		}
		if err := n.enc.Encode(out); err != nil {
			return fmt.Errorf("write ndjson: %w", err)
		}
	}
	return nil
}
