package llm

import (
	"fmt"

	"github.com/kilnhq/kiln/internal/errs"
)

var (
	_ errs.Classifier = (*Error)(nil)
	_ errs.Classifier = noTargetError{}
)

// Classify places an upstream failure in Kiln's catalog (errs.Classifier). The message
// names the provider and passes its text on, except for credential failures: those are
// the operator's to fix, and the caller learns only that it failed.
func (e *Error) Classify() *errs.Error {
	return &errs.Error{Code: e.code(), Message: e.detail()}
}

func (e *Error) code() errs.Code {
	switch e.Kind {
	case KindInvalid, KindUnsupported:
		return errs.UpstreamRejected
	case KindRateLimited:
		return errs.UpstreamRateLimited
	case KindTimeout:
		return errs.UpstreamTimeout
	default:
		return errs.UpstreamError
	}
}

func (e *Error) detail() string {
	switch e.Kind {
	case KindAuth:
		return fmt.Sprintf("The provider %s refused Kiln's credentials (HTTP %d); the operator must fix its key.", e.Provider, e.Status)
	case KindConnection, KindProtocol, KindTimeout:
		return fmt.Sprintf("The provider %s failed: %s.", e.Provider, e.Message)
	}
	if e.Status != 0 {
		return fmt.Sprintf("The provider %s answered HTTP %d: %s", e.Provider, e.Status, e.Message)
	}
	return fmt.Sprintf("The provider %s failed: %s", e.Provider, e.Message)
}

// noTargetError is ErrNoTarget: every target of an alias is unavailable.
type noTargetError struct{}

func (noTargetError) Error() string { return "no target available" }

// Classify is model_unavailable (errs.Classifier).
func (noTargetError) Classify() *errs.Error {
	return errs.E(errs.ModelUnavailable, "Every target of the model is unavailable right now (circuit open or at its concurrency limit); retry shortly.")
}
