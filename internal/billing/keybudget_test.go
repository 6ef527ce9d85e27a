package billing_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/kilnhq/kiln/internal/auth/apikey"
	"github.com/kilnhq/kiln/internal/billing"
	"github.com/kilnhq/kiln/internal/llm"
)

// apiKeyWithBudget inserts an API key of org with a token budget (nil: none).
func apiKeyWithBudget(t *testing.T, b bundle, budget *int64) uuid.UUID {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	secret, err := apikey.Generate("test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.st.Pool.Exec(t.Context(), `INSERT INTO api_keys (id, org_id, name, display, secret_hash, scopes, created_at, token_budget)
		VALUES ($1, $2, 'budget', $3, $4, '{chat}', now(), $5)`, id, b.org, apikey.Display(secret), apikey.Hash(secret), budget); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestAPIKeyTokenBudget runs 50 concurrent callers with an API key whose budget is far
// below its org's limit: the key's spend ends at most at its budget and within one
// reservation of it, refusals name api_key_tokens, the org counts exactly what the key
// spent (a refused call's org hold is given back), and another key of the org is not held
// by the budget.
func TestAPIKeyTokenBudget(t *testing.T) {
	t.Parallel()
	const orgLimit, budget, callers, maxTokens = 1_000_000, 2000, 50, 24
	b := setup(t, orgLimit)
	limited := apiKeyWithBudget(t, b, new(int64(budget)))
	ctx := llm.WithAPIKey(llm.WithOrg(t.Context(), b.org), limited)
	reservation := int64(llm.PromptBound(request("hello budget 00", maxTokens)) + maxTokens)
	period := mustSub(t, b).Period
	keyCounter := billing.Counter{Org: b.org, Period: period, Key: limited}
	var spent atomic.Int64
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			for {
				used, err := call(ctx, b.gateway, request(fmt.Sprintf("hello budget %02d", i), maxTokens), i%2 == 0)
				if err == nil {
					spent.Add(int64(used))
					continue
				}
				var qe *billing.QuotaError
				if !errors.As(err, &qe) || qe.Name != billing.LimitAPIKeyTokens || qe.Limit != budget {
					t.Errorf("caller %d: %v, want the key's budget refusing", i, err)
					return
				}
				u, _, err := b.quota.Usage(context.Background(), keyCounter)
				if err != nil {
					t.Error(err)
					return
				}
				if u+reservation > budget {
					return
				}
			}
		})
	}
	wg.Wait()
	keyUsed, keyHeld, err := b.quota.Usage(t.Context(), keyCounter)
	if err != nil {
		t.Fatal(err)
	}
	orgUsed, orgHeld, err := b.quota.Usage(t.Context(), billing.Counter{Org: b.org, Period: period})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("key spent %d of %d (reservation %d); org counted %d", keyUsed, budget, reservation, orgUsed)
	if keyUsed != spent.Load() || orgUsed != keyUsed {
		t.Errorf("key counted %d, org %d, the calls used %d", keyUsed, orgUsed, spent.Load())
	}
	if keyUsed > budget || budget-keyUsed >= reservation {
		t.Errorf("key spent %d of its budget %d: past it, or more than one reservation short", keyUsed, budget)
	}
	if keyHeld != 0 || orgHeld != 0 {
		t.Errorf("still held after every call ended: key %d, org %d", keyHeld, orgHeld)
	}

	other := apiKeyWithBudget(t, b, nil)
	if _, err := call(llm.WithAPIKey(llm.WithOrg(t.Context(), b.org), other), b.gateway, request("another key", maxTokens), false); err != nil {
		t.Fatalf("a key without a budget: %v", err)
	}
}
