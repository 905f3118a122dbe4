// Package review compares two compiled snapshots of a mesh, base and head, and reports what a
// reviewer of the change must know: which source → destination pairs gain or lose access (and
// under which L7 rules), what routing changes, which services and mesh-wide settings change, and
// who must approve.
//
// Guarantees:
//   - Verdicts come from mesh.Authorize, the one evaluator; this package never decides a request
//     itself. It only works out which pairs can be affected by the change (by the precedence of
//     the keys D←S, D←*, *←S, *←*) and asks Authorize about one representative of each group of
//     pairs that share the same deciding rules in both versions.
//   - A pair is reported exactly when Authorize's verdict differs, in base and head, for some
//     request. The rules deciding the pair are compared symbolically (see decide.go), attribute
//     by attribute, over values that cover every distinct behaviour of exact, prefix, suffix,
//     present, method and regex conditions (mesh.CompareAccess); a change is reported with a
//     request that shows it, confirmed by Authorize. Where that cannot be decided (a search
//     too large, or a path regex spelling a percent-encoding, which is only sampled), the pair
//     is listed in Undecided with the reason, never reported as unchanged.
//   - The cost is proportional to the number of intentions (a linear diff) plus the pairs the
//     change affects, never to the number of pairs of the mesh: a wildcard change is one
//     summarised group whose members are enumerated only in linear time.
//   - Moving definitions between files changes nothing: only content is compared, never positions.
package review

import (
	mesh "github.com/meshgit/mesh"
)

// Report is the result of a review. Its JSON form is what `mesh review --format json` prints.
type Report struct {
	Base string `json:"base"` // commit or version of base
	// BaseError is set when base does not compile: the report then compares head with an empty
	// mesh (SetBaseError), and is not a diff of the change.
	BaseError *BaseError `json:"baseError,omitempty"`
	Head      string     `json:"head"`
	Summary   string     `json:"summary"`
	// Access lists every changed pair, and every summarised group of pairs.
	Access []*Access `json:"access"`
	// Undecided lists the pairs (and groups) for which the review could not decide whether
	// access changes, each with the reason; they need a reviewer's own judgement.
	Undecided []*Access `json:"undecided"`
	// Routing lists routing changes per service.
	Routing []*RoutingChange `json:"routing"`
	// Services lists services added, removed or changed (outside routing).
	Services []*ServiceChange `json:"services"`
	// Mesh lists changes of mesh-wide settings.
	Mesh []FieldChange `json:"mesh"`
	// Owners must approve: the owners of every destination whose inbound access changed.
	Owners []Owner `json:"owners"`
	// Violations and Warnings are the policy violations and analysis warnings at head, filled in
	// by the caller (the compiler finds them).
	Violations []Finding `json:"violations"`
	Warnings   []Finding `json:"warnings"`
}

// Finding is a positioned policy violation or analysis warning.
type Finding struct {
	Position string `json:"position"`
	Message  string `json:"message"`
}

// Owner is one owner who must approve, and the destinations that make them.
type Owner struct {
	Owner    string   `json:"owner"`
	Services []string `json:"services"`
}

// Review compares base and head. Either may be nil: a nil base means every element of head is new.
func Review(base, head *mesh.Snapshot) *Report {
	if base == nil {
		base = empty(head)
	}
	r := &Report{Base: label(base), Head: label(head)}
	r.Access, r.Undecided = Accesses(base, head)
	r.Routing = routingChanges(base, head)
	r.Services = serviceChanges(base, head)
	r.Mesh = meshChanges(base, head)
	r.Owners = owners(base, head, append(append([]*Access(nil), r.Access...), r.Undecided...))
	r.Summary = summary(r)
	return r
}

func label(s *mesh.Snapshot) string {
	if s.Commit != "" {
		if len(s.Commit) > 12 {
			return s.Commit[:12]
		}
		return s.Commit
	}
	return s.Version
}

func empty(like *mesh.Snapshot) *mesh.Snapshot {
	return &mesh.Snapshot{Mesh: mesh.Config{DefaultIntention: like.Mesh.DefaultIntention}}
}
