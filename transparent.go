package mesh

import (
	"crypto/sha256"
	"encoding/binary"
	"net/netip"
	"sort"
)

// Proxy modes: a sidecar in direct mode listens for its declared upstreams only, each on its
// local port; one in transparent mode also reaches every service its intentions allow, by
// virtual IP (Envoy) or by name (proxyless gRPC), as Consul's transparent proxy.
const (
	ModeDirect      = "direct"
	ModeTransparent = "transparent"
)

// Transparent reports whether the service's sidecar is in transparent mode.
func (s *Service) Transparent() bool { return s != nil && s.Mode == ModeTransparent }

// Upstreams returns the upstreams of a service, sorted by upstream service: those it declares
// (with their local ports), and in transparent mode every other service Reachable finds (local
// port 0: reached by virtual IP or by name, in the mesh's datacenter). The result is shared
// where it can be: callers must not modify the upstreams.
func (s *Snapshot) Upstreams(service string) []*Upstream {
	if v, ok := s.ups.Load(service); ok {
		return v.([]*Upstream)
	}
	v, _ := s.ups.LoadOrStore(service, s.upstreams(service))
	return v.([]*Upstream)
}

func (s *Snapshot) upstreams(service string) []*Upstream {
	svc := s.Services[service]
	if svc == nil {
		return nil
	}
	if svc.Transparent() && len(svc.Upstreams) == 0 {
		return s.reachUpstreams(Reachable(s, service))
	}
	by := make(map[string]*Upstream, len(svc.Upstreams))
	for key, u := range svc.Upstreams {
		if u == nil {
			continue
		}
		name := u.Service
		if name == "" {
			name = key
		}
		cp := *u
		cp.Service = name
		if prev, ok := by[name]; !ok || cp.LocalPort < prev.LocalPort {
			by[name] = &cp
		}
	}
	if svc.Transparent() {
		x := s.reachIndex()
		for _, d := range Reachable(s, service) {
			if by[d] == nil {
				by[d] = x.upstream[d]
			}
		}
	}
	out := make([]*Upstream, 0, len(by))
	for _, u := range by {
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out
}

// Reachable returns, sorted, the services to which Authorize allows src some request (by
// AllowsSome; a pair it cannot decide counts as reachable, the destination's RBAC still
// decides each request). It is what a transparent sidecar of src may reach. The result is
// shared: callers must not modify it.
//
// Its cost grows with the services and the destinations that have intentions of their own, not
// with their product: the verdicts of every request from src to a destination D depend only on
// the first of D's candidate intentions and the mesh default. A destination with no intention
// D ← src nor D ← * of its own is decided by *'s intentions (* ← src, * ← *) or the default,
// the same for all of them: decided once, for every source, and when it allows and none of the
// destinations with intentions of their own denies, every source shares one list of all
// services (the dense mesh of "*" → "*": linear in the services, not quadratic). The other
// destinations are grouped by their deciding intention and each group is decided once. The
// answer is memoized per source on the snapshot.
func Reachable(s *Snapshot, src string) []string {
	if v, ok := s.reach.Load(src); ok {
		return v.([]string)
	}
	x := s.reachIndex()
	special := make(map[string]bool, len(x.wildInto)+len(x.bySource[src]))
	for _, d := range x.wildInto {
		special[d] = true
	}
	for _, d := range x.bySource[src] {
		special[d] = true
	}
	decided := map[*Intention]bool{} // first candidate → allows some request
	var noIntention *bool            // the verdict with no candidate at all
	verdict := func(d string) bool {
		first := s.deciding(src, d)
		if first == nil {
			if noIntention == nil {
				v := allowsSome(s, src, d)
				noIntention = &v
			}
			return *noIntention
		}
		v, ok := decided[first]
		if !ok {
			v = allowsSome(s, src, d)
			decided[first] = v
		}
		return v
	}
	base := false // the verdict of the destinations without intentions of their own
	for _, d := range x.names {
		if !special[d] {
			base = verdict(d)
			break
		}
	}
	var allowed, denied []string
	for d := range special {
		if verdict(d) {
			allowed = append(allowed, d)
		} else {
			denied = append(denied, d)
		}
	}
	var out []string
	switch {
	case base && len(denied) == 0:
		out = x.names
	case base:
		gone := make(map[string]bool, len(denied))
		for _, d := range denied {
			gone[d] = true
		}
		out = make([]string, 0, len(x.names)-len(denied))
		for _, d := range x.names {
			if !gone[d] {
				out = append(out, d)
			}
		}
	default:
		out = allowed
		if out == nil {
			out = []string{}
		}
		sort.Strings(out)
	}
	v, _ := s.reach.LoadOrStore(src, out)
	return v.([]string)
}

// reachUpstreams is the upstreams of a transparent service that declares none: one per service
// it reaches. The Upstreams are shared by every service of the snapshot, and so is the list of
// all of them, which is what every service of a dense mesh reaches: serving it costs what the
// services do, not their square.
func (s *Snapshot) reachUpstreams(reach []string) []*Upstream {
	x := s.reachIndex()
	if len(reach) == len(x.names) && (len(reach) == 0 || &reach[0] == &x.names[0]) {
		return x.all
	}
	out := make([]*Upstream, len(reach))
	for i, d := range reach {
		out[i] = x.upstream[d]
	}
	return out
}

// reachIdx is what Reachable needs of the intentions, built once per snapshot, with the
// Upstreams of transparent reach.
type reachIdx struct {
	names    []string            // the services, sorted
	wildInto []string            // services D with an intention D ← *
	bySource map[string][]string // source → the services D with an intention D ← source
	all      []*Upstream         // an Upstream per service, in the order of names
	upstream map[string]*Upstream
}

func (s *Snapshot) reachIndex() *reachIdx {
	s.reachOnce.Do(func() {
		x := &reachIdx{names: s.ServiceNames(), bySource: map[string][]string{}}
		x.all = make([]*Upstream, len(x.names))
		x.upstream = make(map[string]*Upstream, len(x.names))
		for i, d := range x.names {
			x.all[i] = &Upstream{Service: d}
			x.upstream[d] = x.all[i]
		}
		for _, in := range s.Intentions {
			if in.Destination == Wildcard || s.Services[in.Destination] == nil {
				continue
			}
			if in.Source == Wildcard {
				x.wildInto = append(x.wildInto, in.Destination)
			} else {
				x.bySource[in.Source] = append(x.bySource[in.Source], in.Destination)
			}
		}
		s.reachIdxV = x
	})
	return s.reachIdxV
}

// allowsSome is AllowsSome, an undecided answer counting as allowed.
func allowsSome(s *Snapshot, src, dst string) bool {
	d := AllowsSome(s, src, dst, 0)
	return d.Differs || d.Undecided != ""
}

// VirtualIPPrefix is where virtual IPs are assigned: 240.0.0.0/4, reserved and never routed,
// as Consul's.
var VirtualIPPrefix = netip.MustParsePrefix("240.0.0.0/4")

// AssignVirtualIPs gives every service a virtual IP in VirtualIPPrefix. A service's address is
// a hash of its name alone, so it is the same in every snapshot whatever else changes; only
// when two names hash to the same address (about one pair in a quarter million among a
// thousand services) does the one that sorts later take the next address of its own sequence
// of hashes. The prefix's first and last addresses are never assigned.
func AssignVirtualIPs(names []string) map[string]string {
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	taken := make(map[netip.Addr]bool, len(sorted))
	out := make(map[string]string, len(sorted))
	for _, n := range sorted {
		for i := uint32(0); ; i++ {
			a := virtualIP(n, i)
			if !taken[a] {
				taken[a] = true
				out[n] = a.String()
				break
			}
		}
	}
	return out
}

// virtualIP is the attempt-th candidate address of a name.
func virtualIP(name string, attempt uint32) netip.Addr {
	h := sha256.New()
	h.Write([]byte(name))
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], attempt)
	h.Write(b[:])
	sum := h.Sum(nil)
	host := binary.BigEndian.Uint32(sum[:4]) & 0x0fffffff
	if host == 0 || host == 0x0fffffff {
		host = 1
	}
	v := 0xf0000000 | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
