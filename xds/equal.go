package xds

import (
	"maps"
	"slices"

	mesh "github.com/meshgit/mesh"
)

// Hand-written equality for the snapshot elements that diff compares by the ten thousand:
// reflect.DeepEqual made a one-intention change cost more than rendering. equal_test.go fails
// when a field is added to these types, so that a new field cannot be silently ignored.

func serviceEqual(a, b *mesh.Service) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil {
		return false
	}
	if a.Name != b.Name || a.Protocol != b.Protocol || a.Port != b.Port || a.Mode != b.Mode ||
		!slices.Equal(a.Owners, b.Owners) || !maps.Equal(a.Meta, b.Meta) ||
		len(a.Upstreams) != len(b.Upstreams) || len(a.Endpoints) != len(b.Endpoints) {
		return false
	}
	for k, u := range a.Upstreams {
		v, ok := b.Upstreams[k]
		if !ok || (u != v && (u == nil || v == nil || *u != *v)) {
			return false
		}
	}
	for i := range a.Endpoints {
		x, y := &a.Endpoints[i], &b.Endpoints[i]
		if x.Address != y.Address || x.Port != y.Port || x.Datacenter != y.Datacenter || !maps.Equal(x.Meta, y.Meta) ||
			x.Health != y.Health || x.Weight != y.Weight {
			return false
		}
	}
	if (a.HealthCheck == nil) != (b.HealthCheck == nil) || (a.HealthCheck != nil && *a.HealthCheck != *b.HealthCheck) {
		return false
	}
	return true
}

func chainEqual(a, b *mesh.Chain) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil {
		return false
	}
	if a.Service != b.Service || a.Protocol != b.Protocol || a.Datacenter != b.Datacenter || len(a.Routes) != len(b.Routes) || len(a.Targets) != len(b.Targets) {
		return false
	}
	for i := range a.Routes {
		x, y := &a.Routes[i], &b.Routes[i]
		if x.PrefixRewrite != y.PrefixRewrite || x.RequestTimeout != y.RequestTimeout || x.NumRetries != y.NumRetries ||
			!slices.Equal(x.RetryOn, y.RetryOn) || !slices.Equal(x.Splits, y.Splits) || !httpMatchEqual(x.Match, y.Match) {
			return false
		}
	}
	for id, x := range a.Targets {
		y, ok := b.Targets[id]
		if !ok || !targetEqual(x, y) {
			return false
		}
	}
	return true
}

// httpMatchEqual reports whether two HTTP matches match the same (a nil list is an empty one).
func httpMatchEqual(a, b *mesh.HTTPMatch) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil {
		return false
	}
	return a.Path == b.Path && a.PathPrefix == b.PathPrefix && a.PathRegex == b.PathRegex &&
		slices.Equal(a.Methods, b.Methods) && slices.Equal(a.Header, b.Header) && slices.Equal(a.QueryParam, b.QueryParam)
}

func targetEqual(a, b *mesh.Target) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil {
		return false
	}
	return a.ID == b.ID && a.Service == b.Service && a.Subset == b.Subset && a.Datacenter == b.Datacenter &&
		maps.Equal(a.Filter, b.Filter) && a.SNI == b.SNI && a.ConnectTimeout == b.ConnectTimeout &&
		a.LoadBalancer == b.LoadBalancer && slices.Equal(a.Failover, b.Failover)
}

func intentionEqual(a, b *mesh.Intention) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil {
		return false
	}
	return a.Source == b.Source && a.Destination == b.Destination && a.Precedence == b.Precedence &&
		a.Action == b.Action && a.Description == b.Description &&
		slices.EqualFunc(a.Permissions, b.Permissions, func(x, y mesh.Permission) bool {
			return x.Action == y.Action && httpMatchEqual(x.HTTP, y.HTTP)
		})
}
