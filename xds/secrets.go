package xds

import (
	"path"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	mesh "github.com/meshgit/mesh"
)

// TLS material is never rendered into listeners and clusters: they reference it by name, so that
// certificates rotate without touching the rest of the configuration and so that private keys
// never pass through this package's rendering, logs or golden files.
//
//   - Envoy sidecars fetch it over SDS (on the same ADS stream): the leaf as SecretLeaf (by file
//     reference, see secrets), the trust bundle as SecretRoots. Until they arrive Envoy waits for
//     them (its listeners and clusters stay warming), which fails closed.
//   - Proxyless gRPC reads it from the certificate provider instance CertProviderInstance of its
//     bootstrap (a file_watcher over files the CA writes), certificate names SecretLeaf and
//     SecretRoots.

// Names of the TLS material.
const (
	SecretLeaf           = "default"
	SecretRoots          = "ROOTCA"
	CertProviderInstance = "mesh"
)

const tlsTransportSocketName = "envoy.transport_sockets.tls"

// sdsSecret is the SDS reference to secret name over ADS. The references to SecretLeaf and
// SecretRoots, in every TLS context, are constants built once (messages are never modified
// once built).
func sdsSecret(name string) *tlsv3.SdsSecretConfig {
	switch name {
	case SecretLeaf:
		return sdsLeaf()
	case SecretRoots:
		return sdsRoots()
	}
	return newSDSSecret(name)
}

func newSDSSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: adsConfigSource()}
}

var (
	sdsLeaf  = sync.OnceValue(func() *tlsv3.SdsSecretConfig { return newSDSSecret(SecretLeaf) })
	sdsRoots = sync.OnceValue(func() *tlsv3.SdsSecretConfig { return newSDSSecret(SecretRoots) })
)

// tlsParams renders the mesh-wide TLS versions for Envoy (gRPC rejects tls_params).
func tlsParams(snap *mesh.Snapshot) *tlsv3.TlsParameters {
	p := &tlsv3.TlsParameters{}
	p.TlsMinimumProtocolVersion = tlsVersion(snap.Mesh.TLS.MinVersion, tlsv3.TlsParameters_TLSv1_2)
	if snap.Mesh.TLS.MaxVersion != "" {
		p.TlsMaximumProtocolVersion = tlsVersion(snap.Mesh.TLS.MaxVersion, tlsv3.TlsParameters_TLS_AUTO)
	}
	if len(snap.Mesh.TLS.CipherSuites) > 0 {
		p.CipherSuites = append([]string(nil), snap.Mesh.TLS.CipherSuites...)
	}
	return p
}

func tlsVersion(v string, def tlsv3.TlsParameters_TlsProtocol) tlsv3.TlsParameters_TlsProtocol {
	switch v {
	case "TLSv1_0":
		return tlsv3.TlsParameters_TLSv1_0
	case "TLSv1_1":
		return tlsv3.TlsParameters_TLSv1_1
	case "TLSv1_2":
		return tlsv3.TlsParameters_TLSv1_2
	case "TLSv1_3":
		return tlsv3.TlsParameters_TLSv1_3
	}
	return def
}

// envoyCommonTLS is the TLS context of every Envoy mTLS connection: the leaf and the roots over
// SDS, plus SPIFFE ID checks (sans) on the client side.
func envoyCommonTLS(snap *mesh.Snapshot, sans []string) *tlsv3.CommonTlsContext {
	def := &tlsv3.CertificateValidationContext{}
	for _, s := range sans {
		def.MatchTypedSubjectAltNames = append(def.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{
			SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: exactString(s),
		})
	}
	return &tlsv3.CommonTlsContext{
		TlsParams:                      tlsParams(snap),
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(SecretLeaf)},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         def,
				ValidationContextSdsSecretConfig: sdsSecret(SecretRoots),
			},
		},
	}
}

func envoyUpstreamTLS(snap *mesh.Snapshot, sni string, sans []string) *tlsv3.UpstreamTlsContext {
	return &tlsv3.UpstreamTlsContext{CommonTlsContext: envoyCommonTLS(snap, sans), Sni: sni}
}

