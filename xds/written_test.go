package xds

import (
	"bytes"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
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
