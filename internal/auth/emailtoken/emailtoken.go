// Package emailtoken issues and spends the single-use, expiring tokens that Kiln sends by
// email: address verification (kiln_ve_…, valid 48 hours) and password reset (kiln_pr_…,
// valid 1 hour).
//
// A token is its purpose's prefix and 32 bytes from crypto/rand in unpadded base64url. Only
// its SHA-256 is stored, with the user, the address it was sent to and its expiry. Issuing a
// token deletes the user's earlier tokens of the same purpose, so only the newest link in
// the user's inbox works. Spending one marks it used in the caller's transaction: if the
// action it authorises fails and rolls back, the token stays unspent.
//
// Every token that cannot be spent (malformed, unknown, of another purpose, used, expired)
// gets the one error [Invalid] returns, so a caller learns nothing more from it.
package emailtoken

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/gen/db"
	"github.com/kilnhq/kiln/internal/auth/opaque"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/store"
)

// Purpose is what a token authorises.
type Purpose string

// The purposes, as stored in email_tokens.purpose.
const (
	// VerifyEmail tokens confirm that the user receives mail at an address.
	VerifyEmail Purpose = "verify_email"
	// ResetPassword tokens let the user choose a new password without the old one.
	ResetPassword Purpose = "reset_password"
)

// Prefix returns the start of every token of p ("kiln_ve_", "kiln_pr_"), so that a token
// pasted into the wrong place is recognised by people and secret scanners.
func (p Purpose) Prefix() string {
	switch p {
	case VerifyEmail:
		return "kiln_ve_"
	case ResetPassword:
		return "kiln_pr_"
	}
	return ""
}

// TTL returns how long a token of p stays valid: 48 hours to verify an address (mail can
// take a while to be read), 1 hour to reset a password (a reset link is a key to the account).
func (p Purpose) TTL() time.Duration {
	switch p {
	case VerifyEmail:
		return 48 * time.Hour
	case ResetPassword:
		return time.Hour
	}
	return 0
}

// valid reports whether p is one of the purposes above.
func (p Purpose) valid() bool { return p.Prefix() != "" }

// Token is an issued token as stored, without its secret.
type Token struct {
	ID      uuid.UUID
	UserID  uuid.UUID
	Purpose Purpose
	// Email is the address the token was sent to.
	Email     string
	CreatedAt time.Time
	ExpiresAt time.Time
	// UsedAt is when the token was spent; nil while it is not.
	UsedAt *time.Time
}

// Invalid returns the one error for every token that cannot be spent: invalid_request
// naming /token.
func Invalid() *errs.Error {
	return &errs.Error{
		Code:    errs.Invalid,
		Message: "invalid or expired token",
		Fields:  []errs.FieldError{{Pointer: "/token", Message: "is invalid or expired"}},
	}
}

// Issue deletes userID's earlier tokens of purpose p and stores a new one for email,
// expiring p.TTL() after now; it returns the token, which is not stored and cannot be read
// back. q must be a transaction (the one that decides the token may be sent): concurrent
// Issues for one user and purpose wait for each other's transactions, so that only the
// token issued last is left.
func Issue(ctx context.Context, q *db.Queries, p Purpose, userID uuid.UUID, email string, now time.Time) (string, Token, error) {
	if !p.valid() {
		return "", Token{}, fmt.Errorf("issue email token: unknown purpose %q", p)
	}
	if err := q.LockEmailTokenIssue(ctx, db.LockEmailTokenIssueParams{UserID: userID, Purpose: string(p)}); err != nil {
		return "", Token{}, fmt.Errorf("issue email token: lock: %w", err)
	}
	if _, err := q.DeleteUserEmailTokens(ctx, db.DeleteUserEmailTokensParams{UserID: userID, Purpose: string(p)}); err != nil {
		return "", Token{}, fmt.Errorf("issue email token: delete earlier tokens: %w", err)
	}
	token := opaque.New(p.Prefix())
	row, err := q.CreateEmailToken(ctx, db.CreateEmailTokenParams{
		ID:        uuid.Must(uuid.NewV7()),
		UserID:    userID,
		Purpose:   string(p),
		Email:     email,
		TokenHash: opaque.Hash(token),
		Now:       now,
		ExpiresAt: now.Add(p.TTL()),
	})
	if err != nil {
		return "", Token{}, fmt.Errorf("issue email token: %w", err)
	}
	return token, toToken(row), nil
}

// Consume spends token, which must be an unused, unexpired token of purpose p at now, and
// returns it. The token row stays locked until q's transaction ends: a concurrent Consume of
// the same token waits and then fails, unless this transaction rolls back. Errors: [Invalid].
func Consume(ctx context.Context, q *db.Queries, p Purpose, token string, now time.Time) (Token, error) {
	if !WellFormed(p, token) {
		return Token{}, Invalid()
	}
	row, err := q.ConsumeEmailToken(ctx, db.ConsumeEmailTokenParams{Now: now, TokenHash: opaque.Hash(token), Purpose: string(p)})
	if errs.CodeOf(store.Translate(err)) == errs.NotFound {
		return Token{}, Invalid()
	}
	if err != nil {
		return Token{}, fmt.Errorf("spend email token: %w", err)
	}
	return toToken(row), nil
}

// WellFormed reports whether token could be a token of purpose p: its prefix followed by
// 32 bytes in unpadded base64url. It spares the database lookups for garbage.
func WellFormed(p Purpose, token string) bool {
	return p.valid() && opaque.WellFormed(token, p.Prefix())
}

func toToken(r db.EmailToken) Token {
	return Token{
		ID:        r.ID,
		UserID:    r.UserID,
		Purpose:   Purpose(r.Purpose),
		Email:     r.Email,
		CreatedAt: r.CreatedAt.UTC(),
		ExpiresAt: r.ExpiresAt.UTC(),
		UsedAt:    store.UTC(r.UsedAt),
	}
}
