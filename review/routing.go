package review

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	mesh "github.com/meshgit/mesh"
)

// RoutingChange is a change of one service's router, splitter or resolver.
type RoutingChange struct {
	Service  string        `json:"service"`
	Kind     string        `json:"kind"`   // router, splitter or resolver
	Change   string        `json:"change"` // added, removed or changed
	Fields   []FieldChange `json:"fields,omitempty"`
	Position string        `json:"position,omitempty"`
}

// ServiceChange is a service added, removed, or changed outside routing.
type ServiceChange struct {
	Service  string        `json:"service"`
	Change   string        `json:"change"` // added, removed or changed
	Fields   []FieldChange `json:"fields,omitempty"`
	Position string        `json:"position,omitempty"`
}

// FieldChange is one setting that changed; "" stands for unset.
type FieldChange struct {
	Field  string `json:"field"`
	Before string `json:"before"`
	After  string `json:"after"`
}

func routingChanges(base, head *mesh.Snapshot) []*RoutingChange {
	var out []*RoutingChange
	add := func(svc, kind string, b, h any, path string, fields func() []FieldChange) {
		bn, hn := isNil(b), isNil(h)
		if bn && hn || reflect.DeepEqual(b, h) {
			return
		}
		c := &RoutingChange{Service: svc, Kind: kind, Change: "changed"}
		switch {
		case bn:
			c.Change = "added"
		case hn:
			c.Change = "removed"
		}
		c.Fields = fields()
		p := head.Pos(path)
		if hn {
			p = base.Pos(path)
		}
		if p.IsValid() {
			c.Position = p.String()
		}
		out = append(out, c)
	}
	for _, svc := range unionKeys(base.Routers, head.Routers) {
		b, h := base.Routers[svc], head.Routers[svc]
		add(svc, "router", b, h, mesh.PathRouter(svc), func() []FieldChange {
			var bl, hl []string
			if b != nil {
				for _, r := range b.Routes {
					bl = append(bl, describeRoute(r))
				}
			}
			if h != nil {
				for _, r := range h.Routes {
					hl = append(hl, describeRoute(r))
				}
			}
			var fc []FieldChange
			for i := 0; i < max(len(bl), len(hl)); i++ {
				var x, y string
				if i < len(bl) {
					x = bl[i]
				}
				if i < len(hl) {
					y = hl[i]
				}
				if x != y {
					fc = append(fc, FieldChange{Field: fmt.Sprintf("route %d", i+1), Before: x, After: y})
				}
			}
			return fc
		})
	}
	for _, svc := range unionKeys(base.Splitters, head.Splitters) {
		b, h := base.Splitters[svc], head.Splitters[svc]
		add(svc, "splitter", b, h, mesh.PathSplitter(svc), func() []FieldChange {
			return []FieldChange{{Field: "splits", Before: describeSplits(svc, b), After: describeSplits(svc, h)}}
		})
	}
	for _, svc := range unionKeys(base.Resolvers, head.Resolvers) {
		b, h := base.Resolvers[svc], head.Resolvers[svc]
		add(svc, "resolver", b, h, mesh.PathResolver(svc), func() []FieldChange { return diffFields(b, h) })
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Service < out[j].Service })
	return out
}

func isNil(v any) bool {
	rv := reflect.ValueOf(v)
	return !rv.IsValid() || rv.Kind() == reflect.Pointer && rv.IsNil()
}

func describeRoute(r mesh.Route) string {
	var b strings.Builder
	if r.Match != nil {
		b.WriteString(describeMatch(r.Match))
	} else {
		b.WriteString("any request")
	}
	b.WriteString(" → ")
	b.WriteString(r.Destination.Service)
	if r.Destination.Subset != "" {
		b.WriteString(" subset " + r.Destination.Subset)
	}
	var opts []string
	if r.Destination.PrefixRewrite != "" {
		opts = append(opts, "rewrite "+r.Destination.PrefixRewrite)
	}
	if r.Destination.RequestTimeout != 0 {
		opts = append(opts, "timeout "+r.Destination.RequestTimeout.String())
	}
	if r.Destination.NumRetries != 0 {
		s := fmt.Sprintf("%d retries", r.Destination.NumRetries)
		if len(r.Destination.RetryOn) > 0 {
			s += " on " + strings.Join(r.Destination.RetryOn, ",")
		}
		opts = append(opts, s)
	}
	if len(opts) > 0 {
		b.WriteString(" (" + strings.Join(opts, ", ") + ")")
	}
	return b.String()
}

