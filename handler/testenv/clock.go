package testenv

import (
	"sync"
	"time"
)

// Clock is a fake clock for code that takes a func() time.Time: it stands
// still until a test advances it, so expiry can be tested without waiting.
// Safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock at a fixed instant (2026-03-01 12:00 UTC), so
// that runs are reproducible.
func NewClock() *Clock { return &Clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

// Now is the clock's time; pass c.Now where a clock function is wanted.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
