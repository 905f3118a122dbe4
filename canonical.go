package mesh

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// Canonical returns the canonical JSON of the snapshot's content: every map with sorted keys,
// every list in the compiler's canonical order, and without Version, Commit and Positions. Two
// compilations of the same configuration give the same bytes, whatever the file layout.
func (s *Snapshot) Canonical() ([]byte, error) {
	c := struct {
		Mesh       Config               `json:"mesh"`
		Services   map[string]*Service  `json:"services"`
		Intentions []*Intention         `json:"intentions"`
		Routers    map[string]*Router   `json:"routers,omitempty"`
		Splitters  map[string]*Splitter `json:"splitters,omitempty"`
		Resolvers  map[string]*Resolver `json:"resolvers,omitempty"`
		Chains     map[string]*Chain    `json:"chains"`
		Remote     map[string]*Chain    `json:"remoteChains,omitempty"`
		VirtualIPs map[string]string    `json:"virtualIPs,omitempty"`
	}{s.Mesh, s.Services, s.Intentions, s.Routers, s.Splitters, s.Resolvers, s.Chains, s.RemoteChains, s.VirtualIPs}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&c); err != nil {
		return nil, fmt.Errorf("canonical encoding: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// ComputeVersion returns the version of the snapshot's content: the first 16 hex digits of the
// SHA-256 of its canonical JSON.
func (s *Snapshot) ComputeVersion() (string, error) {
	b, err := s.Canonical()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}

// Seal computes and records the snapshot's Version. The compiler calls it last.
func (s *Snapshot) Seal() error {
	v, err := s.ComputeVersion()
	if err != nil {
		return err
	}
	s.Version = v
	return nil
}

// Encode returns the snapshot's full JSON: version, commit, content and positions. Decode reads
// it back; this is how snapshots travel between servers.
func (s *Snapshot) Encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Decode reads a snapshot written by Encode and checks that its content matches its version.
func Decode(b []byte) (*Snapshot, error) {
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decode snapshot: %w", err)
	}
	v, err := s.ComputeVersion()
	if err != nil {
		return nil, err
	}
	if v != s.Version {
		return nil, fmt.Errorf("decode snapshot: content hashes to %s, not its recorded version %s", v, s.Version)
	}
	return &s, nil
}
