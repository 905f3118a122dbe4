package catalog

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
)

// Operations of a Command.
const (
	OpRegister       = "register"        // Node, Instance: add or replace one instance (and its node)
	OpDeregister     = "deregister"      // NodeName, ID: remove one instance
	OpCheck          = "check"           // NodeName, ID (check), Status: a check's status changed
	OpNodeHealth     = "node-health"     // NodeName, Status: the node-level check changed
	OpDeregisterNode = "deregister-node" // NodeName: remove a node and its instances
	OpSyncNode       = "sync-node"       // Node, Keep: the node's agent is alive and holds only Keep
	OpStaticHealth   = "static-health"   // ID (StaticKey), Status: a Git endpoint's check ("" forgets it)
)

// Command is one change of the catalog, replicated as a Raft entry (alone, or in a batch).
type Command struct {
	Op       string    `json:"op"`
	Node     *Node     `json:"node,omitempty"`
	Instance *Instance `json:"instance,omitempty"`
	NodeName string    `json:"nodeName,omitempty"`
	ID       string    `json:"id,omitempty"`
	Status   string    `json:"status,omitempty"`
	Keep     []string  `json:"keep,omitempty"` // OpSyncNode: the IDs of the node's instances that stay
}

// Encode returns the command's bytes for a Raft entry.
func (c Command) Encode() ([]byte, error) { return json.Marshal(c) }

// DecodeCommand decodes a command encoded by Encode.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if err := json.Unmarshal(b, &c); err != nil {
		return Command{}, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	return c, nil
}

// State is one version of the catalog. It is never modified once made: Apply returns a new one
// that shares what did not change, so readers take a pointer and need no lock.
type State struct {
	index    uint64
	nodes    map[string]*Node
	services map[string]*serviceEntry        // by service name
	byNode   map[string]map[string]*Instance // node name → instance ID → instance
	static   map[string]string               // StaticKey → status of a Git endpoint's check
	own      *owned                          // nil but inside ApplyBatch
}

// owned records which maps of the state ApplyBatch is building were copied during the batch,
// and so are referenced by no other State: the batch's later commands change them in place
// instead of copying them again (a thousand services are not copied a thousand times). Outside
// a batch (own nil), every change copies what it changes.
type owned struct {
	services, byNode bool
	entries          map[string]bool // services whose entry, and its instances map, were made in the batch
	nodeMaps         map[string]bool // nodes whose byNode map was made in the batch
}

// mutServices makes ns.services ns's own.
func (ns *State) mutServices() {
	if ns.own != nil && ns.own.services {
		return
	}
	ns.services = maps.Clone(ns.services)
	if ns.own != nil {
		ns.own.services = true
	}
}

// mutEntry returns service's entry in ns, ns's own (its instances map too), at index.
func (ns *State) mutEntry(index uint64, service string) *serviceEntry {
	ns.mutServices()
	old := ns.services[service]
	if ns.own != nil && ns.own.entries[service] && old != nil {
		old.index = index
		return old
	}
	e := &serviceEntry{index: index, instances: map[string]*Instance{}}
	if old != nil {
		e.instances = maps.Clone(old.instances)
	}
	ns.services[service] = e
	if ns.own != nil {
		ns.own.entries[service] = true
	}
	return e
}

// mutNodeMap returns node's map of instances in ns, ns's own.
func (ns *State) mutNodeMap(node string) map[string]*Instance {
	if ns.own == nil || !ns.own.byNode {
		ns.byNode = maps.Clone(ns.byNode)
		if ns.own != nil {
			ns.own.byNode = true
		}
	}
	m := ns.byNode[node]
	if ns.own == nil || !ns.own.nodeMaps[node] || m == nil {
		m = maps.Clone(m)
		if m == nil {
			m = map[string]*Instance{}
		}
		ns.byNode[node] = m
		if ns.own != nil {
			ns.own.nodeMaps[node] = true
		}
	}
	return m
}

type serviceEntry struct {
	index     uint64               // the last change of this service's instances or their health
	instances map[string]*Instance // by node + "/" + ID
}

func instanceKey(node, id string) string { return node + "/" + id }

// Empty returns a catalog with nothing in it.
func Empty() *State {
	return &State{nodes: map[string]*Node{}, services: map[string]*serviceEntry{}, byNode: map[string]map[string]*Instance{}, static: map[string]string{}}
}

// Index is the Raft index of the last change of the catalog (0 when nothing was ever applied).
func (s *State) Index() uint64 {
	if s == nil {
		return 0
	}
	return s.index
}

