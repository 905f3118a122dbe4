package xds

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	mesh "github.com/meshgit/mesh"
)

// An Envoy target cluster's TLS transport socket, written straight to bytes.
//
// Every target cluster of an Envoy sidecar carries an UpstreamTlsContext that differs from
// the others of the snapshot only in its SNI and the SPIFFE IDs it accepts: its TLS
// parameters and SDS secret configurations are the snapshot's. The memo marshals those once
// (upstreamTLSShared); a cluster's context is then its SAN matchers and SNI written around
// them, in field number order, as protobuf-go's deterministic marshal writes it.
// TestUpstreamTLSEncoding holds the two together on every target cluster of random and
// generated meshes and checks the field numbers against the descriptors.
//
// Validation is what ValidateAll of the whole context checks: the shared parts (with a SAN
// matcher of the same shape) once per memo, and per cluster the context's own rules on its
// SNI (ValidateAll of a context holding the SNI alone). A SAN matcher (type URI, an exact
// string) has no rule its string can break.

// Field numbers of the messages an upstream TLS context is made of.
const (
	upTLSCommonField      = 1  // UpstreamTlsContext.common_tls_context
	upTLSSNIField         = 2  // UpstreamTlsContext.sni
	commonCombinedField   = 8  // CommonTlsContext.combined_validation_context
	combinedDefaultField  = 1  // CombinedCertificateValidationContext.default_validation_context
	validationSANsField   = 15 // CertificateValidationContext.match_typed_subject_alt_names
	sanMatcherTypeField   = 1  // SubjectAltNameMatcher.san_type
	sanMatcherMatchField  = 2  // SubjectAltNameMatcher.matcher
	stringMatcherExactFld = 1  // StringMatcher.exact
)

// upstreamTLSParts are the encodings every Envoy upstream TLS context of a snapshot shares.
type upstreamTLSParts struct {
	head  []byte // CommonTlsContext's tls_params and tls_certificate_sds_secret_configs fields
	roots []byte // CombinedCertificateValidationContext's validation_context_sds_secret_config field
}

// newUpstreamTLSParts validates and marshals the shared parts of snap's upstream TLS contexts.
func newUpstreamTLSParts(snap *mesh.Snapshot) (*upstreamTLSParts, error) {
	full := envoyUpstreamTLS(snap, "", []string{"spiffe://validated.example/ns/default/dc/dc1/svc/shape"})
	if err := full.ValidateAll(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidResource, full.ProtoReflect().Descriptor().FullName(), err)
	}
	det := proto.MarshalOptions{Deterministic: true}
	c := full.GetCommonTlsContext()
	head, err := det.Marshal(&tlsv3.CommonTlsContext{TlsParams: c.TlsParams, TlsCertificateSdsSecretConfigs: c.TlsCertificateSdsSecretConfigs})
	if err != nil {
		return nil, err
	}
	roots, err := det.Marshal(&tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
		ValidationContextSdsSecretConfig: c.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(),
	})
	if err != nil {
		return nil, err
	}
	return &upstreamTLSParts{head: head, roots: roots}, nil
}

// upstreamTLSShared returns the shared parts of the upstream TLS contexts of m's snapshot,
// made once per memo; a nil memo makes them for snap.
func upstreamTLSShared(snap *mesh.Snapshot, m *memo) (*upstreamTLSParts, error) {
	return shared(m, memoKey{kind: memoUpstreamTLS}, func() (*upstreamTLSParts, error) { return newUpstreamTLSParts(snap) })
}

// envoyUpstreamTLSSocket is tlsTransportSocket(envoyUpstreamTLS(snap, sni, sans)): the same
// transport socket, its context validated as toAny validates it and encoded from the memo's
// shared parts.
func envoyUpstreamTLSSocket(snap *mesh.Snapshot, sni string, sans []string, m *memo) (*corev3.TransportSocket, error) {
	parts, err := upstreamTLSShared(snap, m)
	if err != nil {
		return nil, err
	}
	if err := (&tlsv3.UpstreamTlsContext{Sni: sni}).ValidateAll(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidResource, (&tlsv3.UpstreamTlsContext{}).ProtoReflect().Descriptor().FullName(), err)
	}
	a := &struct { // the socket's three messages in one allocation
		ts    corev3.TransportSocket
		typed corev3.TransportSocket_TypedConfig
		any   anypb.Any
	}{}
	a.any.TypeUrl, a.any.Value = upstreamTLSTypeURL, appendUpstreamTLS(nil, parts, sni, sans)
	a.typed.TypedConfig = &a.any
	a.ts.Name, a.ts.ConfigType = tlsTransportSocketName, &a.typed
	return &a.ts, nil
}

// upstreamTLSTypeURL is the type URL of an UpstreamTlsContext.
const upstreamTLSTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"

// sanMatcherLen is the length of the encoding of a SubjectAltNameMatcher of type URI matching
// s exactly.
func sanMatcherLen(s string) int {
	exact := protowire.SizeTag(stringMatcherExactFld) + protowire.SizeBytes(len(s))
	return protowire.SizeTag(sanMatcherTypeField) + protowire.SizeVarint(uint64(tlsv3.SubjectAltNameMatcher_URI)) +
		protowire.SizeTag(sanMatcherMatchField) + protowire.SizeBytes(exact)
}

// appendUpstreamTLS appends to b the deterministic encoding of envoyUpstreamTLS(snap, sni,
// sans), parts being snap's. A nil b is allocated to the size of the encoding.
func appendUpstreamTLS(b []byte, parts *upstreamTLSParts, sni string, sans []string) []byte {
	defLen := 0
	for _, s := range sans {
		defLen += protowire.SizeTag(validationSANsField) + protowire.SizeBytes(sanMatcherLen(s))
	}
	combinedLen := protowire.SizeTag(combinedDefaultField) + protowire.SizeBytes(defLen) + len(parts.roots)
	commonLen := len(parts.head) + protowire.SizeTag(commonCombinedField) + protowire.SizeBytes(combinedLen)
	if b == nil {
		n := protowire.SizeTag(upTLSCommonField) + protowire.SizeBytes(commonLen)
		if sni != "" {
			n += protowire.SizeTag(upTLSSNIField) + protowire.SizeBytes(len(sni))
		}
		b = make([]byte, 0, n)
	}
	b = protowire.AppendTag(b, upTLSCommonField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(commonLen))
	b = append(b, parts.head...)
	b = protowire.AppendTag(b, commonCombinedField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(combinedLen))
	b = protowire.AppendTag(b, combinedDefaultField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(defLen))
	for _, s := range sans {
		b = protowire.AppendTag(b, validationSANsField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sanMatcherLen(s)))
		b = protowire.AppendTag(b, sanMatcherTypeField, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(tlsv3.SubjectAltNameMatcher_URI))
		b = protowire.AppendTag(b, sanMatcherMatchField, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(protowire.SizeTag(stringMatcherExactFld)+protowire.SizeBytes(len(s))))
		b = protowire.AppendTag(b, stringMatcherExactFld, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	b = append(b, parts.roots...)
	if sni != "" {
		b = protowire.AppendTag(b, upTLSSNIField, protowire.BytesType)
		b = protowire.AppendString(b, sni)
	}
	return b
}
