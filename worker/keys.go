package worker

import (
	"context"
	"time"

	"github.com/kilnhq/kiln/internal/jobs"
)

// KindRotateSigningKey is the periodic job that replaces the access-token signing key once it
// reaches auth.signing_key_rotation; older keys keep verifying until their tokens expire. Two
// runs at once rotate once: the key's age is read under the rotation's lock.
var KindRotateSigningKey = jobs.Kind{Name: "auth.rotate_signing_key", MaxAttempts: 3, Timeout: time.Minute,
	Backoff: jobs.Backoff{Base: 30 * time.Second, Max: 5 * time.Minute}}

// RotateSigningKeyPayload is the payload of KindRotateSigningKey (it takes none).
type RotateSigningKeyPayload struct{}

// RotatedKey is the result of KindRotateSigningKey: the new key's kid, empty when the key
// that signs was not old enough.
type RotatedKey struct {
	Kid string `json:"kid,omitempty"`
}

// RegisterKeyRotation declares KindRotateSigningKey; rotate replaces the signing key when it
// is due and returns the new kid, or "" when it is not.
func RegisterKeyRotation(reg *jobs.Registry, rotate func(ctx context.Context) (kid string, err error)) {
	jobs.Register(reg, KindRotateSigningKey, func(ctx context.Context, _ *jobs.Run, _ RotateSigningKeyPayload) (any, error) {
		kid, err := rotate(ctx)
		return RotatedKey{Kid: kid}, err
	})
}
