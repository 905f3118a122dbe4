package xds

import (
	"bytes"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"
)

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