func describeSplits(svc string, s *mesh.Splitter) string {
	if s == nil {
		return ""
	}
	var parts []string
	for _, sp := range s.Splits {
		name := sp.Subset
		if sp.Service != svc {
			name = sp.Service
			if sp.Subset != "" {
				name += " subset " + sp.Subset
			}
		}
		if name == "" {
			name = svc
		}
		parts = append(parts, fmt.Sprintf("%s %s%%", name, weight(sp.Weight)))
	}
	return strings.Join(parts, ", ")
}

func weight(w int) string {
	if w%100 == 0 {
		return strconv.Itoa(w / 100)
	}
	return strings.TrimRight(fmt.Sprintf("%d.%02d", w/100, w%100), "0")
}

func serviceChanges(base, head *mesh.Snapshot) []*ServiceChange {
	var out []*ServiceChange
	for _, name := range unionKeys(base.Services, head.Services) {
		b, h := base.Services[name], head.Services[name]
		if sameService(b, h) {
			continue
		}
		c := &ServiceChange{Service: name, Change: "changed"}
		pos := head.Pos(mesh.PathService(name))
		switch {
		case b == nil:
			c.Change = "added"
		case h == nil:
			c.Change = "removed"
			pos = base.Pos(mesh.PathService(name))
		default:
			bs, hs := *b, *h
			bs.Endpoints, hs.Endpoints = nil, nil
			c.Fields = diffFields(&bs, &hs)
			if !reflect.DeepEqual(b.Endpoints, h.Endpoints) {
				c.Fields = append(c.Fields, FieldChange{Field: "endpoints", Before: describeEndpoints(b.Endpoints), After: describeEndpoints(h.Endpoints)})
			}
		}
		if pos.IsValid() {
			c.Position = pos.String()
		}
		out = append(out, c)
	}
	return out
}

// sameService is reflect.DeepEqual for services, ten times faster: a review compares every
// service of both versions.
func sameService(a, b *mesh.Service) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Name != b.Name || a.Protocol != b.Protocol || a.Port != b.Port ||
		!slices.Equal(a.Owners, b.Owners) || !maps.Equal(a.Meta, b.Meta) ||
		len(a.Upstreams) != len(b.Upstreams) || len(a.Endpoints) != len(b.Endpoints) {
		return false
	}
	for k, u := range a.Upstreams {
		if v, ok := b.Upstreams[k]; !ok || (u == nil) != (v == nil) || u != nil && *u != *v {
			return false
		}
	}
	for i, e := range a.Endpoints {
		f := b.Endpoints[i]
		if e.Address != f.Address || e.Port != f.Port || e.Datacenter != f.Datacenter || !maps.Equal(e.Meta, f.Meta) {
			return false
		}
	}
	if (a.HealthCheck == nil) != (b.HealthCheck == nil) {
		return false
	}
	return a.HealthCheck == nil || *a.HealthCheck == *b.HealthCheck
}

func describeEndpoints(eps []mesh.Endpoint) string {
	if len(eps) > 4 {
		return fmt.Sprintf("%d endpoints", len(eps))
	}
	var parts []string
	for _, e := range eps {
		parts = append(parts, fmt.Sprintf("%s:%d (%s)", e.Address, e.Port, e.Datacenter))
	}
	return strings.Join(parts, ", ")
}

func meshChanges(base, head *mesh.Snapshot) []FieldChange {
	if reflect.DeepEqual(base.Mesh, head.Mesh) {
		return nil
	}
	return diffFields(base.Mesh, head.Mesh)
}

// diffFields compares two values field by field through their JSON form: each leaf is named
// by its dotted path.
func diffFields(b, h any) []FieldChange {
	bf, hf := map[string]string{}, map[string]string{}
	flatten(b, bf)
	flatten(h, hf)
	var out []FieldChange
	for _, k := range unionKeys(bf, hf) {
		if bf[k] != hf[k] {
			out = append(out, FieldChange{Field: k, Before: bf[k], After: hf[k]})
		}
	}
	return out
}

