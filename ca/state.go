package ca

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// State is everything the CA keeps, as one plain value that a Raft FSM can hold: the trust bundle
// (every authority not yet retired), the signing key of the active authority, and the hashes of
// the tokens. It is never modified once built: Apply returns a new State, so readers can share a
// pointer without locks.
//
// The active authority's KeyPEM is the only private key in a State, and therefore the only one in
// the Raft log. It is never rendered by the HTTP API (the API has its own response types) and
// never logged; String and LogValue leave it out.
type State struct {
	Format      int    `json:"format"`
	TrustDomain string `json:"trustDomain"`
	// Authorities, oldest first. The last is the active one: it signs every new leaf. The others
	// stay in the trust bundle until their RetireAfter (every leaf they signed has expired).
	Authorities []Authority   `json:"authorities"`
	Tokens      []TokenRecord `json:"tokens,omitempty"`
}

// stateFormat is the encoding version of State and Command.
const stateFormat = 1

// Authority is one generation of the CA: a trust anchor and the certificate and key that sign
// leaves under it (the root itself, or an operator-supplied intermediate).
type Authority struct {
	ID string `json:"id"` // hex SHA-256 of the signing certificate's public key (first 16 digits)
	// RootPEM is the trust anchor published in the bundle.
	RootPEM string `json:"rootPEM"`
	// ChainPEM holds the certificates between a leaf and the root, the signing certificate first;
	// empty when the root signs leaves itself.
	ChainPEM string `json:"chainPEM,omitempty"`
	// CrossSignedPEM certifies this authority's signing key under the previous authority (followed
	// by the previous authority's ChainPEM), so that a peer which still trusts only the previous root
	// accepts leaves of this one. CrossSignedBy is that authority's ID; both are cleared when it
	// retires.
	CrossSignedPEM string `json:"crossSignedPEM,omitempty"`
	CrossSignedBy  string `json:"crossSignedBy,omitempty"`
	// KeyPEM is the PKCS#8 signing key; only the active authority has one.
	KeyPEM string `json:"keyPEM,omitempty"`

	Created     time.Time `json:"created"`
	RetireAfter time.Time `json:"retireAfter,omitzero"` // set once a newer authority is active
}

// Scope says what a token may do.
type Scope string

const (
	// ScopeService tokens ask for certificates of their one service.
	ScopeService Scope = "service"
	// ScopeOperator tokens create tokens, rotate the CA and may ask for any service's certificate.
	ScopeOperator Scope = "operator"
)

// TokenRecord is a token as the CA stores it: never the token itself, only its SHA-256.
type TokenRecord struct {
	ID      string    `json:"id"`   // the first 16 hex digits of Hash, for listing and revoking
	Hash    string    `json:"hash"` // hex SHA-256 of the token
	Scope   Scope     `json:"scope"`
	Service string    `json:"service,omitempty"` // for ScopeService
	Created time.Time `json:"created"`
}

// Op names a Command.
type Op string

// Commands. Apply decides each deterministically from the command and the previous state.
const (
	OpInit        Op = "init"         // TrustDomain, Authority: the first authority
	OpRotate      Op = "rotate"       // Authority: the new active one; Time+RetireAfter for the others
	OpRetire      Op = "retire"       // ID: an authority whose RetireAfter has passed
	OpAddToken    Op = "add-token"    // Token
	OpRevokeToken Op = "revoke-token" // ID
)

// Command is one change of the CA state: what a Store replicates (in Raft: one log entry).
type Command struct {
	Op          Op           `json:"op"`
	Time        time.Time    `json:"time"` // chosen by the proposer; Apply never reads a clock
	TrustDomain string       `json:"trustDomain,omitempty"`
	Authority   *Authority   `json:"authority,omitempty"`
	RetireAfter time.Time    `json:"retireAfter,omitzero"`
	Token       *TokenRecord `json:"token,omitempty"`
	ID          string       `json:"id,omitempty"`
}

// Encode returns the JSON form of c (a Raft entry's payload). It contains a private key for
// OpInit and OpRotate: never log it.
func (c Command) Encode() ([]byte, error) { return json.Marshal(c) }

// DecodeCommand parses what Encode produced.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if err := json.Unmarshal(b, &c); err != nil {
		return Command{}, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	return c, nil
}

// Encode returns the JSON form of s (for a Raft snapshot).
func (s *State) Encode() ([]byte, error) { return json.Marshal(s) }

// DecodeState parses what Encode produced.
func DecodeState(b []byte) (*State, error) {
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("ca state: %w", err)
	}
	if s.Format != stateFormat {
		return nil, fmt.Errorf("ca state: unknown format %d", s.Format)
	}
	return &s, nil
}

