package server

import (
	"bufio"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/llm/usage"
)

// exportOrgUsage streams the org's usage rows (GET /v1/orgs/{id}/usage/export) to an org
// owner or admin, or a key of the org with billing:read.
func (s *Server) exportOrgUsage(w http.ResponseWriter, r *http.Request) {
	id, err := uuid.Parse(r.PathValue("id"))
	if err != nil {
		s.respondError(w, r, errs.E(errs.NotFound, "No org %s.", r.PathValue("id")))
		return
	}
	access, err := s.adminOrg(r.Context(), &id)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	s.exportUsage(w, r, access.OrgID)
}

// adminExportUsage streams every org's usage rows (GET /v1/admin/usage/export) to a
// platform admin.
func (s *Server) adminExportUsage(w http.ResponseWriter, r *http.Request) {
	if _, err := s.platformAdmin(r.Context()); err != nil {
		s.respondError(w, r, err)
		return
	}
	s.exportUsage(w, r, uuid.Nil)
}

// exportUsage writes the export of org (every org when zero) page by page, flushing each,
// so it holds one page at a time whatever the export's size. A page that fails after the
// headers are sent aborts the response: the client sees a cut transfer, never a
// complete-looking partial file. The request's context ends the export when the client
// goes away.
func (s *Server) exportUsage(w http.ResponseWriter, r *http.Request, org uuid.UUID) {
	q := r.URL.Query()
	var from, to *time.Time
	for name, dst := range map[string]**time.Time{"from": &from, "to": &to} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339, v) // the validator has checked the format
			if err != nil {
				s.respondError(w, r, errs.InvalidFields("invalid window", []errs.FieldError{{Pointer: "/query/" + name, Message: "must be an RFC 3339 date-time"}}))
				return
			}
			*dst = &t
		}
	}
	exp, err := s.llm.Usage.Export(org, from, to)
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	page, err := exp.Next(r.Context()) // a failure before anything is sent is a problem
	if err != nil {
		s.respondError(w, r, err)
		return
	}
	ext, contentType := "csv", "text/csv; charset=utf-8"
	if q.Get("format") == "json" {
		ext, contentType = "ndjson", "application/x-ndjson"
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="usage-%s-%s.%s"`,
		exp.From().Format("20060102T150405Z"), exp.To().Format("20060102T150405Z"), ext))
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 32<<10)
	flush := func() error {
		if err := bw.Flush(); err != nil {
			return err
		}
		return http.NewResponseController(w).Flush()
	}
	var out usage.ExportWriter
	if ext == "csv" {
		out, err = usage.NewCSVWriter(bw, org == uuid.Nil)
	} else {
		out = usage.NewNDJSONWriter(bw, org == uuid.Nil)
	}
	for err == nil && len(page) > 0 {
		if err = out.Write(page); err == nil {
			if err = flush(); err == nil {
				page, err = exp.Next(r.Context())
			}
		}
	}
	if err == nil {
		err = flush()
	}
	if err != nil {
		if r.Context().Err() == nil {
			s.log.ErrorContext(r.Context(), "usage export cut short", "org_id", org, "error", err)
		}
		panic(http.ErrAbortHandler)
	}
}
