package xds

import (
	"runtime"
	"sync"
	"weak"
)

// keepWeak records v in m under key, held weakly: once v is unreachable the garbage collector
// frees it, and the entry is then deleted, unless another value has taken the key meanwhile.
// It must be called with mu held, and mu must guard m. The interned name sets and lists and the
// shared response bodies of the stream servers are kept this way: as long as a stream holds
// one, another stream finds it, and nothing else keeps it.
func keepWeak[T any](mu *sync.Mutex, m map[uint64]weak.Pointer[T], key uint64, v *T) {
	m[key] = weak.Make(v)
	runtime.AddCleanup(v, func(key uint64) {
		mu.Lock()
		defer mu.Unlock()
		if m[key].Value() == nil {
			delete(m, key)
		}
	}, key)
}
