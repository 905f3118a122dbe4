package xds

import (
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Decoding requests without allocating what the stream already holds.
//
// Almost every request on an ADS stream is an ACK: the type URL, the version and nonce of the
// stream's latest response of the type and, in state of the world, the names the stream asked
// for last time. proto.Unmarshal allocates a message and every string of it for each one. The
// own servers receive into one message per stream instead (preDecoded, through the server
// codec, grpcopts.go), which takes those strings from what the stream expects (ackExpect) when
// the bytes are equal, so a clean ACK allocates nothing. What it decodes is exactly what
// proto.Unmarshal decodes (FuzzRequestDecoding holds the two together): any field it does not
// read itself, a field of an unexpected wire type, or a string that is not valid UTF-8 makes
// it fall back to proto.Unmarshal.

// preDecoded is a message that decodes its own wire encoding. It is a proto.Message too, for
// gRPC servers whose codec does not know preDecoded, which call proto.Unmarshal.
type preDecoded interface {
	proto.Message
	decodeWire(b []byte) error
}

// ackExpect is what a stream expects in a request of one type: strings a request equal to
// them is decoded into, without copies. names is never modified by anyone.
type ackExpect struct {
	version, nonce string
	names          []string
}

// typeURLs interns the type URLs of the types the server knows.
var typeURLs = func() map[string]string {
	m := map[string]string{}
	for t := range types.UnknownType {
		if u, err := cachev3.GetResponseTypeURL(t); err == nil {
			m[u] = u
		}
	}
	return m
}()

// sotwRequest is a stream's DiscoveryRequest, received into again and again; what it holds is
// valid until the next receive (the strings and Node it points to stay valid for good).
type sotwRequest struct {
	discoveryv3.DiscoveryRequest
	expect func(typeURL string) ackExpect // called on the receiving goroutine
}

// deltaRequest is sotwRequest's delta twin.
type deltaRequest struct {
	discoveryv3.DeltaDiscoveryRequest
	expect func(typeURL string) ackExpect
}

// DiscoveryRequest and DeltaDiscoveryRequest field numbers.
const (
	fReqVersion      = 1
	fReqNode         = 2
	fReqNames        = 3
	fReqTypeURL      = 4
	fReqNonce        = 5
	fReqErrorDetail  = 6
	fDReqNode        = 1
	fDReqTypeURL     = 2
	fDReqSubscribe   = 3
	fDReqUnsubscribe = 4
	fDReqNonce       = 6
	fDReqErrorDetail = 7
)

func (r *sotwRequest) decodeWire(b []byte) error {
	r.DiscoveryRequest = discoveryv3.DiscoveryRequest{}
	if !r.decodeFast(b) {
		return proto.Unmarshal(b, &r.DiscoveryRequest)
	}
	return nil
}

// decodeFast decodes b into r and reports true, or false when proto.Unmarshal must.
func (r *sotwRequest) decodeFast(b []byte) bool {
	typeURL, exp, ok := expectOf(b, fReqTypeURL, r.expect)
	if !ok {
		return false
	}
	names := wireNames{expect: exp.names}
	for len(b) > 0 {
		var num protowire.Number
		var v []byte
		if num, v, b, ok = nextBytesField(b); !ok {
			return false
		}
		switch num {
		case fReqVersion:
			r.VersionInfo, ok = wireString(v, exp.version)
		case fReqNode:
			r.Node, ok = mergeNode(r.Node, v)
		case fReqNames:
			ok = names.add(v)
		case fReqTypeURL:
			r.TypeUrl, ok = typeURL, validTypeURL(v, typeURL)
		case fReqNonce:
			r.ResponseNonce, ok = wireString(v, exp.nonce)
		case fReqErrorDetail:
			r.ErrorDetail, ok = mergeStatus(r.ErrorDetail, v)
		default:
			return false
		}
		if !ok {
			return false
		}
	}
	r.ResourceNames = names.list()
	return true
}

// nextBytesField consumes the first field of b, and returns its number, its value and the rest
// of b; ok is false when b is malformed or the field has another wire type than bytes (every
// field the fast decoders read is a string or a message).
func nextBytesField(b []byte) (num protowire.Number, v, rest []byte, ok bool) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || typ != protowire.BytesType {
		return 0, nil, nil, false
	}
	v, m := protowire.ConsumeBytes(b[n:])
	if m < 0 {
		return 0, nil, nil, false
	}
	return num, v, b[n+m:], true
}

func (r *deltaRequest) decodeWire(b []byte) error {
	r.DeltaDiscoveryRequest = discoveryv3.DeltaDiscoveryRequest{}
	if !r.decodeFast(b) {
		return proto.Unmarshal(b, &r.DeltaDiscoveryRequest)
	}
	return nil
}

