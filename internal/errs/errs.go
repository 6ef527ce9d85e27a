// Package errs is Kiln's domain error vocabulary: an Error carries a stable Code from one
// catalog and a message safe to show to the client. The HTTP layer maps codes to statuses.
package errs

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Code is a stable, snake_case error code; the catalog is documented in docs/errors.md and
// in the ErrorCode schema of openapi/openapi.yaml.
type Code string

// The error-code catalog.
const (
	Invalid               Code = "invalid_request"
	MalformedJSON         Code = "malformed_json"
	UnsupportedMediaType  Code = "unsupported_media_type"
	NotFound              Code = "not_found"
	MethodNotAllowed      Code = "method_not_allowed"
	RequestTooLarge       Code = "request_too_large"
	Unauthenticated       Code = "unauthenticated"
	PermissionDenied      Code = "permission_denied"
	Conflict              Code = "conflict"
	IdempotencyKeyReused  Code = "idempotency_key_reused"
	IdempotencyInProgress Code = "idempotency_in_progress"
	StreamExpired         Code = "stream_expired"
	RateLimited           Code = "rate_limited"
	Timeout               Code = "timeout"
	NotReady              Code = "not_ready"
	Unavailable           Code = "unavailable"
	Internal              Code = "internal"
	ModelUnavailable      Code = "model_unavailable"
	UpstreamRejected      Code = "upstream_rejected"
	UpstreamRateLimited   Code = "upstream_rate_limited"
	UpstreamTimeout       Code = "upstream_timeout"
	UpstreamError         Code = "upstream_error"
	QuotaExceeded         Code = "quota_exceeded"
	PaymentRequired       Code = "payment_required"
	FeatureNotInPlan      Code = "feature_not_in_plan"
	// PlanLimitReached: a change would pass a count limit of the org's plan (seats, knowledge
	// bases, documents, storage).
	PlanLimitReached Code = "plan_limit_reached"
	// ProviderNotConfigured: the payment provider an operation needs has no configuration.
	ProviderNotConfigured Code = "provider_not_configured"
	// RetentionExpired: a deleted item is past its org's retention window and can no
	// longer be restored (the housekeeping task purges it).
	RetentionExpired Code = "retention_expired"
	// ExportDownloaded: a privacy export's archive was downloaded already (its link works once).
	ExportDownloaded Code = "export_downloaded"
	// ExportLinkExpired: a privacy export's link is past its expiry; ask for a new export.
	ExportLinkExpired Code = "export_link_expired"
	// SoleOwner: the user is the only owner of an org with other members, which must be
	// handed over or deleted before the account may be.
	SoleOwner Code = "sole_owner"
	// OrgDeletionPending: the org is scheduled for erasure; its writes are refused until it
	// is restored.
	OrgDeletionPending Code = "org_deletion_pending"
	// PlanFromConfig: the plan is one of config (billing.plans), read-only through the
	// admin API, whose plans may not take a config plan's id either.
	PlanFromConfig Code = "plan_from_config"
)

// FieldError names one invalid field with a JSON Pointer.
type FieldError struct {
	Pointer string
	Message string
}

// Error is a domain error with a client-safe message.
type Error struct {
	Code    Code
	Message string
	Fields  []FieldError
	// Quota is the limit a QuotaExceeded error hit, for the client to act on (problem
	// members, RateLimit headers, Retry-After); nil for other errors.
	Quota *Quota
}

// Quota is one quota's state when it refused a call.
type Quota struct {
	Name     string // the limit's name, as the entitlements list it (tokens, api_key_tokens)
	Limit    int64
	Used     int64 // spent this period
	Reserved int64 // held by calls in flight
	Window   time.Duration
	ResetsAt time.Time // the end of the period
}

// Remaining is what is left of the quota now, never below zero.
func (q *Quota) Remaining() int64 { return max(0, q.Limit-q.Used-q.Reserved) }

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// E returns an *Error with a formatted message.
func E(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// InvalidFields joins field errors into one invalid_request error whose message names
// each field, or returns nil when there are none.
func InvalidFields(what string, fields []FieldError) error {
	if len(fields) == 0 {
		return nil
	}
	msgs := make([]string, len(fields))
	for i, f := range fields {
		msgs[i] = strings.TrimPrefix(f.Pointer, "/") + " " + f.Message
	}
	return &Error{Code: Invalid, Message: what + ": " + strings.Join(msgs, "; "), Fields: fields}
}

// CodeOf returns the code of the first *Error in err's chain, Internal otherwise.
func CodeOf(err error) Code {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Code
	}
	return Internal
}
