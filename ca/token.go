package ca

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"time"
)

// tokenPrefix marks mesh tokens, so that secret scanners and humans recognize one.
const tokenPrefix = "mesh_"

// NewToken makes a token: 32 random bytes, base64url-encoded behind "mesh_". It returns the token
// (to be shown once, never stored) and the record the CA stores.
func NewToken(scope Scope, service string, now time.Time) (string, TokenRecord) {
	var b [32]byte
	rand.Read(b[:])
	tok := tokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	h := hashToken(tok)
	return tok, TokenRecord{ID: h[:16], Hash: h, Scope: scope, Service: service, Created: now.UTC()}
}

func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// lookupToken returns the record whose hash is the token's. Every record is compared, in
// constant time, so that the time taken says nothing about which hashes are near the token's.
func lookupToken(records []TokenRecord, tok string) (TokenRecord, bool) {
	h := []byte(hashToken(tok))
	var found TokenRecord
	ok := 0
	for _, r := range records {
		if subtle.ConstantTimeCompare(h, []byte(r.Hash)) == 1 {
			found, ok = r, 1
		}
	}
	return found, ok == 1
}
