package xds

import (
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Marshalling once, sending everywhere.
//
// go-control-plane's cache marshals every resource of a response again for every stream it
// answers (it wraps each resource anew per response), so a change that reaches 2,000 proxies
// costs 2,000 marshals of every resource they share. Yet the server already marshals every
// distinct resource once, deterministically, to hash it (memo.resourceHash). The cache is
// therefore handed each resource as a wire: a message whose encoding is those very bytes
// (an Empty whose unknown fields hold them; protobuf appends unknown fields verbatim), so
// go-control-plane's marshal of it copies bytes. The bytes are the deterministic encoding of
// the rendered message, which is what go-control-plane would have produced
// (cachev3.MarshalResource); TestServedBytesAreFreshMarshal holds the two together on the wire.

// wire is a rendered resource as the cache holds it: its deterministic encoding, made once
// and shared by every stream it is sent on, and the message it encodes (for ProxyConfig and
// for go-control-plane's name lookups through GetName). It is never modified.
type wire struct {
	*emptypb.Empty // its unknown fields are the encoding of msg
	msg            types.Resource
	name           string
	any            *anypb.Any // the same bytes as sent by the watch cache (cache.go)
}

func newWire(msg types.Resource, encoded []byte) *wire {
	return newEncoded(msg, encoded, messageTypeURL(msg), cachev3.GetResourceName(msg)).wire
}

// newEncoded returns what the memo learns of msg, named name, of type typeURL, whose
// deterministic encoding is enc: its content hash and its wire, in one allocation.
func newEncoded(msg types.Resource, enc []byte, typeURL, name string) *encoded {
	a := &encodedParts{}
	a.fill(msg, enc, typeURL, name)
	return &a.enc
}

// encodedParts are what newEncoded allocates at once.
type encodedParts struct {
	enc encoded
	w   wire
	e   emptypb.Empty
	any anypb.Any
}

// fill makes a the encoding of msg (newEncoded).
func (a *encodedParts) fill(msg types.Resource, enc []byte, typeURL, name string) {
	a.fillHashed(msg, enc, typeURL, name, hashOf(enc))
}

// fillHashed is fill for an enc whose hashOf is hash.
func (a *encodedParts) fillHashed(msg types.Resource, enc []byte, typeURL, name, hash string) {
	a.e.ProtoReflect().SetUnknown(enc)
	a.any.TypeUrl, a.any.Value = typeURL, enc
	a.w = wire{Empty: &a.e, msg: msg, name: name, any: &a.any}
	a.enc = encoded{hash: hash, wire: &a.w}
}

// learnEncoded tells m that msg, a resource built for m (which knows nothing of it yet, as a
// rule), named name, of type typeURL, encodes as enc: newEncoded and the fact that holds it in
// one allocation. What m learnt of msg before, if anything, stays. A nil m learns nothing.
func (m *memo) learnEncoded(msg types.Resource, enc []byte, typeURL, name string) {
	if m == nil {
		return
	}
	a := &struct {
		ft fact
		encodedParts
	}{}
	a.fill(msg, enc, typeURL, name)
	a.ft.enc.Store(&a.enc)
	if !m.facts.add(msg, &a.ft) {
		learn(m, msg, encOf, &a.enc) // known already: only its encoding, unless it had one
	}
}

// messageTypeURLs holds the type URL of each message type a wire was made of: full name → URL.
var messageTypeURLs sync.Map

// messageTypeURL is the type URL of msg's type.
func messageTypeURL(msg types.Resource) string {
	name := msg.ProtoReflect().Descriptor().FullName()
	if u, ok := messageTypeURLs.Load(name); ok {
		return u.(string)
	}
	u, _ := messageTypeURLs.LoadOrStore(name, "type.googleapis.com/"+string(name))
	return u.(string)
}

// GetName makes a wire a types.ResourceWithName: go-control-plane names it as it would msg.
func (w *wire) GetName() string { return w.name }

// typed returns the message a resource held by the cache stands for.
func typed(r types.Resource) types.Resource {
	if w, ok := r.(*wire); ok {
		return w.msg
	}
	return r
}

// cacheResources returns one type's resources as the cache holds them, keyed by name: each as
// its wire when the memo has marshalled it (every resource of a rendered group has been, by
// hashTypes), else as itself.
// facts, if not nil, holds the items' facts (memo.factsOf), read instead of looked up.
func (m *memo) cacheResources(version string, items []types.Resource, facts []*fact) cachev3.Resources {
	out := cachev3.Resources{Version: version, Items: make(map[string]types.ResourceWithTTL, len(items))}
	for i, r := range items {
		w := r
		if facts != nil {
			if e := facts[i].enc.Load(); e != nil && e.wire != nil {
				w = e.wire
			}
		} else {
			w = m.wired(r)
		}
		out.Items[cachev3.GetResourceName(r)] = types.ResourceWithTTL{Resource: w}
	}
	return out
}

// wired returns r's wire, or r when it has not been marshalled through m.
func (m *memo) wired(r types.Resource) types.Resource {
	if m == nil {
		return r
	}
	if e := learnt(m, r, encOf); e != nil && e.wire != nil {
		return e.wire
	}
	return r
}

// encoded is what the memo learns of a message by marshalling it once.
type encoded struct {
	hash string
	wire *wire
}
