package xds

import (
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// What go-control-plane's snapshot cache keeps of one resource type of a group (its resources
// indexed by name, and for delta xDS the version of each) is the same for every group whose
// content of that type is the same. A memo builds it once per content hash and version and
// every such group's cache snapshot shares it: in a dense mesh, where every proxy holds the
// same 3,000 clusters, routes and load assignments, the name index and the version map are
// built once, not once per proxy. go-control-plane only reads them (Snapshot.GetResources
// copies), as it reads a group's snapshot shared by the nodes of the group.

// cacheTypeKey names one type's content: its type (its index in resourceTypes: hashing the
// type URL for every look-up would cost more than the rest of the key), content hash and
// version on the wire.
type cacheTypeKey struct {
	t             int
	hash, version string
}

// cacheType is what the cache snapshots of every group with that content share.
type cacheType struct {
	res      cachev3.Resources
	versions map[string]string // name → version (a cachev3.Snapshot's VersionMap[t])
}

// cacheTypes holds a memo's cacheType of each content, and the version map of each.
type cacheTypes struct {
	mu       sync.Mutex
	m        map[cacheTypeKey]*cacheType
	versions map[cacheTypeKey]map[string]string // version ""
}

// init makes c's maps with room for n contents.
func (c *cacheTypes) init(n int) {
	c.m = make(map[cacheTypeKey]*cacheType, n)
	c.versions = make(map[cacheTypeKey]map[string]string, n)
}

// presetRBAC makes set's version map and cache resources (made with the set, at set.version)
// what groups of m whose extension configurations are set's share: versionMap and
// sharedResources then find them, and a group's full render builds neither again. They are
// what those would build: set.typeHash is the content hash hashByType computes of set.xs,
// set.versions its version map, and set.res indexes the wires m learnt of set.xs
// (TestRenderRBACMatchesRender holds renderRBAC's use of them to render's).
func (m *memo) presetRBAC(set *rbacSet) {
	t := resourcev3.ExtensionConfigType
	m.cache.mu.Lock()
	defer m.cache.mu.Unlock()
	if m.cache.versions == nil {
		m.cache.versions = map[cacheTypeKey]map[string]string{}
	}
	if m.cache.m == nil {
		m.cache.m = map[cacheTypeKey]*cacheType{}
	}
	if k := (cacheTypeKey{t: typeIndex(t), hash: set.typeHash}); m.cache.versions[k] == nil {
		m.cache.versions[k] = set.versions
	}
	if k := (cacheTypeKey{t: typeIndex(t), hash: set.typeHash, version: set.version}); m.cache.m[k] == nil {
		m.cache.m[k] = &cacheType{res: set.res, versions: set.versions}
	}
}

// versionMap returns the version map (name → content hash) of the resources of type t whose
// content hash is hash, made with build the first time in m. A nil memo shares nothing.
func (m *memo) versionMap(t resourcev3.Type, hash string, build func() map[string]string) map[string]string {
	if m == nil {
		return build()
	}
	k := cacheTypeKey{t: typeIndex(t), hash: hash}
	m.cache.mu.Lock()
	v, ok := m.cache.versions[k]
	m.cache.mu.Unlock()
	if ok {
		return v
	}
	v = build()
	m.cache.mu.Lock()
	defer m.cache.mu.Unlock()
	if w, ok := m.cache.versions[k]; ok {
		return w // built meanwhile by another group: share that one
	}
	if m.cache.versions == nil {
		m.cache.versions = map[cacheTypeKey]map[string]string{}
	}
	m.cache.versions[k] = v
	return v
}

// versionMapOf is versionMap with the map built, the first time, of items and their content
// hashes (in items' order): name → hash. Only a group that builds it allocates.
func (m *memo) versionMapOf(t resourcev3.Type, hash string, items []types.Resource, hashes []string) map[string]string {
	if m != nil {
		m.cache.mu.Lock()
		v, ok := m.cache.versions[cacheTypeKey{t: typeIndex(t), hash: hash}]
		m.cache.mu.Unlock()
		if ok {
			return v
		}
	}
	names := make(map[string]string, len(items))
	for i, res := range items {
		names[cachev3.GetResourceName(res)] = hashes[i]
	}
	if m == nil {
		return names
	}
	return m.versionMap(t, hash, func() map[string]string { return names })
}

// sharedResources returns the cache's resources of type t with content hash and version (as
// cacheResources makes them), and their version map, the ones another group of m's snapshot
// has when it has the same content: items and versions (what hashTypes found for items) are
// used the first time only; facts, if not nil, are the items' (memo.factsOf). A nil memo
// shares nothing.
func (m *memo) sharedResources(t resourcev3.Type, hash, version string, items []types.Resource, versions map[string]string, facts []*fact) (cachev3.Resources, map[string]string) {
	return m.sharedCache(t, hash, version, func() (cachev3.Resources, map[string]string) {
		return m.cacheResources(version, items, facts), versions
	})
}

// sharedCache is sharedResources with what the cache holds made by build, the first time.
func (m *memo) sharedCache(t resourcev3.Type, hash, version string, build func() (cachev3.Resources, map[string]string)) (cachev3.Resources, map[string]string) {
	if m == nil {
		return build()
	}
	k := cacheTypeKey{t: typeIndex(t), hash: hash, version: version}
	m.cache.mu.Lock()
	defer m.cache.mu.Unlock()
	if c := m.cache.m[k]; c != nil {
		return c.res, c.versions
	}
	if m.cache.m == nil {
		m.cache.m = map[cacheTypeKey]*cacheType{}
	}
	c := &cacheType{}
	c.res, c.versions = build()
	m.cache.m[k] = c
	return c.res, c.versions
}