// Apply returns the state after c, applied at Raft index index. A command that changes nothing
// returns s itself; a malformed one returns ErrBadCommand and changes nothing.
func (s *State) Apply(index uint64, c Command) (*State, error) {
	if s == nil {
		s = Empty()
	}
	switch c.Op {
	case OpRegister:
		return s.register(index, c)
	case OpDeregister:
		return s.deregister(index, c.NodeName, c.ID), nil
	case OpCheck:
		if !validStatus(c.Status) {
			return nil, fmt.Errorf("%w: status %q", ErrBadCommand, c.Status)
		}
		return s.setCheck(index, c.NodeName, c.ID, c.Status)
	case OpNodeHealth:
		if c.Status != StatusPassing && c.Status != StatusCritical {
			return nil, fmt.Errorf("%w: node status %q", ErrBadCommand, c.Status)
		}
		return s.setNodeHealth(index, c.NodeName, c.Status), nil
	case OpDeregisterNode:
		return s.deregisterNode(index, c.NodeName), nil
	case OpStaticHealth:
		if c.Status != "" && !validStatus(c.Status) || c.ID == "" {
			return nil, fmt.Errorf("%w: static-health %q status %q", ErrBadCommand, c.ID, c.Status)
		}
		return s.setStatic(index, c.ID, c.Status), nil
	case OpSyncNode:
		if c.Node == nil || c.Node.Name == "" {
			return nil, fmt.Errorf("%w: sync-node needs a node", ErrBadCommand)
		}
		return s.syncNode(index, c.Node, c.Keep), nil
	}
	return nil, fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op)
}

func validStatus(st string) bool {
	return st == StatusPassing || st == StatusWarning || st == StatusCritical
}

func (s *State) clone(index uint64) *State {
	return &State{index: index, nodes: s.nodes, services: s.services, byNode: s.byNode, static: s.static, own: s.own}
}

func (s *State) register(index uint64, c Command) (*State, error) {
	in, nd := c.Instance, c.Node
	if in == nil || nd == nil || nd.Name == "" || in.ID == "" || in.Service == "" || in.Node != nd.Name {
		return nil, fmt.Errorf("%w: register needs a node and an instance of it", ErrBadCommand)
	}
	for _, ch := range in.Checks {
		if !validStatus(ch.Status) {
			return nil, fmt.Errorf("%w: check %s status %q", ErrBadCommand, ch.ID, ch.Status)
		}
	}
	if id := s.checkIDTaken(nd.Name, in); id != "" {
		return nil, fmt.Errorf("%w: check ID %q is used by another instance of node %s", ErrBadCommand, id, nd.Name)
	}
	old := s.byNode[nd.Name][in.ID]
	oldNode := s.nodes[nd.Name]
	nodeSame := oldNode != nil && oldNode.Address == nd.Address && oldNode.SyncInterval == nd.SyncInterval && equalMaps(oldNode.Meta, nd.Meta)
	if old != nil && nodeSame && sameContent(old, in) {
		return s, nil
	}
	ns := s.clone(index)
	if !nodeSame {
		n := &Node{Name: nd.Name, Address: nd.Address, Meta: maps.Clone(nd.Meta), SyncInterval: nd.SyncInterval,
			Health: StatusPassing, CreateIndex: index, ModifyIndex: index}
		if oldNode != nil {
			n.Health, n.CreateIndex = oldNode.Health, oldNode.CreateIndex
		}
		ns.nodes = maps.Clone(s.nodes)
		ns.nodes[n.Name] = n
	}
	ni := in.clone()
	ni.Tags, ni.Meta = slices.Clone(in.Tags), maps.Clone(in.Meta)
	for i := range ni.Checks {
		ni.Checks[i].Output = "" // never replicated
	}
	slices.SortFunc(ni.Checks, func(a, b Check) int { return strings.Compare(a.ID, b.ID) })
	ni.CreateIndex, ni.ModifyIndex = index, index
	if old != nil {
		ni.CreateIndex = old.CreateIndex
		if old.Service != ni.Service {
			ns.removeFromService(index, old)
		}
	}
	ns.putInstance(index, ni)
	return ns, nil
}

// checkIDTaken returns a check ID of in that another instance of node uses, or "". Check IDs
// are unique on a node, so that a check command names one check.
func (s *State) checkIDTaken(node string, in *Instance) string {
	for id, other := range s.byNode[node] {
		if id == in.ID {
			continue
		}
		for _, c := range in.Checks {
			if other.check(c.ID) != nil {
				return c.ID
			}
		}
	}
	return ""
}

// CheckOwner returns the instance of node that has check checkID, or nil.
func (s *State) CheckOwner(node, checkID string) *Instance {
	for _, in := range s.byNode[node] {
		if in.check(checkID) != nil {
			return in // unique: register refuses a check ID taken on the node
		}
	}
	return nil
}

