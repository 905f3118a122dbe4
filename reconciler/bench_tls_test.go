package reconciler

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/xds"
)

// BenchmarkPushTLS measures, per push, the time from `git push` returning to an xDS client of
// every server having ACKed the new version, on two clusters of the same size in the same run,
// pushes alternating between them: one plaintext, one with TLS on every channel (Raft over
// mutual TLS, joins over HTTPS, xDS with mTLS as mesh serve --xds-tls). Both clusters' clients
// are the same minimal ADS client (Envoy-shaped, CDS and LDS), over TLS or not. It reports the
// p50 of each and the overhead of TLS at the p50 and the mean.
func BenchmarkPushTLS(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			clusters := [2]*benchCluster{newBenchCluster(b, n, false), newBenchCluster(b, n, true)}
			var lat [2][]time.Duration
			b.ResetTimer()
			for i := range b.N {
				for k, c := range clusters {
					lat[k] = append(lat[k], c.push(b, i+1))
				}
			}
			b.StopTimer()
			p50 := func(l []time.Duration) float64 {
				l = slices.Clone(l)
				slices.Sort(l)
				return float64(l[len(l)/2].Microseconds()) / 1000
			}
			mean := func(l []time.Duration) float64 {
				var sum time.Duration
				for _, d := range l {
					sum += d
				}
				return float64(sum.Microseconds()) / 1000 / float64(len(l))
			}
			b.ReportMetric(p50(lat[0]), "plain-p50-ms")
			b.ReportMetric(p50(lat[1]), "tls-p50-ms")
			b.ReportMetric(100*(p50(lat[1])/p50(lat[0])-1), "tls-overhead-p50-%")
			b.ReportMetric(100*(mean(lat[1])/mean(lat[0])-1), "tls-overhead-mean-%")
		})
	}
}

// benchCluster is n servers on their own repository, each with an xDS server and one ADS client.
type benchCluster struct {
	repo  *testRepo
	xdss  []*xds.Server
	nodes []string // the ADS clients' node ids, one per server
}

var benchClusterRun atomic.Int64

func newBenchCluster(b *testing.B, n int, secure bool) *benchCluster {
	b.Helper()
	run := benchClusterRun.Add(1)
	c := &benchCluster{repo: newTestRepo(b)}
	c.repo.commit(meshFiles(0), "v0", false)
	v0 := versionOf(b, meshFiles(0))
	var pki *testPKI
	if secure {
		pki = newTestPKI(b)
	}
	var join string
	servers := make([]*Server, n)
	addrs := make([]string, n)
	for i := range n {
		cfg := testConfig(b, c.repo.bare, nodeOpts{join: join})
		var srv atomic.Pointer[Server]
		opts := []xds.Option{}
		var gopts []grpc.ServerOption
		if secure {
			cfg.TLS = pki.server(fmt.Sprintf("node%d", i))
			serving := &xds.ServingCertificate{Sign: func(csr []byte) ([]byte, error) {
				l, err := srv.Load().CA().Sign(xds.ServerIdentity, csr)
				if err != nil {
					return nil, err
				}
				return []byte(l.CertPEM), nil
			}}
			opts = append(opts, xds.WithPeerAuthentication())
			gopts = append(gopts, grpc.Creds(xds.ServerCredentials(func() *x509.CertPool { return caPool(srv.Load()) }, serving.Certificate)))
		}
		x := xds.NewServer(cfg.Log, opts...)
		g := grpc.NewServer(gopts...)
		x.Register(g)
		lis := listenLoopback(b)
		go g.Serve(lis)
		b.Cleanup(func() { x.Close(); g.Stop() })
		cfg.Publisher, cfg.Proxies = x, x.Proxies
		s := startServer(b, cfg)
		srv.Store(s)
		if i == 0 {
			join = s.HTTPAddr()
		}
		servers[i], addrs[i] = s, lis.Addr().String()
		c.xdss = append(c.xdss, x)
	}
	for _, s := range servers {
		waitFor(b, 30*time.Second, "the CA on every server", func() bool { _, err := s.CA().Bundle(); return err == nil })
	}
	bundle, _ := servers[0].CA().Bundle()
	for i, x := range c.xdss {
		if err := x.SetTrustBundle([]byte(bundle.BundlePEM)); err != nil {
			b.Fatal(err)
		}
		creds := grpc.WithTransportCredentials(insecure.NewCredentials())
		if secure {
			cert := workloadCert(b, servers[i].CA(), "web")
			creds = grpc.WithTransportCredentials(xds.ClientCredentials("test.mesh",
				func() *x509.CertPool { return caPool(servers[i]) }, func() (*tls.Certificate, error) { return cert, nil }))
		}
		node := fmt.Sprintf("web-%d-%d", run, i)
		adsClient(b, addrs[i], creds, node)
		c.nodes = append(c.nodes, node)
	}
	c.waitAcked(b, v0, 30*time.Second)
	return c
}

func (c *benchCluster) waitAcked(b *testing.B, v string, d time.Duration) {
	deadline := time.Now().Add(d)
	for i, x := range c.xdss {
		for !acked(x, c.nodes[i], v) {
			if time.Now().After(deadline) {
				b.Fatalf("%s did not ACK %s: %+v", c.nodes[i], v, x.Proxies())
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
}

// push commits the mesh of meshFiles(i) and returns the time from the push to every client's ACK.
func (c *benchCluster) push(b *testing.B, i int) time.Duration {
	files := meshFiles(i)
	b.StopTimer()
	v := versionOf(b, files)
	b.StartTimer()
	c.repo.commit(files, "bench", false)
	c.waitAcked(b, v, 10*time.Second)
	return time.Since(c.repo.pushed)
}

func caPool(s *Server) *x509.CertPool {
	if s == nil {
		return nil
	}
	bundle, err := s.CA().Bundle()
	if err != nil {
		return nil
	}
	p := x509.NewCertPool()
	p.AppendCertsFromPEM([]byte(bundle.BundlePEM))
	return p
}

// workloadCert is a certificate of the mesh CA for service, with a key made here.
func workloadCert(b *testing.B, authority *ca.CA, service string) *tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	csr, err := ca.NewCSR(key)
	if err != nil {
		b.Fatal(err)
	}
	l, err := authority.Sign(service, csr)
	if err != nil {
		b.Fatal(err)
	}
	cert := &tls.Certificate{PrivateKey: key}
	for rest := []byte(l.CertPEM); ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		cert.Certificate = append(cert.Certificate, blk.Bytes)
	}
	return cert
}

// adsClient opens an Envoy-shaped ADS stream for service web (wildcard CDS and LDS) as node and
// ACKs every answer, until the benchmark ends.
func adsClient(b *testing.B, addr string, creds grpc.DialOption, node string) {
	conn, err := grpc.NewClient(addr, creds)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(func() { cancel(); conn.Close() })
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		b.Fatal(err)
	}
	n := &corev3.Node{Id: node, Cluster: "web", UserAgentName: "envoy"}
	for _, typ := range []string{resource.ClusterType, resource.ListenerType} {
		if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: n, TypeUrl: typ}); err != nil {
			b.Fatal(err)
		}
	}
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			if stream.Send(&discoverygrpc.DiscoveryRequest{Node: n, TypeUrl: resp.TypeUrl, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}) != nil {
				return
			}
		}
	}()
}

func listenLoopback(b *testing.B) net.Listener {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	return lis
}
