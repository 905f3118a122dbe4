package ca

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkSign is the raw cost of one leaf: CSR parse and checks, signature, encoding (no HTTP,
// no limiter), on every core.
func BenchmarkSign(b *testing.B) {
	c := newTestCA(b, Config{Rate: -1})
	csr := csrFor(b, p256(b), nil)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Sign("api", csr); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "leaves/s")
}

// BenchmarkSignCPU reports the CPU time one leaf costs (getrusage, all threads), which unlike
// leaves/s does not depend on what else the shared machine is running: 1e6/cpu-µs is the leaves a
// second one idle core can sign.
func BenchmarkSignCPU(b *testing.B) {
	c := newTestCA(b, Config{Rate: -1})
	csr := csrFor(b, p256(b), nil)
	before := cpuTime()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Sign("api", csr); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64((cpuTime()-before)/time.Microsecond)/float64(b.N), "cpu-µs/leaf")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSignHTTP is a CSR storm over loopback HTTP from 16 clients that retry at once on 429,
// without limits (raw) and with the defaults (limited: DefaultRate, DefaultBurst, half the cores). leaves/s counts signed leaves,
// refused/s the 429s; cpu-µs/req the CPU per request of server and clients together;
// tick-p99-ms is the 99th percentile lateness of a 5 ms ticker running next
// to the storm: a stand-in for Raft's heartbeat goroutine, which must keep running on time.
func BenchmarkSignHTTP(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  Config
	}{
		{"raw", Config{Rate: -1, MaxConcurrent: -1}},
		{"limited", Config{}},
		// A rate below what the machine can sign, to show what refusing costs.
		{"rate500", Config{Rate: 500, Burst: 50}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := newTestCA(b, bc.cfg)
			srv := httptest.NewServer(c.Handler())
			defer srv.Close()
			tok, _, _ := c.CreateToken(context.Background(), ScopeService, "api")
			body, _ := json.Marshal(SignRequest{Service: "api", CSR: string(csrFor(b, p256(b), nil))})
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			var ok, refused atomic.Int64

			stop := make(chan struct{})
			late := ticker(stop)
			b.SetParallelism(8)
			cpu0 := cpuTime()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest("POST", srv.URL+"/v1/ca/sign", bytes.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+tok)
					resp, err := hc.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					switch resp.StatusCode {
					case 200:
						ok.Add(1)
					case 429:
						refused.Add(1)
					default:
						b.Errorf("HTTP %d", resp.StatusCode)
						return
					}
				}
			})
			b.StopTimer()
			cpu := cpuTime() - cpu0
			close(stop)
			secs := b.Elapsed().Seconds()
			b.ReportMetric(float64(ok.Load())/secs, "leaves/s")
			b.ReportMetric(float64(refused.Load())/secs, "refused/s")
			b.ReportMetric(float64(<-late)/float64(time.Millisecond), "tick-p99-ms")
			if n := ok.Load() + refused.Load(); n > 0 {
				// Server and in-process clients together: an upper bound of the server's cost.
				b.ReportMetric(float64(cpu/time.Microsecond)/float64(n), "cpu-µs/req")
			}
		})
	}
}

// ticker measures how late a 5 ms ticker fires until stop closes, and sends the p99.
func ticker(stop chan struct{}) chan time.Duration {
	out := make(chan time.Duration, 1)
	var mu sync.Mutex
	var lates []time.Duration
	go func() {
		const period = 5 * time.Millisecond
		next := time.Now().Add(period)
		for {
			select {
			case <-stop:
				mu.Lock()
				slices.Sort(lates)
				var p99 time.Duration
				if n := len(lates); n > 0 {
					p99 = lates[n*99/100]
				}
				mu.Unlock()
				out <- p99
				return
			case <-time.After(time.Until(next)):
			}
			mu.Lock()
			lates = append(lates, time.Since(next))
			mu.Unlock()
			next = next.Add(period)
			if time.Until(next) < 0 {
				next = time.Now().Add(period)
			}
		}
	}()
	return out
}
