package xds

import (
	"context"
	"errors"
	"sync"
)

// handleRequests reads a stream's requests on a goroutine of its own and handles each one on
// that goroutine, holding mu: a request (mostly an ACK) costs no hand-over to the stream's
// goroutine, which only wakes for what the cache changes. The returned channel receives
// exactly one value when the loop ends: nil at the stream's first failing Recv (the client
// went away, or the stream ended), or handle's first error. Once *stopped is true (set under
// mu by the stream's goroutine as it returns), nothing more is handled, so nothing is sent or
// reported to the callbacks for a stream that has ended; the goroutine ends with the stream's
// next failing Recv.
func handleRequests[T any](recv func() (T, error), mu *sync.Mutex, stopped *bool, handle func(T) error) <-chan error {
	end := make(chan error, 1)
	go func() {
		for {
			req, err := recv()
			if err != nil {
				end <- nil
				return
			}
			mu.Lock()
			if *stopped {
				mu.Unlock()
				end <- nil
				return
			}
			err = handle(req)
			mu.Unlock()
			if err != nil {
				end <- err
				return
			}
		}
	}()
	return end
}

// streamContext returns a stream's context (killable, ads.go) that also ends when the server's
// ends, so that a stream's goroutine waits on one channel for both; streamEnd turns its cause
// into what the handler returns: nil when the server closed, else the kill's cause.
func streamContext(parent, server context.Context) (context.Context, func()) {
	ctx, cancel := killable(parent)
	stop := context.AfterFunc(server, func() { cancel(ErrClosed) })
	return ctx, func() {
		stop()
		cancel(nil)
	}
}

func streamEnd(ctx context.Context) error {
	if err := context.Cause(ctx); !errors.Is(err, ErrClosed) {
		return err
	}
	return nil
}