// putInstance adds or replaces in; ns is a fresh clone whose maps are still shared.
func (ns *State) putInstance(index uint64, in *Instance) {
	ns.mutEntry(index, in.Service).instances[instanceKey(in.Node, in.ID)] = in
	ns.mutNodeMap(in.Node)[in.ID] = in
}

func (ns *State) removeFromService(index uint64, in *Instance) {
	old := ns.services[in.Service]
	if old == nil {
		return
	}
	if len(old.instances) == 1 {
		ns.mutServices()
		delete(ns.services, in.Service)
		if ns.own != nil {
			delete(ns.own.entries, in.Service)
		}
		return
	}
	delete(ns.mutEntry(index, in.Service).instances, instanceKey(in.Node, in.ID))
}

func (s *State) deregister(index uint64, node, id string) *State {
	in := s.byNode[node][id]
	if in == nil {
		return s
	}
	ns := s.clone(index)
	ns.removeFromService(index, in)
	delete(ns.mutNodeMap(node), id)
	return ns
}

// Changes reports whether c would change s, and the error Apply would return, without
// building the new state where that is cheap to tell (a check's status: the common command).
func (s *State) Changes(c Command) (bool, error) {
	if c.Op == OpCheck && validStatus(c.Status) {
		in, err := s.checkOwner(c.NodeName, c.ID)
		if err != nil {
			return false, err
		}
		return in.check(c.ID).Status != c.Status, nil
	}
	ns, err := s.Apply(s.Index()+1, c)
	return err == nil && ns != s, err
}

func (s *State) checkOwner(node, checkID string) (*Instance, error) {
	in := s.CheckOwner(node, checkID)
	if in == nil {
		return nil, fmt.Errorf("%w: check %q on node %q", ErrNotFound, checkID, node)
	}
	return in, nil
}

func (s *State) setCheck(index uint64, node, checkID, status string) (*State, error) {
	in, err := s.checkOwner(node, checkID)
	if err != nil {
		return nil, err
	}
	if in.check(checkID).Status == status {
		return s, nil
	}
	ni := in.clone()
	ni.check(checkID).Status = status
	ni.ModifyIndex = index
	ns := s.clone(index)
	ns.putInstance(index, ni)
	return ns, nil
}

func (s *State) setNodeHealth(index uint64, name, status string) *State {
	n := s.nodes[name]
	if n == nil || n.Health == status {
		return s
	}
	ns := s.clone(index)
	nn := *n
	nn.Health, nn.ModifyIndex = status, index
	ns.nodes = maps.Clone(s.nodes)
	ns.nodes[name] = &nn
	// The node's instances change health: their services' indexes move.
	ns.services = maps.Clone(s.services)
	for _, in := range s.byNode[name] {
		if e := ns.services[in.Service]; e != nil && e.index != index {
			ns.services[in.Service] = &serviceEntry{index: index, instances: e.instances}
		}
	}
	return ns
}

// StaticKey names a Git endpoint of service in the state's static health.
func StaticKey(service, address string, port int) string {
	return service + "|" + net.JoinHostPort(address, strconv.Itoa(port))
}

// StaticHealth returns the status of the check of a Git endpoint ("" before any).
func (s *State) StaticHealth(key string) string { return s.static[key] }

// StaticKeys returns the keys with a static health, sorted.
func (s *State) StaticKeys() []string { return slices.Sorted(maps.Keys(s.static)) }

func (s *State) setStatic(index uint64, key, status string) *State {
	if s.static[key] == status {
		return s
	}
	ns := s.clone(index)
	ns.static = maps.Clone(s.static)
	if status == "" {
		delete(ns.static, key)
	} else {
		ns.static[key] = status
	}
	service, _, _ := strings.Cut(key, "|")
	ns.services = maps.Clone(s.services)
	e := &serviceEntry{index: index, instances: map[string]*Instance{}}
	if old := s.services[service]; old != nil {
		e.instances = old.instances
	}
	if len(e.instances) > 0 {
		ns.services[service] = e
	}
	return ns
}

// syncNode records the node (address, meta, sync interval) and removes its instances not in keep.
func (s *State) syncNode(index uint64, nd *Node, keep []string) *State {
	ns := s
	if old := s.nodes[nd.Name]; old == nil || old.Address != nd.Address || old.SyncInterval != nd.SyncInterval || !equalMaps(old.Meta, nd.Meta) {
		ns = s.clone(index)
		n := &Node{Name: nd.Name, Address: nd.Address, Meta: maps.Clone(nd.Meta), SyncInterval: nd.SyncInterval,
			Health: StatusPassing, CreateIndex: index, ModifyIndex: index}
		if old != nil {
			n.Health, n.CreateIndex = old.Health, old.CreateIndex
		}
		ns.nodes = maps.Clone(s.nodes)
		ns.nodes[n.Name] = n
	}
	for _, id := range slices.Sorted(maps.Keys(s.byNode[nd.Name])) {
		if !slices.Contains(keep, id) {
			ns = ns.deregister(index, nd.Name, id)
		}
	}
	return ns
}

