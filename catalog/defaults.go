package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	mesh "github.com/meshgit/mesh"
	"github.com/meshgit/mesh/internal/apiclient"
)

// DefaultCheckID is the ID of the check an instance gets from its service's healthCheck in Git
// when it brings none.
func DefaultCheckID(instanceID string) string { return "service:" + instanceID }

// GitCheck turns a service's healthCheck from Git into the check of one instance at addr:port:
// HTTP to http://addr:port<path>, TCP to addr:port, gRPC to addr:port/<service>. It starts
// critical, as every check does.
func GitCheck(hc *mesh.HealthCheck, instanceID, service, addr string, port int) Check {
	hostport := net.JoinHostPort(addr, strconv.Itoa(port))
	c := Check{ID: DefaultCheckID(instanceID), Name: "Service '" + service + "' check (healthCheck in Git)", Status: StatusCritical,
		CheckDefinition: CheckDefinition{Interval: time.Duration(hc.Interval), Timeout: time.Duration(hc.Timeout)}}
	switch {
	case hc.HTTP != "":
		c.Type, c.HTTP = CheckHTTP, "http://"+hostport+"/"+strings.TrimPrefix(hc.HTTP, "/")
	case hc.GRPC != "":
		c.Type, c.GRPC = CheckGRPC, hostport+"/"+hc.GRPC
	default:
		c.Type, c.TCP = CheckTCP, hostport
	}
	if c.Interval <= 0 {
		c.Interval = 10 * time.Second
	}
	if c.Timeout <= 0 || c.Timeout > c.Interval {
		c.Timeout = min(c.Interval, 10*time.Second)
	}
	return c
}

// HTTPDefaults returns the DefaultCheck function of an agent that asks the server at addr
// (GET /v1/catalog/default-check/{service}).
func HTTPDefaults(addr string, hc *http.Client) func(ctx context.Context, service string) (*mesh.HealthCheck, error) {
	return func(ctx context.Context, service string) (*mesh.HealthCheck, error) {
		api := apiclient.Client{Addr: addr, HTTP: hc}
		resp, err := api.Do(ctx, http.MethodGet, "/v1/catalog/default-check/"+url.PathEscape(service), nil, 64<<10)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		if err := ErrorOf(resp.Status, resp.ErrorMessage()); err != nil {
			return nil, err
		}
		var out struct{ HealthCheck *mesh.HealthCheck }
		if err := json.Unmarshal(resp.Body, &out); err != nil {
			return nil, fmt.Errorf("%w: default check: %v", ErrUnavailable, err)
		}
		return out.HealthCheck, nil
	}
}

// LoadConfigDir reads the service definitions of every *.json file in dir (Consul's agent
// configuration format, {"service": {...}} or {"services": [...]}), in name order. Errors name
// the file.
func LoadConfigDir(dir string) ([]*Instance, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	var out []*Instance
	seen := map[string]string{}
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		ins, err := ServiceDefinitions(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		for _, in := range ins {
			if prev, ok := seen[in.ID]; ok {
				return nil, fmt.Errorf("%s: %w: service ID %q is defined in %s too", name, ErrBadRequest, in.ID, prev)
			}
			seen[in.ID] = name
		}
		out = append(out, ins...)
	}
	return out, nil
}
