package xds

import (
	"runtime"
	"sync"
	"testing"
	"time"
	"weak"
)

// TestKeepWeak: an entry is found while its value is reachable, deleted once it is not, and
// an entry that took the key meanwhile survives the cleanup of the value it replaced.
func TestKeepWeak(t *testing.T) {
	var mu sync.Mutex
	m := map[uint64]weak.Pointer[[64]byte]{}
	held := new([64]byte)
	mu.Lock()
	keepWeak(&mu, m, 1, held)
	keepWeak(&mu, m, 2, new([64]byte)) // unreachable at once
	old := new([64]byte)
	keepWeak(&mu, m, 3, old)
	replacement := new([64]byte)
	keepWeak(&mu, m, 3, replacement) // takes key 3; old is unreachable below
	mu.Unlock()
	old = nil
	_ = old

	lookup := func(key uint64) (*[64]byte, bool) {
		mu.Lock()
		defer mu.Unlock()
		p, ok := m[key]
		return p.Value(), ok
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		if _, ok := lookup(2); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the entry of an unreachable value is still there after 5 s of collections")
		}
		time.Sleep(10 * time.Millisecond)
	}
	runtime.GC() // old's cleanup has run by now or runs with this one; wait for it as above
	time.Sleep(50 * time.Millisecond)
	if v, ok := lookup(1); !ok || v != held {
		t.Fatalf("the entry of a reachable value: %p, %v; want %p", v, ok, held)
	}
	if v, ok := lookup(3); !ok || v != replacement {
		t.Fatalf("key 3 after the value it first held was collected: %p, %v; want the replacement %p", v, ok, replacement)
	}
	runtime.KeepAlive(held)
	runtime.KeepAlive(replacement)
}