func envoyDownstreamTLS(snap *mesh.Snapshot) *tlsv3.DownstreamTlsContext {
	return &tlsv3.DownstreamTlsContext{
		CommonTlsContext:         envoyCommonTLS(snap, nil),
		RequireClientCertificate: wrapperspb.Bool(true),
	}
}

// grpcCommonTLS is the TLS context of proxyless gRPC (gRFC A29): identity and roots from the
// certificate provider instance, SPIFFE ID checks on the client side (gRPC reads
// match_subject_alt_names only).
func grpcCommonTLS(sans []string) *tlsv3.CommonTlsContext {
	return &tlsv3.CommonTlsContext{
		TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{
			InstanceName: CertProviderInstance, CertificateName: SecretLeaf,
		},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{
			ValidationContext: &tlsv3.CertificateValidationContext{
				CaCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{
					InstanceName: CertProviderInstance, CertificateName: SecretRoots,
				},
				MatchSubjectAltNames: sanMatchers(sans),
			},
		},
	}
}

func grpcUpstreamTLS(sni string, sans []string) *tlsv3.UpstreamTlsContext {
	return &tlsv3.UpstreamTlsContext{CommonTlsContext: grpcCommonTLS(sans), Sni: sni}
}

func grpcDownstreamTLS() *tlsv3.DownstreamTlsContext {
	return &tlsv3.DownstreamTlsContext{
		CommonTlsContext:         grpcCommonTLS(nil),
		RequireClientCertificate: wrapperspb.Bool(true),
	}
}

func tlsTransportSocket[T *tlsv3.UpstreamTlsContext | *tlsv3.DownstreamTlsContext](ctx T) (*corev3.TransportSocket, error) {
	var a *anypb.Any
	var err error
	switch c := any(ctx).(type) {
	case *tlsv3.UpstreamTlsContext:
		a, err = toAny(c)
	case *tlsv3.DownstreamTlsContext:
		a, err = toAny(c)
	}
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{
		Name:       tlsTransportSocketName,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a},
	}, nil
}

// secrets renders the SDS secrets of proxy p. Only Envoy sidecars take secrets over xDS
// (proxyless gRPC reads certificate provider files):
//
//   - SecretRoots is the trust bundle (public certificates only), inline; it changes with CA
//     rotation, and the server pushes it again then (SetTrustBundle). With no bundle there is none.
//   - SecretLeaf is the proxy's certificate and key by reference: file names in the proxy's
//     certificate directory (node metadata CertDirMetadataKey), which `mesh agent` beside Envoy
//     keeps fresh, and a watched directory so that Envoy reloads the pair when the agent renames a
//     renewed certificate into it (reading certificate and key together and checking that neither
//     changed in between). The key never leaves the workload: this server knows its path only.
//     With no directory there is none, and Envoy's TLS listeners and clusters wait (fail closed).
func secrets(p Proxy, bundle []byte) []*tlsv3.Secret {
	if p.Shape != ShapeEnvoy {
		return nil
	}
	var out []*tlsv3.Secret
	if p.CertDir != "" {
		out = append(out, &tlsv3.Secret{
			Name: SecretLeaf,
			Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: fileSource(path.Join(p.CertDir, CertFile)),
				PrivateKey:       fileSource(path.Join(p.CertDir, KeyFile)),
				WatchedDirectory: &corev3.WatchedDirectory{Path: p.CertDir},
			}},
		})
	}
	if len(bundle) > 0 {
		out = append(out, &tlsv3.Secret{
			Name: SecretRoots,
			Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: bundle}},
			}},
		})
	}
	return out
}

// Files of a certificate directory, as `mesh agent` writes them (ca.CertFile, ca.KeyFile, ca.CAFile).
const (
	CertFile = "cert.pem"
	KeyFile  = "key.pem"
	CAFile   = "ca.pem"
)

func fileSource(name string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: name}}
}
