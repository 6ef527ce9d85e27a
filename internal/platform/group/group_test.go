package group

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestGroup: calls made while a batch is in flight form the next batch, each call gets
// its own answer, and a failing or panicking batch fails its calls only.
func TestGroup(t *testing.T) {
	t.Parallel()
	const callers = 100
	release := make(chan struct{})
	var mu sync.Mutex
	var sizes []int
	g := New(64, func(_ context.Context, in []int) ([]int, error) {
		mu.Lock()
		first := len(sizes) == 0
		sizes = append(sizes, len(in))
		mu.Unlock()
		if first {
			<-release // hold the first batch until every other call waits
		}
		switch in[0] {
		case -1:
			return nil, errors.New("batch failed")
		case -2:
			panic("batch panicked")
		}
		out := make([]int, len(in))
		for i, v := range in {
			out[i] = 2 * v
		}
		return out, nil
	})

	var wg sync.WaitGroup
	got := make([]int, callers)
	wg.Go(func() { got[0], _ = g.Do(t.Context(), 0) })
	waitQueued(t, g, 0) // the first call leads and holds its batch
	for i := 1; i < callers; i++ {
		wg.Go(func() {
			v, err := g.Do(t.Context(), i)
			if err != nil {
				t.Errorf("call %d: %v", i, err)
			}
			got[i] = v
		})
	}
	waitQueued(t, g, callers-1)
	close(release)
	wg.Wait()
	for i, v := range got {
		if v != 2*i {
			t.Fatalf("call %d answered %d, want %d", i, v, 2*i)
		}
	}
	if fmt.Sprint(sizes) != "[1 64 35]" { // the first alone, then the 99 that waited
		t.Fatalf("batch sizes %v, want [1 64 35]", sizes)
	}

	for _, bad := range []int{-1, -2} {
		if _, err := g.Do(t.Context(), bad); err == nil {
			t.Errorf("call %d: no error", bad)
		}
	}
	if v, err := g.Do(t.Context(), 21); v != 42 || err != nil {
		t.Fatalf("after failed batches: %d, %v", v, err)
	}
}

// waitQueued waits until n calls wait for a batch.
func waitQueued(t *testing.T, g *Group[int, int], n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		g.mu.Lock()
		queued, leading := len(g.queue), g.leading
		g.mu.Unlock()
		if queued == n && leading {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d calls queued, want %d", queued, n)
		}
		time.Sleep(time.Millisecond)
	}
}
