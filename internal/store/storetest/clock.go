package storetest

import (
	"sync"
	"time"
)

// Clock is the one test clock: a time source for the `now func() time.Time` every service
// takes, which a test moves by hand. It is safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock at the real time in UTC, cut to whole microseconds as PostgreSQL
// stores times: the database's now() and the service agree until the test moves the clock,
// and a time read back from a row equals the one written.
func NewClock() *Clock { return ClockAt(time.Now().UTC().Truncate(time.Microsecond)) }

// ClockAt returns a clock at t, for tests that need a fixed date.
func ClockAt(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock by d and returns the new time.
func (c *Clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}
