package reconciler

import (
	"fmt"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
)

// BenchmarkCrossDCHealthChange: api's one instance in dc2 flips between critical and passing
// through dc2's catalog API (a TTL check); measured from the write until every one of 50
// Envoy-shaped ADS streams of web in dc1 (api fails over to dc2 through the gateways) has ACKed
// the new priorities (2 with dc2 healthy, 1 without). The path: dc2's Raft, its answer to dc1's
// blocking query on /v1/federation/state, dc1's publish, xDS. Two federated one-server
// datacenters on loopback (their federation links through testutil.Relay, as in
// TestFederationLinkCut). The target: p99 under 1 s.
func BenchmarkCrossDCHealthChange(b *testing.B) {
	const streams = 50
	s1, s2, xds1, _, _ := federatedPair(b, failoverDCMesh)
	c1, c2 := consulClient(b, s1.HTTPAddr(), testToken), consulClient(b, s2.HTTPAddr(), testToken)
	registerGateway(b, c1, "gw-dc1", 18443)
	registerGateway(b, c2, "gw-dc2", 19443)
	if err := c2.Agent().ServiceRegister(&consul.AgentServiceRegistration{ID: "api-2", Name: "api", Address: "127.0.0.1", Port: 22000,
		Check: &consul.AgentServiceCheck{CheckID: "api-2-ttl", TTL: "1h", Status: consul.HealthPassing}}); err != nil {
		b.Fatal(err)
	}
	webs := make([]*prioStream, streams)
	for i := range webs {
		webs[i] = watchPriorities(b, xds1, fmt.Sprintf("web-%d", i), "web", "api.")
	}
	waitAll := func(prios int) time.Time {
		var last time.Time
		deadline := time.Now().Add(10 * time.Second)
		for i, w := range webs {
			at, ok := w.waitPrios(prios, deadline)
			if !ok {
				b.Fatalf("web-%d did not ACK %d priorities within 10s", i, prios)
			}
			last = maxTime(last, at)
		}
		return last
	}
	waitAll(2)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		fail := i%2 == 0
		start := time.Now()
		var err error
		if fail {
			err = c2.Agent().FailTTL("api-2-ttl", "down")
		} else {
			err = c2.Agent().PassTTL("api-2-ttl", "up")
		}
		if err != nil {
			b.Fatal(err)
		}
		want := 2
		if fail {
			want = 1
		}
		lat = append(lat, waitAll(want).Sub(start))
	}
	b.StopTimer()
	reportLatency(b, lat)
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
