package mesh

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"sync"
)

// Delta is what changed from one snapshot (its Base) to the next: the elements set (added or
// changed) and removed, by key, in every part of the snapshot. A commit that changes one
// intention, or a mesh-wide setting, makes a Delta of one element where the snapshot has tens of
// thousands: this is what servers replicate instead of whole snapshots.
//
// Applying a Delta to its base gives a snapshot whose Encode is byte for byte that of the
// snapshot it was made from (TestDeltaRoundTrip), so it has the same Version; unchanged elements
// are shared with the base, which is immutable like every snapshot.
type Delta struct {
	// Base is the Version of the snapshot the Delta applies to; Version and Commit are the
	// resulting snapshot's.
	Base    string `json:"base"`
	Version string `json:"version"`
	Commit  string `json:"commit"`

	Mesh         *Config                   `json:"mesh,omitempty"` // nil: unchanged
	Services     *MapDelta[*Service]       `json:"services,omitempty"`
	Intentions   *IntentionsDelta          `json:"intentions,omitempty"`
	Routers      *MapDelta[*Router]        `json:"routers,omitempty"`
	Splitters    *MapDelta[*Splitter]      `json:"splitters,omitempty"`
	Resolvers    *MapDelta[*Resolver]      `json:"resolvers,omitempty"`
	Chains       *MapDelta[*Chain]         `json:"chains,omitempty"`
	RemoteChains *MapDelta[*Chain]         `json:"remoteChains,omitempty"`
	VirtualIPs   *MapDelta[string]         `json:"virtualIPs,omitempty"`
	Positions    *MapDelta[Pos]            `json:"positions,omitempty"`
	MeshGateways *MapDelta[[]Gateway]      `json:"meshGateways,omitempty"`
	RemoteHealth *MapDelta[map[string]int] `json:"remoteHealthy,omitempty"`
}

// MapDelta is the change of one map of a snapshot: the keys set and removed, and whether the
// resulting map is nil (which encodes differently from an empty one). A nil *MapDelta means
// the map did not change.
type MapDelta[V any] struct {
	Set map[string]V `json:"set,omitempty"`
	Del []string     `json:"del,omitempty"`
	Nil bool         `json:"nil,omitempty"`
}

// IntentionsDelta is the change of Snapshot.Intentions, keyed by destination and source.
type IntentionsDelta struct {
	Set []*Intention `json:"set,omitempty"`
	Del [][2]string  `json:"del,omitempty"` // [destination, source]
	Nil bool         `json:"nil,omitempty"`
}

var (
	// ErrDeltaBase is returned when a Delta is applied to a snapshot other than its base.
	ErrDeltaBase = errors.New("delta applied to another snapshot than its base")
	// ErrDeltaNil is returned for a Delta that sets an element to nothing (null).
	ErrDeltaNil = errors.New("delta sets an element to null")
)

// hasNil reports whether m sets some key to a nil pointer.
func hasNil[V comparable](m *MapDelta[V]) bool {
	if m == nil {
		return false
	}
	var zero V
	for _, v := range m.Set {
		if v == zero {
			return true
		}
	}
	return false
}

// Diff returns the Delta from base to s. Elements are compared by value, so s may be compiled
// afresh (no element shared with base) and only what differs is in the Delta.
func Diff(base, s *Snapshot) *Delta {
	d := &Delta{Base: base.Version, Version: s.Version, Commit: s.Commit}
	if !reflect.DeepEqual(base.Mesh, s.Mesh) {
		m := s.Mesh
		d.Mesh = &m
	}
	// The parts are compared concurrently: both snapshots are immutable, and each part of d is
	// written by one goroutine.
	var wg sync.WaitGroup
	wg.Go(func() { d.Services = diffMap(base.Services, s.Services, deepEqual) })
	wg.Go(func() { d.Intentions = diffIntentions(base.Intentions, s.Intentions) })
	wg.Go(func() { d.Chains = diffMap(base.Chains, s.Chains, deepEqual) })
	wg.Go(func() { d.Positions = diffMap(base.Positions, s.Positions, equal) })
	d.Routers = diffMap(base.Routers, s.Routers, deepEqual)
	d.Splitters = diffMap(base.Splitters, s.Splitters, deepEqual)
	d.Resolvers = diffMap(base.Resolvers, s.Resolvers, deepEqual)
	d.RemoteChains = diffMap(base.RemoteChains, s.RemoteChains, deepEqual)
	d.VirtualIPs = diffMap(base.VirtualIPs, s.VirtualIPs, equal)
	d.MeshGateways = diffMap(base.MeshGateways, s.MeshGateways, deepEqual)
	d.RemoteHealth = diffMap(base.RemoteHealthy, s.RemoteHealthy, deepEqual)
	wg.Wait()
	return d
}