func flatten(v any, into map[string]string) {
	if isNil(v) {
		return
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return
	}
	var x any
	if json.Unmarshal(raw, &x) != nil {
		return
	}
	var walk func(prefix string, x any)
	walk = func(prefix string, x any) {
		join := func(k string) string {
			if prefix == "" {
				return k
			}
			return prefix + "." + k
		}
		switch t := x.(type) {
		case map[string]any:
			for k, v := range t {
				walk(join(k), v)
			}
		case []any:
			// Lists of plain values read best on one line.
			plain := true
			var parts []string
			for _, e := range t {
				switch e.(type) {
				case map[string]any, []any:
					plain = false
				}
				parts = append(parts, fmt.Sprint(e))
			}
			if plain {
				into[prefix] = strings.Join(parts, ", ")
				return
			}
			for i, e := range t {
				walk(join(strconv.Itoa(i)), e)
			}
		case nil:
		default:
			into[prefix] = fmt.Sprint(t)
		}
	}
	walk("", x)
}

func unionKeys[V any](a, b map[string]V) []string {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return sortedSet(m)
}

// owners lists the owners of every destination whose inbound access changed, with those
// destinations. Destinations without owners are listed under "".
func owners(base, head *mesh.Snapshot, access []*Access) []Owner {
	dsts := map[string]bool{}
	for _, a := range access {
		if a.Destination != mesh.Wildcard {
			dsts[a.Destination] = true
			continue
		}
		for _, d := range a.dsts {
			dsts[d] = true
		}
	}
	by := map[string][]string{}
	for _, d := range sortedSet(dsts) {
		svc := head.Services[d]
		if svc == nil {
			svc = base.Services[d]
		}
		var list []string
		if svc != nil {
			list = svc.Owners
		}
		if len(list) == 0 {
			list = []string{""}
		}
		for _, o := range list {
			by[o] = append(by[o], d)
		}
	}
	var out []Owner
	for _, o := range sortedKeys(by) {
		out = append(out, Owner{Owner: o, Services: by[o]})
	}
	return out
}

func undecidedPairs(r *Report) int {
	n := 0
	for _, a := range r.Undecided {
		n += a.Pairs
	}
	return n
}

func summary(r *Report) string {
	pairs, gained, lost, other := 0, 0, 0, 0
	for _, a := range r.Access {
		pairs += a.Pairs
		switch {
		case a.After == "allow" && a.Before == "deny":
			gained += a.Pairs
		case a.After == "deny" && a.Before == "allow":
			lost += a.Pairs
		default:
			other += a.Pairs
		}
	}
	var parts []string
	if pairs == 0 {
		parts = append(parts, "no access changes")
	} else {
		s := fmt.Sprintf("%d pairs change access", pairs)
		if pairs == 1 {
			s = "1 pair changes access"
		}
		var d []string
		if gained > 0 {
			d = append(d, fmt.Sprintf("%d gain", gained))
		}
		if lost > 0 {
			d = append(d, fmt.Sprintf("%d lose", lost))
		}
		if other > 0 {
			d = append(d, fmt.Sprintf("%d change L7 rules", other))
		}
		parts = append(parts, s+" ("+strings.Join(d, ", ")+")")
	}
	if n := undecidedPairs(r); n > 0 {
		parts = append(parts, fmt.Sprintf("%d pair%s UNDECIDED (check by hand)", n, plural(n)))
	}
	if n := len(r.Routing); n > 0 {
		parts = append(parts, fmt.Sprintf("%d routing change%s", n, plural(n)))
	}
	added, removed, changed := 0, 0, 0
	for _, s := range r.Services {
		switch s.Change {
		case "added":
			added++
		case "removed":
			removed++
		default:
			changed++
		}
	}
	if added > 0 {
		parts = append(parts, fmt.Sprintf("%d service%s added", added, plural(added)))
	}
	if removed > 0 {
		parts = append(parts, fmt.Sprintf("%d service%s removed", removed, plural(removed)))
	}
	if changed > 0 {
		parts = append(parts, fmt.Sprintf("%d service%s changed", changed, plural(changed)))
	}
	if n := len(r.Mesh); n > 0 {
		parts = append(parts, fmt.Sprintf("%d mesh setting%s changed", n, plural(n)))
	}
	if n := len(r.Violations); n > 0 {
		parts = append(parts, fmt.Sprintf("%d policy violation%s", n, plural(n)))
	}
	if n := len(r.Warnings); n > 0 {
		parts = append(parts, fmt.Sprintf("%d warning%s", n, plural(n)))
	}
	s := strings.Join(parts, "; ")
	if r.BaseError != nil {
		s = baseBrokenPrefix + s
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
