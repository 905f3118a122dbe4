package catalog

// The JSON shapes of Consul's API, with its field names, so that Consul clients decode them.
// Undeclared is mesh's own: the served snapshot does not declare the service.

// AgentService is Consul's AgentService.
type AgentService struct {
	Kind              string `json:",omitempty"`
	ID                string
	Service           string
	Tags              []string
	Meta              map[string]string
	Port              int
	Address           string
	Weights           Weights
	EnableTagOverride bool
	CreateIndex       uint64 `json:",omitempty"`
	ModifyIndex       uint64 `json:",omitempty"`
	Datacenter        string `json:",omitempty"`
	Undeclared        bool   `json:",omitempty"`
}

// HealthCheck is Consul's HealthCheck (and AgentCheck).
type HealthCheck struct {
	Node        string
	CheckID     string
	Name        string
	Status      string
	Notes       string
	Output      string
	ServiceID   string
	ServiceName string
	ServiceTags []string
	Type        string
	Definition  Definition
	CreateIndex uint64
	ModifyIndex uint64
}

// Definition is Consul's HealthCheckDefinition, durations as strings.
type Definition struct {
	HTTP                           string              `json:",omitempty"`
	Header                         map[string][]string `json:",omitempty"`
	Method                         string              `json:",omitempty"`
	TLSSkipVerify                  bool                `json:",omitempty"`
	TCP                            string              `json:",omitempty"`
	GRPC                           string              `json:",omitempty"`
	GRPCUseTLS                     bool                `json:",omitempty"`
	Interval                       string
	Timeout                        string
	DeregisterCriticalServiceAfter string
}

// CatalogService is Consul's CatalogService.
type CatalogService struct {
	ID                       string
	Node                     string
	Address                  string
	Datacenter               string
	TaggedAddresses          map[string]string
	NodeMeta                 map[string]string
	ServiceKind              string `json:",omitempty"`
	ServiceID                string
	ServiceName              string
	ServiceAddress           string
	ServiceTags              []string
	ServiceMeta              map[string]string
	ServicePort              int
	ServiceWeights           Weights
	ServiceEnableTagOverride bool
	CreateIndex              uint64
	ModifyIndex              uint64
	Undeclared               bool `json:",omitempty"`
}

// ServiceEntry is Consul's ServiceEntry (GET /v1/health/service/{name}).
type ServiceEntry struct {
	Node    NodeJSON
	Service AgentService
	Checks  []HealthCheck
}

// NodeJSON is Consul's Node, with the node-level check's status (mesh's own).
type NodeJSON struct {
	ID              string
	Node            string
	Address         string
	Datacenter      string
	TaggedAddresses map[string]string
	Meta            map[string]string
	CreateIndex     uint64
	ModifyIndex     uint64
	Health          string `json:",omitempty"`
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func orEmptyMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func (a *API) declared(service string) bool {
	return a.Server == nil || a.Server.cfg.Declared(service)
}

func (a *API) datacenter() string {
	if a.Server == nil {
		return ""
	}
	return a.Server.cfg.Datacenter()
}

func (a *API) agentService(in *Instance) AgentService {
	return AgentService{Kind: in.Kind, ID: in.ID, Service: in.Service, Tags: orEmpty(in.Tags), Meta: orEmptyMap(in.Meta),
		Port: in.Port, Address: in.Address, Weights: in.Weights, CreateIndex: in.CreateIndex, ModifyIndex: in.ModifyIndex,
		Datacenter: a.datacenter(), Undeclared: !a.declared(in.Service)}
}

func healthCheck(in *Instance, c Check) HealthCheck {
	d := Definition{HTTP: c.HTTP, Header: c.Header, Method: c.Method, TLSSkipVerify: c.TLSSkipVerify, TCP: c.TCP, GRPC: c.GRPC,
		GRPCUseTLS: c.GRPCUseTLS, Interval: c.Interval.String(), Timeout: c.Timeout.String(),
		DeregisterCriticalServiceAfter: c.DeregisterCriticalServiceAfter.String()}
	return HealthCheck{Node: in.Node, CheckID: c.ID, Name: c.Name, Status: c.Status, Notes: c.Notes, Output: c.Output,
		ServiceID: in.ID, ServiceName: in.Service, ServiceTags: orEmpty(in.Tags), Type: c.Type, Definition: d,
		CreateIndex: in.CreateIndex, ModifyIndex: in.ModifyIndex}
}

func (a *API) nodeJSON(n *Node) NodeJSON {
	return NodeJSON{Node: n.Name, Address: n.Address, Datacenter: a.datacenter(), TaggedAddresses: map[string]string{},
		Meta: orEmptyMap(n.Meta), CreateIndex: n.CreateIndex, ModifyIndex: n.ModifyIndex, Health: n.Health}
}

func (a *API) catalogService(st *State, in *Instance) CatalogService {
	cs := CatalogService{Node: in.Node, Datacenter: a.datacenter(), TaggedAddresses: map[string]string{}, NodeMeta: map[string]string{},
		ServiceKind: in.Kind, ServiceID: in.ID, ServiceName: in.Service, ServiceAddress: in.Address, ServiceTags: orEmpty(in.Tags),
		ServiceMeta: orEmptyMap(in.Meta), ServicePort: in.Port, ServiceWeights: in.Weights,
		CreateIndex: in.CreateIndex, ModifyIndex: in.ModifyIndex, Undeclared: !a.declared(in.Service)}
	if n := st.Node(in.Node); n != nil {
		cs.Address, cs.NodeMeta = n.Address, orEmptyMap(n.Meta)
	}
	return cs
}

func (a *API) serviceEntry(st *State, in *Instance) ServiceEntry {
	e := ServiceEntry{Service: a.agentService(in), Checks: []HealthCheck{}}
	if n := st.Node(in.Node); n != nil {
		e.Node = a.nodeJSON(n)
		out := "the node's agent syncs"
		if n.Health == StatusCritical {
			out = "the node's agent stopped syncing"
		}
		e.Checks = append(e.Checks, HealthCheck{Node: n.Name, CheckID: NodeCheckID, Name: "Mesh node sync", Status: n.Health,
			Output: out, ServiceTags: []string{}, Definition: Definition{Interval: "0s", Timeout: "0s", DeregisterCriticalServiceAfter: "0s"}, CreateIndex: n.CreateIndex, ModifyIndex: n.ModifyIndex})
	}
	for _, c := range in.Checks {
		e.Checks = append(e.Checks, healthCheck(in, c))
	}
	return e
}
