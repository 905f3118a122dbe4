package compiler

import (
	"encoding/json"
	"fmt"

	"cuelang.org/go/cue"

	mesh "github.com/meshgit/mesh"
)

var sprintf = fmt.Sprintf

// The raw forms of the repository format, as CUE decodes them. They mirror schema/mesh.cue.

type rawMesh struct {
	Name             string   `json:"name"`
	TrustDomain      string   `json:"trustDomain"`
	Datacenter       string   `json:"datacenter"`
	Datacenters      []string `json:"datacenters"`
	DefaultIntention string   `json:"defaultIntention"`
	TLS              *struct {
		MinVersion   string   `json:"minVersion"`
		MaxVersion   string   `json:"maxVersion"`
		CipherSuites []string `json:"cipherSuites"`
	} `json:"tls"`
	CA *struct {
		LeafTTL string `json:"leafTTL"`
	} `json:"ca"`
	Policies         []string `json:"policies"`
	Mode             string   `json:"mode"`
	TransparentProxy *struct {
		MeshDestinationsOnly bool `json:"meshDestinationsOnly"`
	} `json:"transparentProxy"`
	MeshGateway *rawMeshGateway `json:"meshGateway"`
}

type rawMeshGateway struct {
	Mode string `json:"mode"`
}

type rawService struct {
	Protocol  string            `json:"protocol"`
	Port      int               `json:"port"`
	Owners    []string          `json:"owners"`
	Meta      map[string]string `json:"meta"`
	Mode      string            `json:"mode"`
	Upstreams rawUpstreams      `json:"upstreams"`
	Endpoints []struct {
		Address    string            `json:"address"`
		Port       int               `json:"port"`
		Datacenter string            `json:"datacenter"`
		Meta       map[string]string `json:"meta"`
	} `json:"endpoints"`
	HealthCheck *struct {
		HTTP     string `json:"http"`
		TCP      bool   `json:"tcp"`
		GRPC     string `json:"grpc"`
		Interval string `json:"interval"`
		Timeout  string `json:"timeout"`
	} `json:"healthCheck"`
}

// rawUpstreams is a service's upstreams: "*" (All), or upstreams by name.
type rawUpstreams struct {
	All    bool
	ByName map[string]rawUpstream
}

type rawUpstream struct {
	LocalPort   int             `json:"localPort"`
	Datacenter  string          `json:"datacenter"`
	MeshGateway *rawMeshGateway `json:"meshGateway"`
}

// UnmarshalJSON decodes either form; CUE's Decode and decodeValue (plaindata.go) use it.
func (u *rawUpstreams) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if s != mesh.Wildcard {
			return fmt.Errorf("upstreams: %q is neither \"*\" nor a struct", s)
		}
		*u = rawUpstreams{All: true}
		return nil
	}
	u.All = false
	return json.Unmarshal(b, &u.ByName)
}

type rawIntention struct {
	Action      string          `json:"action"`
	Permissions []rawPermission `json:"permissions"`
	Description string          `json:"description"`
}

type rawPermission struct {
	Action string        `json:"action"`
	HTTP   *rawHTTPMatch `json:"http"`
}

type rawHTTPMatch struct {
	Path       string     `json:"path"`
	PathPrefix string     `json:"pathPrefix"`
	PathRegex  string     `json:"pathRegex"`
	Methods    []string   `json:"methods"`
	Header     []rawMatch `json:"header"`
	QueryParam []rawMatch `json:"queryParam"`
}

type rawMatch struct {
	Name    string  `json:"name"`
	Exact   *string `json:"exact"`
	Prefix  *string `json:"prefix"`
	Suffix  *string `json:"suffix"`
	Regex   *string `json:"regex"`
	Present *bool   `json:"present"`
	Invert  bool    `json:"invert"`
}

type rawRouter struct {
	Routes []struct {
		Match *struct {
			HTTP *rawHTTPMatch `json:"http"`
		} `json:"match"`
		Destination *struct {
			Service        string   `json:"service"`
			Subset         string   `json:"subset"`
			PrefixRewrite  string   `json:"prefixRewrite"`
			RequestTimeout string   `json:"requestTimeout"`
			NumRetries     int      `json:"numRetries"`
			RetryOn        []string `json:"retryOn"`
		} `json:"destination"`
	} `json:"routes"`
}

type rawSplitter struct {
	Splits []struct {
		Weight  float64 `json:"weight"`
		Service string  `json:"service"`
		Subset  string  `json:"subset"`
	} `json:"splits"`
}

type rawResolver struct {
	DefaultSubset string `json:"defaultSubset"`
	Subsets       map[string]struct {
		Filter map[string]string `json:"filter"`
	} `json:"subsets"`
	ConnectTimeout string `json:"connectTimeout"`
	Failover       map[string]struct {
		Service     string   `json:"service"`
		Datacenters []string `json:"datacenters"`
	} `json:"failover"`
	Redirect *struct {
		Service    string `json:"service"`
		Subset     string `json:"subset"`
		Datacenter string `json:"datacenter"`
	} `json:"redirect"`
	LoadBalancer *struct {
		Policy string `json:"policy"`
	} `json:"loadBalancer"`
}

// entry is one element of a top-level map, with where it is written. ok is false when it could
// not be decoded because the schema rejected it (the error is reported already).
type entry[T any] struct {
	name string
	pos  mesh.Pos
	n    node
	raw  T
	ok   bool
}

// decodeMap decodes every field of the struct node m, taking the raw form from pre (the fast
// path's, decoded from the syntax) when it has the field. With quiet (the schema already
// reported errors) an element that fails to decode is returned with ok false and no new error.
func decodeMap[T any](m node, pre map[string]T, errs *errorList, quiet bool) []entry[T] {
	fields, err := m.fields()
	if err != nil {
		addCUEErrors(errs, err)
		return nil
	}
	out := make([]entry[T], 0, len(fields))
	for _, f := range fields {
		e := entry[T]{name: f.name, pos: f.node.pos(), n: f.node}
		if raw, ok := pre[e.name]; ok {
			e.raw, e.ok = raw, true
			out = append(out, e)
			continue
		}
		if f.node.fast {
			// The fast path decodes every element in load; one it could not is a bug.
			errs.add(e.pos, "internal: %s was not decoded", e.name)
			out = append(out, e)
			continue
		}
		if err := f.node.v.Decode(&e.raw); err != nil {
			if !quiet {
				addCUEErrors(errs, err)
			}
			out = append(out, e)
			continue
		}
		e.ok = true
		out = append(out, e)
	}
	return out
}

// valuePos is where a value is written in the user's files.
func valuePos(v cue.Value) mesh.Pos {
	if p := posOf(v.Pos()); p.IsValid() && !isSchemaPos(p) {
		return p
	}
	// A value unified from several places: take the first one that is the user's.
	_, parts := v.Expr()
	for _, c := range parts {
		if p := posOf(c.Pos()); p.IsValid() && !isSchemaPos(p) {
			return p
		}
	}
	return mesh.Pos{}
}

func isSchemaPos(p mesh.Pos) bool {
	return len(p.File) > len(schemaPrefix) && p.File[:len(schemaPrefix)] == schemaPrefix
}
