package compiler

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// parallel calls f(0), ..., f(n-1) on every core and returns when all have returned. f must be
// safe to call concurrently; once stop reports true (nil: never), no further call starts.
func parallel(n int, stop func() bool, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			for stop == nil || !stop() {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}