// String describes s without any key material.
func (s *State) String() string {
	if s == nil {
		return "ca state: none"
	}
	ids := make([]string, len(s.Authorities))
	for i, a := range s.Authorities {
		ids[i] = a.ID
	}
	return fmt.Sprintf("ca state: trust domain %s, authorities %v, %d tokens", s.TrustDomain, ids, len(s.Tokens))
}

// Active returns the authority that signs new leaves, or nil.
func (s *State) Active() *Authority {
	if s == nil || len(s.Authorities) == 0 {
		return nil
	}
	return &s.Authorities[len(s.Authorities)-1]
}

func (s *State) clone() *State {
	c := *s
	c.Authorities = slices.Clone(s.Authorities)
	c.Tokens = slices.Clone(s.Tokens)
	return &c
}

// Apply returns the state after c. s may be nil (before OpInit). It is deterministic: the result
// depends only on s and c, so every server of a Raft cluster reaches the same state. An error
// means c changed nothing.
func (s *State) Apply(c Command) (*State, error) {
	if c.Op != OpInit && s == nil {
		return nil, ErrNotInitialized
	}
	switch c.Op {
	case OpInit:
		if s != nil {
			return nil, ErrInitialized
		}
		if c.Authority == nil || c.Authority.KeyPEM == "" || c.TrustDomain == "" {
			return nil, fmt.Errorf("%w: init needs a trust domain and an authority with its key", ErrBadCommand)
		}
		return &State{Format: stateFormat, TrustDomain: c.TrustDomain, Authorities: []Authority{*c.Authority}}, nil
	case OpRotate:
		if c.Authority == nil || c.Authority.KeyPEM == "" {
			return nil, fmt.Errorf("%w: rotate needs an authority with its key", ErrBadCommand)
		}
		n := s.clone()
		for i := range n.Authorities {
			if n.Authorities[i].ID == c.Authority.ID {
				return nil, fmt.Errorf("%w: authority %s exists", ErrBadCommand, c.Authority.ID)
			}
			// The old signing key is needed no more: the cross-signature is already made.
			n.Authorities[i].KeyPEM = ""
			if n.Authorities[i].RetireAfter.IsZero() || n.Authorities[i].RetireAfter.Before(c.RetireAfter) {
				n.Authorities[i].RetireAfter = c.RetireAfter
			}
		}
		n.Authorities = append(n.Authorities, *c.Authority)
		return n, nil
	case OpRetire:
		i := slices.IndexFunc(s.Authorities, func(a Authority) bool { return a.ID == c.ID })
		switch {
		case i < 0:
			return nil, fmt.Errorf("%w: authority %s", ErrNotFound, c.ID)
		case i == len(s.Authorities)-1:
			return nil, fmt.Errorf("%w: authority %s is the active one", ErrBadCommand, c.ID)
		case c.Time.Before(s.Authorities[i].RetireAfter):
			return nil, fmt.Errorf("%w: authority %s may sign live leaves until %s", ErrBadCommand, c.ID, s.Authorities[i].RetireAfter.Format(time.RFC3339))
		}
		n := s.clone()
		n.Authorities = slices.Delete(n.Authorities, i, i+1)
		for j := range n.Authorities {
			if n.Authorities[j].CrossSignedBy == c.ID {
				n.Authorities[j].CrossSignedPEM, n.Authorities[j].CrossSignedBy = "", ""
			}
		}
		return n, nil
	case OpAddToken:
		t := c.Token
		if t == nil || len(t.Hash) != 64 || (t.Scope != ScopeOperator && t.Scope != ScopeService) || (t.Scope == ScopeService) != (t.Service != "") {
			return nil, fmt.Errorf("%w: malformed token record", ErrBadCommand)
		}
		if slices.ContainsFunc(s.Tokens, func(o TokenRecord) bool { return o.Hash == t.Hash || o.ID == t.ID }) {
			return nil, fmt.Errorf("%w: token %s exists", ErrBadCommand, t.ID)
		}
		n := s.clone()
		n.Tokens = append(n.Tokens, *t)
		return n, nil
	case OpRevokeToken:
		i := slices.IndexFunc(s.Tokens, func(t TokenRecord) bool { return t.ID == c.ID })
		if i < 0 {
			return nil, fmt.Errorf("%w: token %s", ErrNotFound, c.ID)
		}
		n := s.clone()
		n.Tokens = slices.Delete(n.Tokens, i, i+1)
		return n, nil
	}
	return nil, fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op)
}
