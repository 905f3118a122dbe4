package xds

import (
	"context"
	"path/filepath"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
)

// TestEveryGRPCConsumerUnderstands holds the rendering to what gRPC C-core 1.51 and grpc-js 1.14
// accept, beside grpc-go (interop/ runs them): header matchers (in routes and in RBAC policies,
// also inside typed_config Anys) use the explicit fields, never string_match, which C-core 1.51
// rejects with the whole RouteConfiguration; weighted clusters state their total_weight (C-core
// 1.51 takes an unset one for 100); gRPC clients' clusters use round_robin or
// ring_hash, the only policies C-core 1.51 and grpc-js accept in lb_policy.
func TestEveryGRPCConsumerUnderstands(t *testing.T) {
	example, err := compiler.CompileDir(context.Background(), filepath.Join("..", "repo-example"))
	if err != nil {
		t.Fatal(err)
	}
	for name, snap := range map[string]*mesh.Snapshot{
		"rich": seal(t, richMesh()), "greeter": seal(t, greeterMesh(50051, 50052)), "repo-example": example,
	} {
		for _, svc := range snap.ServiceNames() {
			for _, shape := range []Shape{ShapeGRPC, ShapeEnvoy} {
				res, err := RenderWithBundle(snap, Proxy{Service: svc, Shape: shape, CertDir: "/certs"}, goldenBundle(t))
				if err != nil {
					t.Fatal(err)
				}
				where := name + "/" + svc + "/" + string(shape)
				var all []proto.Message
				all = append(all, messages(res.Listeners)...)
				all = append(all, messages(res.Routes)...)
				for _, m := range all {
					walkMessages(t, m.ProtoReflect(), func(m protoreflect.Message) {
						if h, ok := m.Interface().(*routev3.HeaderMatcher); ok && h.GetStringMatch() != nil {
							t.Errorf("%s: header matcher %q uses string_match", where, h.GetName())
						}
						if wc, ok := m.Interface().(*routev3.WeightedCluster); ok {
							var sum uint32
							for _, c := range wc.GetClusters() {
								sum += c.GetWeight().GetValue()
							}
							if wc.GetTotalWeight().GetValue() != sum {
								t.Errorf("%s: weighted clusters sum to %d, total_weight is %v", where, sum, wc.GetTotalWeight())
							}
						}
					})
				}
				if shape != ShapeGRPC {
					continue
				}
				for _, c := range res.Clusters {
					if p := c.GetLbPolicy(); p != clusterv3.Cluster_ROUND_ROBIN && p != clusterv3.Cluster_RING_HASH {
						t.Errorf("%s: cluster %s has lb_policy %v", where, c.GetName(), p)
					}
				}
			}
		}
	}
}

// walkMessages calls f on m and every message inside it, unpacking Anys.
func walkMessages(t *testing.T, m protoreflect.Message, f func(protoreflect.Message)) {
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			t.Fatalf("unpack %s: %v", a.GetTypeUrl(), err)
		}
		walkMessages(t, inner.ProtoReflect(), f)
		return
	}
	f(m)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				walkMessages(t, v.List().Get(i).Message(), f)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				walkMessages(t, mv.Message(), f)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			walkMessages(t, v.Message(), f)
		}
		return true
	})
}
