package xds

import "context"

// receive reads a stream's requests on its own goroutine and hands them over on the returned
// channel, which is closed when the stream fails (the client went away) or ctx ends. The ADS
// servers select over it and their wake-ups; the goroutine ends with the stream.
func receive[T any](ctx context.Context, recv func() (T, error)) <-chan T {
	reqs := make(chan T)
	go func() {
		defer close(reqs)
		for {
			req, err := recv()
			if err != nil {
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	return reqs
}