// Apply returns the snapshot d makes of base, which must be d's base.
func (d *Delta) Apply(base *Snapshot) (*Snapshot, error) {
	if base == nil || base.Version != d.Base {
		have := "none"
		if base != nil {
			have = base.Version
		}
		return nil, fmt.Errorf("%w: delta to %s is for %s, the snapshot is %s", ErrDeltaBase, d.Version, d.Base, have)
	}
	if hasNil(d.Services) || hasNil(d.Routers) || hasNil(d.Splitters) || hasNil(d.Resolvers) ||
		hasNil(d.Chains) || hasNil(d.RemoteChains) || d.Intentions != nil && slices.Contains(d.Intentions.Set, nil) {
		return nil, ErrDeltaNil
	}
	s := &Snapshot{Version: d.Version, Commit: d.Commit, Mesh: base.Mesh}
	if d.Mesh != nil {
		s.Mesh = *d.Mesh
	}
	s.Services = applyMap(base.Services, d.Services)
	s.Intentions = applyIntentions(base.Intentions, d.Intentions)
	s.Routers = applyMap(base.Routers, d.Routers)
	s.Splitters = applyMap(base.Splitters, d.Splitters)
	s.Resolvers = applyMap(base.Resolvers, d.Resolvers)
	s.Chains = applyMap(base.Chains, d.Chains)
	s.RemoteChains = applyMap(base.RemoteChains, d.RemoteChains)
	s.VirtualIPs = applyMap(base.VirtualIPs, d.VirtualIPs)
	s.Positions = applyMap(base.Positions, d.Positions)
	s.MeshGateways = applyMap(base.MeshGateways, d.MeshGateways)
	s.RemoteHealthy = applyMap(base.RemoteHealthy, d.RemoteHealth)
	return s, nil
}

// Changes counts the elements d sets or removes.
func (d *Delta) Changes() int {
	n := 0
	if d.Mesh != nil {
		n++
	}
	if d.Intentions != nil {
		n += len(d.Intentions.Set) + len(d.Intentions.Del)
	}
	for _, c := range []int{d.Services.changes(), d.Routers.changes(), d.Splitters.changes(), d.Resolvers.changes(),
		d.Chains.changes(), d.RemoteChains.changes(), d.VirtualIPs.changes(), d.Positions.changes(),
		d.MeshGateways.changes(), d.RemoteHealth.changes()} {
		n += c
	}
	return n
}

func (m *MapDelta[V]) changes() int {
	if m == nil {
		return 0
	}
	return len(m.Set) + len(m.Del)
}

func equal[V comparable](a, b V) bool { return a == b }

func deepEqual[V any](a, b V) bool { return reflect.DeepEqual(a, b) }

// diffMap compares each element once (eq), and reports nil when nothing changed, nil-ness
// included: a nil map and an empty one encode differently.
func diffMap[V any](old, new map[string]V, eq func(a, b V) bool) *MapDelta[V] {
	d := &MapDelta[V]{Nil: new == nil}
	for k, v := range new {
		if ov, ok := old[k]; !ok || !eq(ov, v) {
			if d.Set == nil {
				d.Set = map[string]V{}
			}
			d.Set[k] = v
		}
	}
	if len(new)-len(d.Set) != len(old) { // some of old's keys are gone
		for k := range old {
			if _, ok := new[k]; !ok {
				d.Del = append(d.Del, k)
			}
		}
		slices.Sort(d.Del)
	}
	if d.Set == nil && d.Del == nil && (old == nil) == (new == nil) {
		return nil
	}
	return d
}

func applyMap[V any](base map[string]V, d *MapDelta[V]) map[string]V {
	if d == nil {
		return base // shared: snapshots are immutable
	}
	if d.Nil {
		return nil
	}
	out := make(map[string]V, len(base)+len(d.Set))
	maps.Copy(out, base)
	for _, k := range d.Del {
		delete(out, k)
	}
	maps.Copy(out, d.Set)
	return out
}

func intentionKey(in *Intention) [2]string { return [2]string{in.Destination, in.Source} }

func diffIntentions(old, new []*Intention) *IntentionsDelta {
	d := &IntentionsDelta{Nil: new == nil}
	byKey := make(map[[2]string]*Intention, len(old))
	for _, in := range old {
		byKey[intentionKey(in)] = in
	}
	for _, in := range new {
		k := intentionKey(in)
		if o, ok := byKey[k]; !ok || !reflect.DeepEqual(o, in) {
			d.Set = append(d.Set, in)
		}
		delete(byKey, k)
	}
	for k := range byKey {
		d.Del = append(d.Del, k)
	}
	slices.SortFunc(d.Del, func(a, b [2]string) int {
		if a[0] != b[0] {
			return compareStrings(a[0], b[0])
		}
		return compareStrings(a[1], b[1])
	})
	if d.Set == nil && d.Del == nil && (old == nil) == (new == nil) {
		return nil
	}
	return d
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// applyIntentions merges d into base, which is in canonical order (SortIntentions), in one pass.
func applyIntentions(base []*Intention, d *IntentionsDelta) []*Intention {
	if d == nil {
		return base
	}
	if d.Nil {
		return nil
	}
	set := slices.Clone(d.Set)
	sort.Slice(set, func(i, j int) bool { return intentionLess(set[i], set[j]) })
	var del map[[2]string]bool
	if len(d.Del) > 0 {
		del = make(map[[2]string]bool, len(d.Del))
		for _, k := range d.Del {
			del[k] = true
		}
	}
	out := make([]*Intention, 0, len(base)+len(set))
	i, j := 0, 0
	for i < len(base) || j < len(set) {
		switch {
		case j == len(set) || i < len(base) && intentionLess(base[i], set[j]):
			if !del[intentionKey(base[i])] {
				out = append(out, base[i])
			}
			i++
		case i < len(base) && intentionKey(base[i]) == intentionKey(set[j]):
			out = append(out, set[j]) // changed
			i++
			j++
		default:
			out = append(out, set[j]) // added
			j++
		}
	}
	return out
}
