package compiler

import (
	"sort"
	"strings"

	"cuelang.org/go/cue"

	mesh "github.com/meshgit/mesh"
)

// mesh.tls.cipherSuites goes to Envoy as TlsParameters.cipher_suites, which BoringSSL parses
// strictly: a name it does not know makes Envoy reject the whole listener or cluster (a NACK,
// and the proxy keeps its old configuration). So the compiler accepts only the names Envoy
// documents for TLS 1.0–1.2, in BoringSSL's (OpenSSL-style) spelling, and Envoy's
// equal-preference groups of them ("[A|B]", as in Envoy's own defaults). TLS 1.3 suites are
// not configurable in Envoy. The mesh's certificates are ECDSA (P-256), so a list needs at least
// one ECDHE-ECDSA suite, or no TLS 1.2 handshake can succeed.

// envoyCipherSuites maps each accepted name to its IANA name (for messages, and to recognise an
// IANA name written by mistake).
var envoyCipherSuites = map[string]string{
	"ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-ECDSA-AES128-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
	"ECDHE-ECDSA-AES256-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
	"ECDHE-RSA-AES128-GCM-SHA256":   "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-RSA-CHACHA20-POLY1305":   "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-RSA-AES256-GCM-SHA384":   "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-RSA-AES128-SHA":          "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
	"ECDHE-RSA-AES256-SHA":          "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
	"AES128-GCM-SHA256":             "TLS_RSA_WITH_AES_128_GCM_SHA256",
	"AES256-GCM-SHA384":             "TLS_RSA_WITH_AES_256_GCM_SHA384",
	"AES128-SHA":                    "TLS_RSA_WITH_AES_128_CBC_SHA",
	"AES256-SHA":                    "TLS_RSA_WITH_AES_256_CBC_SHA",
}

// checkCipherSuites reports every entry of mesh.tls.cipherSuites that Envoy would refuse, at its
// position, and a list that no handshake with the mesh's certificates could use.
func (c *compilation) checkCipherSuites(mv node, fallback mesh.Pos, t mesh.TLS) {
	if len(t.CipherSuites) == 0 {
		return
	}
	listPos := lookup(mv, fallback, cue.Str("tls"), cue.Str("cipherSuites"))
	if t.MinVersion == "TLSv1_3" {
		c.add(listPos, "mesh.tls.cipherSuites: Envoy applies cipher suites to TLS 1.0–1.2 only, and minVersion is TLSv1_3; remove the list or lower minVersion")
		return
	}
	ecdsa, valid := false, true
	for i, entry := range t.CipherSuites {
		pos := lookup(mv, listPos, cue.Str("tls"), cue.Str("cipherSuites"), cue.Index(i))
		for _, name := range cipherGroup(entry) {
			if _, ok := envoyCipherSuites[name]; !ok {
				c.add(pos, "mesh.tls.cipherSuites: %s", unknownCipher(name))
				valid = false
				continue
			}
			ecdsa = ecdsa || strings.HasPrefix(name, "ECDHE-ECDSA-")
		}
	}
	if valid && !ecdsa {
		c.add(listPos, "mesh.tls.cipherSuites: no ECDHE-ECDSA suite: the mesh's certificates are ECDSA, so no TLS 1.2 handshake could succeed")
	}
}

// cipherGroup returns the names of an entry: one name, or the members of "[A|B|...]".
func cipherGroup(entry string) []string {
	if g, ok := strings.CutPrefix(entry, "["); ok {
		if g, ok = strings.CutSuffix(g, "]"); ok && g != "" {
			return strings.Split(g, "|")
		}
	}
	return []string{entry}
}

// unknownCipher says why Envoy would refuse name, with the name to write where there is one.
func unknownCipher(name string) string {
	for envoy, iana := range envoyCipherSuites {
		if name == iana {
			return "\"" + name + "\" is the IANA name; Envoy (BoringSSL) spells it \"" + envoy + "\""
		}
	}
	names := make([]string, 0, len(envoyCipherSuites))
	for n := range envoyCipherSuites {
		names = append(names, n)
	}
	sort.Strings(names)
	return "\"" + name + "\" is not a cipher suite Envoy accepts; want one of " + strings.Join(names, ", ") +
		" (or an equal-preference group of them, \"[A|B]\")"
}
