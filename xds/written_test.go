package xds

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/compiler"
	"google.golang.org/protobuf/proto"
)

// checkLeftWhole fails t unless the memo m was told no encoding of r, which the encoders do
// not write, and r's content hash is that of a fresh deterministic marshal.
func checkLeftWhole(t *testing.T, m *memo, r types.Resource, what string) {
	t.Helper()
	fresh, err := proto.MarshalOptions{Deterministic: true}.Marshal(proto.Clone(r))
	if err != nil {
		t.Fatal(err)
	}
	if learnt(m, r, encOf) != nil {
		t.Fatalf("%s: learnt though not encodable", what)
	}
	if h, err := m.resourceHash(r, nil); err != nil || h != hashOf(fresh) {
		t.Fatalf("%s: hash %s (%v), want %s", what, h, err, hashOf(fresh))
	}
}

// checkWritten fails t unless the memo m was told the encoding of r (named name, of type
// typeURL) as the encoders write it, and that encoding, its content hash and its wire are what
// a fresh deterministic marshal of r gives. what says which resource of which mesh r is.
func checkWritten(t *testing.T, m *memo, r types.Resource, name, typeURL, what string) {
	t.Helper()
	fresh, err := proto.MarshalOptions{Deterministic: true}.Marshal(proto.Clone(r))
	if err != nil {
		t.Fatal(err)
	}
	e := learnt(m, r, encOf)
	if e == nil {
		t.Fatalf("%s: the memo was not told its encoding", what)
	}
	if got := e.wire.ProtoReflect().GetUnknown(); !bytes.Equal(got, fresh) {
		t.Fatalf("%s: written encoding differs from a fresh marshal:\n got %x\nwant %x", what, got, fresh)
	}
	if e.hash != hashOf(fresh) || e.wire.msg != r || e.wire.name != name || e.wire.any.TypeUrl != typeURL {
		t.Fatalf("%s: hash or wire differs from the resource's", what)
	}
}

// encoderSnaps are the meshes the encoder tests render: the rich and transparent fixtures,
// random ones, meshgen's, and one failing over to another datacenter, directly and through
// mesh gateways.
func encoderSnaps(t *testing.T, seed uint64) []*mesh.Snapshot {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 31))
	snaps := []*mesh.Snapshot{seal(t, richMesh()), seal(t, transparentMesh())}
	for range 8 {
		snaps = append(snaps, seal(t, randomTransparentMesh(r, 3+r.IntN(8))), seal(t, randomMesh(r, 1000+r.IntN(1000))))
	}
	ms := meshgenSnaps(t, 60, seed)
	snaps = append(snaps, ms[0], ms[1])
	fo, err := compiler.Compile(context.Background(), []compiler.File{{Name: "m.cue", Data: []byte(failoverMesh)}})
	if err != nil {
		t.Fatal(err)
	}
	gws := map[string][]mesh.Gateway{"dc1": {{Service: "gateway", Address: "10.1.0.2", Port: 8443}}, "dc2": {{Service: "gateway", Address: "10.2.0.2", Port: 8443}}}
	return append(snaps, fo, fo.WithRemote(gws, nil)) // the second reaches dc2 through gateways
}