// release drops what r holds once its request is handled: a subscription's names (a
// thousand in a dense mesh's first requests, with their strings) would otherwise stay
// reachable from the stream until its next request, which may come minutes later. What the
// stream keeps of a request (its node, the names it subscribes to) it keeps in its own state.
func (r *deltaRequest) release() {
	r.DeltaDiscoveryRequest = discoveryv3.DeltaDiscoveryRequest{}
}

func (r *deltaRequest) decodeFast(b []byte) bool {
	typeURL, exp, ok := expectOf(b, fDReqTypeURL, r.expect)
	if !ok {
		return false
	}
	var sub, unsub wireNames
	for len(b) > 0 {
		var num protowire.Number
		var v []byte
		if num, v, b, ok = nextBytesField(b); !ok {
			return false
		}
		switch num {
		case fDReqNode:
			r.Node, ok = mergeNode(r.Node, v)
		case fDReqTypeURL:
			r.TypeUrl, ok = typeURL, validTypeURL(v, typeURL)
		case fDReqSubscribe:
			ok = sub.add(v)
		case fDReqUnsubscribe:
			ok = unsub.add(v)
		case fDReqNonce:
			r.ResponseNonce, ok = wireString(v, exp.nonce)
		case fDReqErrorDetail:
			r.ErrorDetail, ok = mergeStatus(r.ErrorDetail, v)
		default:
			return false // initial_resource_versions, resource locators, unknown fields
		}
		if !ok {
			return false
		}
	}
	r.ResourceNamesSubscribe, r.ResourceNamesUnsubscribe = sub.list(), unsub.list()
	return true
}

// expectOf returns the type URL of request b (its field typeField, as proto.Unmarshal keeps
// it) and what the stream expects in a request of that type (nothing without expect or a type
// URL); ok is false when b must be left to proto.Unmarshal.
func expectOf(b []byte, typeField protowire.Number, expect func(typeURL string) ackExpect) (string, ackExpect, bool) {
	typeURL, ok := lastString(b, typeField)
	if !ok {
		return "", ackExpect{}, false
	}
	if expect == nil || typeURL == "" {
		return typeURL, ackExpect{}, true
	}
	return typeURL, expect(typeURL), true
}

// lastString returns the value of the last occurrence of string field num in b (as
// proto.Unmarshal keeps it), interned when it is a known type URL; ok is false when b is
// malformed or holds num with another wire type or invalid UTF-8.
func lastString(b []byte, num protowire.Number) (string, bool) {
	var last []byte
	found := false
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return "", false
		}
		m := protowire.ConsumeFieldValue(n, typ, b[l:])
		if m < 0 {
			return "", false
		}
		if n == num {
			if typ != protowire.BytesType {
				return "", false
			}
			last, _ = protowire.ConsumeBytes(b[l:])
			found = true
		}
		b = b[l+m:]
	}
	if !found {
		return "", true
	}
	if s, ok := typeURLs[string(last)]; ok {
		return s, true
	}
	return wireString(last, "")
}

// validTypeURL reports whether an occurrence v of the type URL field is valid UTF-8, as
// proto.Unmarshal requires of every occurrence, not only of the last one it keeps (last).
func validTypeURL(v []byte, last string) bool {
	return string(v) == last || utf8.Valid(v)
}

// wireString returns v as a string: known when it is equal, else a copy; ok is false for
// invalid UTF-8 (which proto.Unmarshal refuses).
func wireString(v []byte, known string) (string, bool) {
	if string(v) == known {
		return known, true
	}
	if !utf8.Valid(v) {
		return "", false
	}
	return string(v), true
}

// wireNames collects a repeated string field: the expected slice itself while the names are
// equal to it, in order, else a fresh one.
type wireNames struct {
	expect []string
	n      int      // names seen that are equal to expect[:n]
	fresh  []string // once one differs
}

func (w *wireNames) add(v []byte) bool {
	if w.fresh == nil && w.n < len(w.expect) && string(v) == w.expect[w.n] {
		w.n++
		return true
	}
	if !utf8.Valid(v) {
		return false
	}
	if w.fresh == nil {
		w.fresh = append(make([]string, 0, w.n+4), w.expect[:w.n]...)
	}
	w.fresh = append(w.fresh, string(v))
	return true
}

func (w *wireNames) list() []string {
	switch {
	case w.fresh != nil:
		return w.fresh
	case w.n == 0:
		return nil
	case w.n == len(w.expect):
		return w.expect
	}
	return w.expect[:w.n:w.n]
}

// mergeNode merges an occurrence of a Node field into n, as proto.Unmarshal merges repeated
// occurrences of a message field.
func mergeNode(n *corev3.Node, v []byte) (*corev3.Node, bool) {
	if n == nil {
		n = &corev3.Node{}
	}
	return n, proto.UnmarshalOptions{Merge: true}.Unmarshal(v, n) == nil
}

func mergeStatus(s *rpcstatus.Status, v []byte) (*rpcstatus.Status, bool) {
	if s == nil {
		s = &rpcstatus.Status{}
	}
	return s, proto.UnmarshalOptions{Merge: true}.Unmarshal(v, s) == nil
}
