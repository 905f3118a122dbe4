package xds

import (
	"context"
	"maps"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meshgit/mesh/internal/adsclient"
)

// The proxies a publish renders for (Server.connected, kept as streams open and close) are
// always those of the nodes that have a stream, through nodes with several streams, streams
// closing in any order, and a node reconnecting as another service.
func TestConnectedProxiesFollowStreams(t *testing.T) {
	s := NewServer(testLogger(t))
	if err := s.SetSnapshot(seal(t, denseMesh(3, ""))); err != nil {
		t.Fatal(err)
	}
	cc := dialRaw(t, startXDS(t, s))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := func() map[Proxy]int {
		s.mu.Lock()
		defer s.mu.Unlock()
		m := map[Proxy]int{}
		for _, n := range s.nodes {
			if len(n.streams) > 0 {
				m[n.proxy]++
			}
		}
		return m
	}
	same := func() bool {
		w := want()
		s.mu.Lock()
		defer s.mu.Unlock()
		return maps.Equal(w, s.connected)
	}
	type stream struct {
		cancel context.CancelFunc
		node   string
	}
	var open []stream
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range 24 {
		if len(open) > 0 && rng.IntN(3) == 0 {
			i := rng.IntN(len(open))
			open[i].cancel()
			open = append(open[:i], open[i+1:]...)
		} else {
			node := []string{"a", "b", "c", "d"}[rng.IntN(4)]
			service := "s" + string(rune('0'+rng.IntN(3)))
			sctx, scancel := context.WithCancel(ctx)
			if _, err := adsclient.Open(sctx, cc, envoyNode(node, service), adsclient.Options{}); err != nil {
				t.Fatal(err)
			}
			open = append(open, stream{cancel: scancel, node: node})
		}
		time.Sleep(20 * time.Millisecond)
		waitFor(t, 5*time.Second, "connected proxies to match the nodes with a stream", same)
		if step%6 == 5 {
			if err := s.SetSnapshot(seal(t, denseMesh(3+step%2, ""))); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, st := range open {
		st.cancel()
	}
	waitFor(t, 5*time.Second, "no connected proxies once every stream closed", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.connected) == 0 && len(s.streams) == 0
	})
}
