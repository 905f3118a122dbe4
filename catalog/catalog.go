// Package catalog is the live half of the mesh: where the instances of services run now and
// whether they are healthy. Git says what a service is; the catalog says where it is.
//
// What it guarantees:
//   - State is immutable and deterministic: Apply(index, Command) depends only on the command and
//     the previous State (no clock, no map order), so every server that applies the same Raft
//     log holds the same catalog, and a Raft snapshot restores it. Every change carries the Raft
//     index at which it was applied; State.Index never decreases, and the index of a service or
//     of the whole catalog moves whenever what the read endpoints answer about it changes
//     (blocking queries wake on it), never for a command that changes nothing.
//   - Time-based decisions (a node that stopped syncing, DeregisterCriticalServiceAfter) are
//     the leader's, made from its clock and written as commands.
//   - The HTTP API speaks a subset of Consul's agent, catalog and health API with Consul's
//     paths, JSON field names, status words (passing, warning, critical) and blocking queries
//     (?index=&wait=, X-Consul-Index), so Consul clients work unchanged. A malformed request
//     gets a 400 naming the field and changes nothing; writes need a token that covers the
//     service (a service token its own service only, an operator token any).
//   - Instances of services the served snapshot does not declare are kept and listed, flagged
//     undeclared, and routed to nobody (Overlay adds only declared services' instances).
//   - Only status transitions of checks are replicated, never their output: a check that keeps
//     failing with a different message each time writes nothing.
//   - An instance with any critical check, or on a node that stopped syncing, is critical;
//     otherwise one with a warning check is warning; otherwise passing.
//   - Commands committed concurrently on the leader may share one Raft entry (Batcher,
//     State.ApplyBatch): each is applied in order, as if alone, and gets its own result.
//   - An agent with a data directory keeps the instances registered through its API across
//     restarts and crashes (atomic, owner-only files) and registers them again at start, before
//     any sync of its could remove them from the servers.
package catalog

import (
	"encoding/json"
	"errors"
	"maps"
	"time"
)

// Consul's status words.
const (
	StatusPassing  = "passing"
	StatusWarning  = "warning"
	StatusCritical = "critical"
)

// Check types.
const (
	CheckTTL  = "ttl"
	CheckHTTP = "http"
	CheckTCP  = "tcp"
	CheckGRPC = "grpc"
)

// NodeCheckID is the ID of the node-level check every node carries: critical while the node's
// agent has stopped syncing (Consul's serfHealth plays this part).
const NodeCheckID = "mesh-node"

// Sentinel errors, matched with errors.Is.
var (
	// ErrBadRequest means a request or a registration is malformed; the message names the field.
	ErrBadRequest = errors.New("bad request")
	// ErrUnauthorized means a write carried no token, or one nobody issued.
	ErrUnauthorized = errors.New("missing or unknown token")
	// ErrForbidden means the token does not cover the service written.
	ErrForbidden = errors.New("token does not cover this service")
	// ErrNotFound means a service instance or a check does not exist.
	ErrNotFound = errors.New("not found")
	// ErrBadCommand means a catalog command could not be decoded or applied.
	ErrBadCommand = errors.New("malformed catalog command")
	// ErrUnavailable means the servers could not be reached or have no leader.
	ErrUnavailable = errors.New("catalog unavailable")
)

// Weights are the load-balancing weights of an instance while passing and while warning.
type Weights struct {
	Passing int
	Warning int
}

// Node is a machine that instances run on: a server, or the host of a `mesh agent`.
type Node struct {
	Name    string
	Address string
	Meta    map[string]string `json:",omitempty"`
	// SyncInterval is how often the node's agent syncs; the leader marks a node that has not
	// synced for 3 of them critical. Zero: the node is a server, and never expires.
	SyncInterval time.Duration `json:",omitempty"`
	// Health is the status of its node-level check (NodeCheckID).
	Health      string
	CreateIndex uint64
	ModifyIndex uint64
}

// Instance is one registered instance of a service, with its checks.
type Instance struct {
	Node    string
	ID      string
	Service string
	Address string
	Port    int
	Tags    []string          `json:",omitempty"`
	Meta    map[string]string `json:",omitempty"`
	Weights Weights
	Kind    string  `json:",omitempty"`
	Checks  []Check `json:",omitempty"` // sorted by ID
	// TaggedAddresses are Consul's service tagged addresses: "lan" and "wan" of a mesh gateway
	// (what proxies of its datacenter and of other datacenters dial).
	TaggedAddresses map[string]ServiceAddress `json:",omitempty"`

	CreateIndex uint64
	ModifyIndex uint64
}

// ServiceAddress is one tagged address of an instance, Consul's ServiceAddress.
type ServiceAddress struct {
	Address string
	Port    int
}

// Check is a health check of an instance. Output is the agent's, kept where the check runs and
// never replicated.
type Check struct {
	ID     string
	Name   string
	Type   string
	Status string
	Notes  string `json:",omitempty"`
	Output string `json:",omitempty"`
	CheckDefinition
}

// CheckDefinition says how a check runs.
type CheckDefinition struct {
	HTTP          string              `json:",omitempty"`
	Method        string              `json:",omitempty"`
	Header        map[string][]string `json:",omitempty"`
	TCP           string              `json:",omitempty"`
	GRPC          string              `json:",omitempty"`
	GRPCUseTLS    bool                `json:",omitempty"`
	TLSSkipVerify bool                `json:",omitempty"`
	Interval      time.Duration       `json:",omitempty"`
	Timeout       time.Duration       `json:",omitempty"`
	TTL           time.Duration       `json:",omitempty"`

	SuccessBeforePassing           int           `json:",omitempty"`
	FailuresBeforeCritical         int           `json:",omitempty"`
	FailuresBeforeWarning          int           `json:",omitempty"`
	DeregisterCriticalServiceAfter time.Duration `json:",omitempty"`
}

// Status is the aggregate status of an instance on a node: critical if the node or any check
// is, else warning if any check is, else passing.
func (in *Instance) Status(node *Node) string {
	st := StatusPassing
	if node != nil && node.Health == StatusCritical {
		return StatusCritical
	}
	for _, c := range in.Checks {
		switch c.Status {
		case StatusCritical:
			return StatusCritical
		case StatusWarning:
			st = StatusWarning
		}
	}
	return st
}

// check returns the instance's check with id, or nil.
func (in *Instance) check(id string) *Check {
	for i := range in.Checks {
		if in.Checks[i].ID == id {
			return &in.Checks[i]
		}
	}
	return nil
}

// clone returns a copy whose Checks may be modified.
func (in *Instance) clone() *Instance {
	c := *in
	c.Checks = append([]Check(nil), in.Checks...)
	return &c
}

// sameContent reports whether a and b register the same thing (indexes and outputs aside).
func sameContent(a, b *Instance) bool {
	if a.Node != b.Node || a.ID != b.ID || a.Service != b.Service || a.Address != b.Address ||
		a.Port != b.Port || a.Weights != b.Weights || a.Kind != b.Kind || len(a.Checks) != len(b.Checks) ||
		!equalStrings(a.Tags, b.Tags) || !equalMaps(a.Meta, b.Meta) || !maps.Equal(a.TaggedAddresses, b.TaggedAddresses) {
		return false
	}
	for i := range a.Checks {
		x, y := a.Checks[i], b.Checks[i]
		if x.ID != y.ID || x.Name != y.Name || x.Type != y.Type || x.Status != y.Status || x.Notes != y.Notes ||
			!sameDefinition(x.CheckDefinition, y.CheckDefinition) {
			return false
		}
	}
	return true
}

func sameDefinition(a, b CheckDefinition) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
