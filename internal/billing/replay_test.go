package billing_test

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kilnhq/kiln/internal/billing"
)

// replayPost is one delivery of a provider's notification: a real one, which must be
// accepted however often it comes, or a forgery, which must be refused as not believed.
type replayPost struct {
	real bool
	kind string
	send func() error
}

// replay sends posts shuffled from 16 goroutines at once and fails t on a real post
// refused or a forgery not refused; it returns how many were forged.
func replay(t *testing.T, posts []replayPost) (forged int64) {
	t.Helper()
	rand.Shuffle(len(posts), func(i, j int) { posts[i], posts[j] = posts[j], posts[i] })
	var next, forgeries, refused atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(posts) {
					return
				}
				p := posts[i]
				err := p.send()
				switch {
				case p.real && err != nil:
					t.Errorf("%s refused: %v", p.kind, err)
				case !p.real:
					forgeries.Add(1)
					if errors.Is(err, billing.ErrNotBelieved) {
						refused.Add(1)
					} else {
						t.Errorf("%s not refused: %v", p.kind, err)
					}
				}
			}
		})
	}
	wg.Wait()
	if forgeries.Load() == 0 || refused.Load() != forgeries.Load() {
		t.Errorf("forgeries refused: %d of %d", refused.Load(), forgeries.Load())
	}
	return forgeries.Load()
}
