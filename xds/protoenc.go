package xds

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// What the encoders that write resources straight to bytes (listenerenc.go, endpointenc.go,
// clusterenc.go, upstreamtlsenc.go, rbacenc.go) share: fields written as protobuf-go's
// deterministic marshal writes them. A proto3 scalar is written only when not zero; a message
// field, a oneof member and a map entry's key and value are written even when empty.

// Field numbers of well-known messages and of map entries.
const (
	wrapperValueField    = 1 // UInt32Value.value, BoolValue.value
	durationSecondsField = 1 // Duration.seconds
	durationNanosField   = 2 // Duration.nanos
	mapEntryKeyField     = 1 // a map entry's key
	mapEntryValueField   = 2 // a map entry's value
)

// Encoding helpers: each writes a field as protobuf-go's deterministic marshal does.

// stringFieldSize is the size of a proto3 string field: nothing when empty.
func stringFieldSize(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}

func appendStringField(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// varintFieldSize is the size of a proto3 varint field (integer, enum or bool): nothing when 0.
func varintFieldSize(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// messageFieldSize is the size of a set message field whose encoding is n bytes.
func messageFieldSize(num protowire.Number, n int) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

// appendBytesField appends a set message (or bytes) field whose encoding is v.
func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func uint32ValueSize(w *wrapperspb.UInt32Value) int {
	return varintFieldSize(wrapperValueField, uint64(w.GetValue()))
}

// appendUInt32ValueField appends a UInt32Value field, nothing when w is nil.
func appendUInt32ValueField(b []byte, num protowire.Number, w *wrapperspb.UInt32Value) []byte {
	if w == nil {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(uint32ValueSize(w)))
	return appendVarintField(b, wrapperValueField, uint64(w.Value))
}
