package ui

import (
	"net/http"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/catalog"
)

// Catalog is the live catalog of the server that serves the UI. Implementations must be safe
// for concurrent use.
type Catalog interface {
	// Catalog returns the catalog now. It is immutable.
	Catalog() *catalog.State
	// CatalogChanged returns a channel closed at the catalog's next change.
	CatalogChanged() <-chan struct{}
}

// Health words of a Git endpoint beside Consul's passing, warning and critical.
const (
	// HealthUnchecked: Git gives the service no healthCheck; the endpoint is routed to as healthy.
	HealthUnchecked = "unchecked"
	// HealthPending: the servers check it and have not recorded a first result yet.
	HealthPending = "pending"
	// HealthElsewhere: an endpoint of another datacenter, checked by the servers there.
	HealthElsewhere = "elsewhere"
)

// InstancesView is the answer of GET /ui/api/services/{name}/instances: where the service runs
// now and how healthy it is, from the catalog (registered instances with their checks) and the
// served snapshot (the endpoints Git declares, with the health the servers' checks recorded).
type InstancesView struct {
	Service string `json:"service"`
	// Declared says whether the served snapshot declares the service; an undeclared service's
	// instances are listed but routed to nobody.
	Declared bool `json:"declared"`
	// Version is the served snapshot's, whose Git endpoints are listed.
	Version string `json:"version,omitempty"`
	// Index is the catalog's index of the service (X-Consul-Index of its health endpoint).
	Index     uint64         `json:"index"`
	Instances []InstanceView `json:"instances"`
	Endpoints []EndpointView `json:"endpoints"`
}

// InstanceView is a registered instance. Status is its aggregate health, the one EDS gets:
// critical when its node or any check is, else warning when any check is, else passing.
type InstanceView struct {
	Node       string            `json:"node"`
	ID         string            `json:"id"`
	Address    string            `json:"address"`
	Port       int               `json:"port"`
	Tags       []string          `json:"tags,omitempty"`
	Meta       map[string]string `json:"meta,omitempty"`
	Status     string            `json:"status"`
	NodeHealth string            `json:"nodeHealth"`
	Checks     []CheckView       `json:"checks"`
}

// CheckView is a check of an instance, without its output (never replicated to the servers).
type CheckView struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Type   string `json:"type"`
	Status string `json:"status"`
	Notes  string `json:"notes,omitempty"`
}

// EndpointView is an endpoint Git declares. Health is the status the servers' check of it
// recorded, or HealthUnchecked, HealthPending or HealthElsewhere.
type EndpointView struct {
	Address    string            `json:"address"`
	Port       int               `json:"port"`
	Datacenter string            `json:"datacenter"`
	Meta       map[string]string `json:"meta,omitempty"`
	Health     string            `json:"health"`
}

func (u *ui) handleInstances(w http.ResponseWriter, r *http.Request) {
	if u.opts.Catalog == nil {
		writeError(w, http.StatusNotFound, "this server has no catalog")
		return
	}
	snap, err := u.src.SnapshotOf("")
	if err != nil {
		writeError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	v := instancesView(snap, u.opts.Catalog.Catalog(), r.PathValue("name"))
	if !v.Declared && len(v.Instances) == 0 {
		writeError(w, http.StatusNotFound, "no service %q: Git does not declare it and the catalog has no instance of it", v.Service)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func instancesView(snap *mesh.Snapshot, st *catalog.State, name string) *InstancesView {
	v := &InstancesView{Service: name, Index: st.ServiceIndex(name), Instances: []InstanceView{}, Endpoints: []EndpointView{}}
	for _, in := range st.Instances(name) {
		node := st.Node(in.Node)
		iv := InstanceView{Node: in.Node, ID: in.ID, Address: in.Address, Port: in.Port, Tags: in.Tags, Meta: in.Meta,
			Status: in.Status(node), Checks: []CheckView{}}
		if node != nil {
			iv.NodeHealth = node.Health
			if iv.Address == "" {
				iv.Address = node.Address
			}
		}
		for _, c := range in.Checks {
			iv.Checks = append(iv.Checks, CheckView{ID: c.ID, Name: c.Name, Type: c.Type, Status: c.Status, Notes: c.Notes})
		}
		v.Instances = append(v.Instances, iv)
	}
	if snap == nil || snap.Services[name] == nil {
		return v
	}
	svc := snap.Services[name]
	v.Declared, v.Version = true, snap.Version
	for _, ep := range svc.Endpoints {
		e := EndpointView{Address: ep.Address, Port: ep.Port, Datacenter: ep.Datacenter, Meta: ep.Meta}
		switch {
		case svc.HealthCheck == nil:
			e.Health = HealthUnchecked
		case ep.Datacenter != snap.Mesh.Datacenter:
			e.Health = HealthElsewhere
		default:
			e.Health = st.StaticHealth(catalog.StaticKey(name, ep.Address, ep.Port))
			if e.Health == "" {
				e.Health = HealthPending
			}
		}
		v.Endpoints = append(v.Endpoints, e)
	}
	return v
}

// summary is what the overview shows of the catalog: catalog.Summarize, the code of
// GET /v1/catalog/summary, with undeclared meaning "not in the snapshot served".
func summary(snap *mesh.Snapshot, st *catalog.State) catalog.Summary {
	return catalog.Summarize(st, func(name string) bool { return snap != nil && snap.Services[name] != nil })
}
