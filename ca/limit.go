package ca

import (
	"sync"
	"time"
)

// Limiter is a token bucket: Rate tokens a second, at most Burst in the bucket. The CA takes one
// per leaf before it does any cryptography, and answers 429 when the bucket is empty, so that a CSR
// storm costs the server a hash lookup per request and no more: Raft heartbeats and xDS keep their
// CPU.
type Limiter struct {
	mu     sync.Mutex
	rate   float64 // tokens per second; <= 0 means no limit
	burst  float64
	tokens float64
	last   time.Time
	now    func() time.Time
}

// NewLimiter returns a full bucket. rate <= 0 disables limiting.
func NewLimiter(rate float64, burst int) *Limiter {
	if burst < 1 {
		burst = 1
	}
	return &Limiter{rate: rate, burst: float64(burst), tokens: float64(burst), now: time.Now}
}

// Allow takes a token if there is one. Otherwise it returns false and how long until one is due.
func (l *Limiter) Allow() (bool, time.Duration) {
	if l == nil || l.rate <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	if l.tokens >= 1 {
		l.tokens--
		return true, 0
	}
	return false, time.Duration((1 - l.tokens) / l.rate * float64(time.Second))
}