func (s *State) deregisterNode(index uint64, name string) *State {
	if s.nodes[name] == nil && len(s.byNode[name]) == 0 {
		return s
	}
	ns := s
	for _, id := range slices.Sorted(maps.Keys(s.byNode[name])) {
		ns = ns.deregister(index, name, id)
	}
	ns = ns.clone(index)
	ns.nodes = maps.Clone(ns.nodes)
	delete(ns.nodes, name)
	ns.byNode = maps.Clone(ns.byNode)
	delete(ns.byNode, name)
	return ns
}

// ServiceIndex is the index of the last change of service's instances or their health (the
// catalog's index when it has none).
func (s *State) ServiceIndex(service string) uint64 {
	if e := s.services[service]; e != nil {
		return e.index
	}
	return s.Index()
}

// ServiceNames returns the names of the services with instances, sorted.
func (s *State) ServiceNames() []string { return slices.Sorted(maps.Keys(s.services)) }

// Instances returns service's instances sorted by node and ID. They must not be modified.
func (s *State) Instances(service string) []*Instance {
	e := s.services[service]
	if e == nil {
		return nil
	}
	out := make([]*Instance, 0, len(e.instances))
	for _, k := range slices.Sorted(maps.Keys(e.instances)) {
		out = append(out, e.instances[k])
	}
	return out
}

// NodeInstances returns the instances on node sorted by ID.
func (s *State) NodeInstances(node string) []*Instance {
	m := s.byNode[node]
	out := make([]*Instance, 0, len(m))
	for _, id := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[id])
	}
	return out
}

// Instance returns the instance id of node, or nil.
func (s *State) Instance(node, id string) *Instance { return s.byNode[node][id] }

// Node returns the node called name, or nil.
func (s *State) Node(name string) *Node { return s.nodes[name] }

// Nodes returns every node sorted by name.
func (s *State) Nodes() []*Node {
	out := make([]*Node, 0, len(s.nodes))
	for _, n := range slices.Sorted(maps.Keys(s.nodes)) {
		out = append(out, s.nodes[n])
	}
	return out
}

// persistedState is the JSON form of a State in Raft snapshots.
type persistedState struct {
	Index     uint64      `json:"index"`
	Nodes     []*Node     `json:"nodes"`
	Instances []*Instance `json:"instances"`
	// ServiceIndexes keeps each service's index, which may be newer than its instances'
	// (a deregistration, a node's health).
	ServiceIndexes map[string]uint64 `json:"serviceIndexes,omitempty"`
	Static         map[string]string `json:"static,omitempty"`
}

// MarshalJSON encodes the state deterministically, for Raft snapshots.
func (s *State) MarshalJSON() ([]byte, error) {
	p := persistedState{Index: s.Index(), Nodes: s.Nodes(), Instances: []*Instance{}, ServiceIndexes: map[string]uint64{}, Static: s.static}
	for _, name := range s.ServiceNames() {
		p.Instances = append(p.Instances, s.Instances(name)...)
		p.ServiceIndexes[name] = s.services[name].index
	}
	return json.Marshal(p)
}

// UnmarshalJSON restores a state encoded by MarshalJSON.
func (s *State) UnmarshalJSON(b []byte) error {
	var p persistedState
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	ns := Empty()
	ns.index = p.Index
	if p.Static != nil {
		ns.static = p.Static
	}
	for _, n := range p.Nodes {
		if n == nil || n.Name == "" {
			return fmt.Errorf("catalog: a node without a name")
		}
		ns.nodes[n.Name] = n
	}
	for _, in := range p.Instances {
		if in == nil || in.ID == "" || in.Service == "" || ns.nodes[in.Node] == nil {
			return fmt.Errorf("catalog: an instance without an ID, a service or a known node")
		}
		e := ns.services[in.Service]
		if e == nil {
			e = &serviceEntry{instances: map[string]*Instance{}}
			ns.services[in.Service] = e
		}
		e.instances[instanceKey(in.Node, in.ID)] = in
		e.index = max(e.index, in.ModifyIndex, ns.nodes[in.Node].ModifyIndex, p.ServiceIndexes[in.Service])
		if ns.byNode[in.Node] == nil {
			ns.byNode[in.Node] = map[string]*Instance{}
		}
		ns.byNode[in.Node][in.ID] = in
	}
	*s = *ns
	return nil
}
