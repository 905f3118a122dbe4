package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Registration is the body of PUT /v1/agent/service/register, Consul's AgentServiceRegistration.
// Fields Consul has and mesh does not use (Connect, Proxy, TaggedAddresses...) are accepted and
// ignored, so that Consul clients work unchanged; any other field is an error.
type Registration struct {
	Kind    string
	ID      string
	Name    string
	Tags    []string
	Port    int
	Address string
	Meta    map[string]string
	Weights *Weights
	Check   *CheckRegistration
	Checks  []*CheckRegistration

	EnableTagOverride bool
	TaggedAddresses   json.RawMessage
	Proxy             json.RawMessage
	Connect           json.RawMessage
	Namespace         string
	Partition         string
	Locality          json.RawMessage
	SocketPath        string
	Ports             json.RawMessage
	AI                json.RawMessage
}

// CheckRegistration is one check of a registration, Consul's AgentServiceCheck. Durations are
// Go duration strings ("10s").
type CheckRegistration struct {
	CheckID                        string
	Name                           string
	Interval                       string
	Timeout                        string
	TTL                            string
	HTTP                           string
	Header                         map[string][]string
	Method                         string
	Body                           string
	TCP                            string
	GRPC                           string
	GRPCUseTLS                     bool
	TLSSkipVerify                  bool
	TLSServerName                  string
	Status                         string
	Notes                          string
	SuccessBeforePassing           int
	FailuresBeforeWarning          int
	FailuresBeforeCritical         int
	DeregisterCriticalServiceAfter string

	// Check types mesh does not run: named so that the error can say so.
	ScriptArgs        []string `json:"ScriptArgs"`
	Args              []string
	DockerContainerID string
	Shell             string
	TCPUseTLS         bool
	UDP               string
	H2PING            string
	H2PingUseTLS      bool
	AliasNode         string
	AliasService      string
	OSService         string
	ServiceID         string
}

// MaxRegistrationBody bounds a registration's JSON.
const MaxRegistrationBody = 256 << 10

// Limits on what an instance carries, Consul's where it has them.
const (
	maxTags      = 64
	maxMeta      = 64
	maxMetaKey   = 128
	maxMetaValue = 512
	maxChecks    = 32
	maxNameLen   = 128
)

var (
	labelRe   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	idRe      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)
	metaKeyRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	methodRe  = regexp.MustCompile(`^[A-Z]{1,16}$`)
)

// ValidServiceName reports whether name can name a service: a DNS label, as in the mesh.
func ValidServiceName(name string) bool { return labelRe.MatchString(name) }

// DecodeRegistration reads and checks one registration. Every error wraps ErrBadRequest and
// names the field.
func DecodeRegistration(r io.Reader) (*Instance, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxRegistrationBody+1))
	if err != nil {
		return nil, fmt.Errorf("%w: body: %v", ErrBadRequest, err)
	}
	if len(b) > MaxRegistrationBody {
		return nil, fmt.Errorf("%w: body: larger than %d bytes", ErrBadRequest, MaxRegistrationBody)
	}
	var reg Registration
	if err := decodeStrict(b, &reg); err != nil {
		return nil, err
	}
	return reg.Instance()
}

// decodeStrict decodes one JSON value, refusing unknown fields and trailing data.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return fmt.Errorf("%w: %s: want a %s, got a JSON %s", ErrBadRequest, te.Field, te.Type, te.Value)
		}
		return fmt.Errorf("%w: body: %v", ErrBadRequest, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: body: trailing data after the JSON value", ErrBadRequest)
	}
	return nil
}

func badField(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrBadRequest, field, fmt.Sprintf(format, args...))
}

// Instance checks the registration and returns the instance it describes, without its node.
// Checks start critical unless their Status says otherwise (Consul's rule).
func (reg *Registration) Instance() (*Instance, error) {
	if !ValidServiceName(reg.Name) {
		return nil, badField("Name", "%q is not a service name (a DNS label: lower-case letters, digits and '-')", reg.Name)
	}
	in := &Instance{ID: reg.ID, Service: reg.Name, Port: reg.Port, Address: reg.Address, Kind: reg.Kind,
		Tags: reg.Tags, Meta: reg.Meta, Weights: Weights{Passing: 1, Warning: 1}}
	if in.ID == "" {
		in.ID = reg.Name
	}
	if !idRe.MatchString(in.ID) {
		return nil, badField("ID", "%q: want letters, digits, '.', '_', ':' or '-', at most 128", in.ID)
	}
	if reg.Port < 0 || reg.Port > 65535 {
		return nil, badField("Port", "%d is not between 0 and 65535", reg.Port)
	}
	if reg.Address != "" && net.ParseIP(reg.Address) == nil {
		return nil, badField("Address", "%q is not an IP address", reg.Address)
	}
	switch reg.Kind {
	case "", "connect-proxy", "mesh-gateway", "terminating-gateway", "ingress-gateway", "api-gateway":
	default:
		return nil, badField("Kind", "unknown kind %q", reg.Kind)
	}
	if err := checkTagsMeta(reg.Tags, reg.Meta); err != nil {
		return nil, err
	}
	if w := reg.Weights; w != nil {
		if w.Passing < 1 || w.Passing > 65535 {
			return nil, badField("Weights.Passing", "%d is not between 1 and 65535", w.Passing)
		}
		if w.Warning < 0 || w.Warning > 65535 {
			return nil, badField("Weights.Warning", "%d is not between 0 and 65535", w.Warning)
		}
		in.Weights = *w
	}
	var defs []*CheckRegistration
	if reg.Check != nil {
		defs = append(defs, reg.Check)
	}
	for _, c := range reg.Checks {
		if c != nil {
			defs = append(defs, c)
		}
	}
	if len(defs) > maxChecks {
		return nil, badField("Checks", "%d checks, at most %d", len(defs), maxChecks)
	}
	for i, cr := range defs {
		field := "Check"
		if reg.Check == nil || i > 0 {
			field = fmt.Sprintf("Checks[%d]", i-btoi(reg.Check != nil))
		}
		c, err := cr.check(field)
		if err != nil {
			return nil, err
		}
		if c.ID == "" {
			c.ID = "service:" + in.ID
			if len(defs) > 1 {
				c.ID = fmt.Sprintf("service:%s:%d", in.ID, i+1)
			}
		}
		if c.Name == "" {
			c.Name = "Service '" + in.Service + "' check"
		}
		if in.check(c.ID) != nil {
			return nil, badField(field+".CheckID", "%q is used twice", c.ID)
		}
		in.Checks = append(in.Checks, *c)
	}
	slices.SortFunc(in.Checks, func(a, b Check) int { return strings.Compare(a.ID, b.ID) })
	return in, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func checkTagsMeta(tags []string, meta map[string]string) error {
	if len(tags) > maxTags {
		return badField("Tags", "%d tags, at most %d", len(tags), maxTags)
	}
	for i, t := range tags {
		if t == "" || len(t) > maxNameLen {
			return badField(fmt.Sprintf("Tags[%d]", i), "empty or longer than %d", maxNameLen)
		}
	}
	if len(meta) > maxMeta {
		return badField("Meta", "%d keys, at most %d", len(meta), maxMeta)
	}
	for k, v := range meta {
		if len(k) > maxMetaKey || !metaKeyRe.MatchString(k) {
			return badField("Meta", "key %q: want letters, digits, '_' or '-', at most %d", k, maxMetaKey)
		}
		if len(v) > maxMetaValue {
			return badField("Meta."+k, "longer than %d", maxMetaValue)
		}
	}
	return nil
}

// check turns one check registration into a Check; field names it in errors.
func (cr *CheckRegistration) check(field string) (*Check, error) {
	switch {
	case len(cr.ScriptArgs) > 0 || len(cr.Args) > 0 || cr.Shell != "" || cr.DockerContainerID != "":
		return nil, badField(field, "script and Docker checks are not supported: use HTTP, TCP, GRPC or TTL")
	case cr.UDP != "" || cr.H2PING != "" || cr.AliasNode != "" || cr.AliasService != "" || cr.OSService != "":
		return nil, badField(field, "UDP, H2PING, alias and OS service checks are not supported: use HTTP, TCP, GRPC or TTL")
	case cr.TCPUseTLS:
		return nil, badField(field+".TCPUseTLS", "not supported")
	}
	c := &Check{ID: cr.CheckID, Name: cr.Name, Notes: cr.Notes, Status: StatusCritical}
	if c.ID != "" && !idRe.MatchString(c.ID) {
		return nil, badField(field+".CheckID", "%q: want letters, digits, '.', '_', ':' or '-', at most 128", c.ID)
	}
	if len(c.Name) > maxNameLen || len(c.Notes) > maxMetaValue {
		return nil, badField(field+".Name", "longer than %d", maxNameLen)
	}
	n := 0
	if cr.TTL != "" {
		n++
		c.Type = CheckTTL
	}
	if cr.HTTP != "" {
		n++
		c.Type, c.HTTP, c.Method, c.Header = CheckHTTP, cr.HTTP, cr.Method, cr.Header
		if u, err := url.Parse(cr.HTTP); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, badField(field+".HTTP", "%q is not an http(s) URL", cr.HTTP)
		}
		if cr.Method != "" && !methodRe.MatchString(cr.Method) {
			return nil, badField(field+".Method", "%q is not an HTTP method", cr.Method)
		}
	}
	if cr.TCP != "" {
		n++
		c.Type, c.TCP = CheckTCP, cr.TCP
		if _, _, err := net.SplitHostPort(cr.TCP); err != nil {
			return nil, badField(field+".TCP", "%q is not host:port", cr.TCP)
		}
	}
	if cr.GRPC != "" {
		n++
		c.Type, c.GRPC, c.GRPCUseTLS = CheckGRPC, cr.GRPC, cr.GRPCUseTLS
		addr, _, _ := strings.Cut(cr.GRPC, "/")
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, badField(field+".GRPC", "%q is not host:port[/service]", cr.GRPC)
		}
	}
	switch {
	case n == 0:
		return nil, badField(field, "unknown check type: give one of HTTP, TCP, GRPC or TTL")
	case n > 1:
		return nil, badField(field, "give only one of HTTP, TCP, GRPC and TTL")
	}
	c.TLSSkipVerify = cr.TLSSkipVerify
	var err error
	if c.TTL, err = duration(field+".TTL", cr.TTL); err != nil {
		return nil, err
	}
	if c.Interval, err = duration(field+".Interval", cr.Interval); err != nil {
		return nil, err
	}
	if c.Timeout, err = duration(field+".Timeout", cr.Timeout); err != nil {
		return nil, err
	}
	if c.DeregisterCriticalServiceAfter, err = duration(field+".DeregisterCriticalServiceAfter", cr.DeregisterCriticalServiceAfter); err != nil {
		return nil, err
	}
	if c.Type != CheckTTL && c.Interval == 0 {
		return nil, badField(field+".Interval", "required for %s checks", strings.ToUpper(c.Type))
	}
	if c.Type != CheckTTL && c.Interval < time.Second/10 {
		return nil, badField(field+".Interval", "%s is shorter than 100ms", c.Interval)
	}
	if c.Type == CheckTTL && c.TTL <= 0 {
		return nil, badField(field+".TTL", "must be positive")
	}
	if c.Timeout == 0 && c.Type != CheckTTL {
		c.Timeout = min(10*time.Second, c.Interval)
	}
	if cr.SuccessBeforePassing < 0 || cr.SuccessBeforePassing > 100 {
		return nil, badField(field+".SuccessBeforePassing", "%d is not between 0 and 100", cr.SuccessBeforePassing)
	}
	if cr.FailuresBeforeCritical < 0 || cr.FailuresBeforeCritical > 100 {
		return nil, badField(field+".FailuresBeforeCritical", "%d is not between 0 and 100", cr.FailuresBeforeCritical)
	}
	if cr.FailuresBeforeWarning < 0 || cr.FailuresBeforeWarning > 100 {
		return nil, badField(field+".FailuresBeforeWarning", "%d is not between 0 and 100", cr.FailuresBeforeWarning)
	}
	c.SuccessBeforePassing, c.FailuresBeforeCritical, c.FailuresBeforeWarning = cr.SuccessBeforePassing, cr.FailuresBeforeCritical, cr.FailuresBeforeWarning
	if cr.Status != "" {
		if !validStatus(cr.Status) {
			return nil, badField(field+".Status", "%q: want passing, warning or critical", cr.Status)
		}
		c.Status = cr.Status
	}
	return c, nil
}

func duration(field, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, badField(field, "%q is not a duration (like \"10s\")", s)
	}
	if d > 365*24*time.Hour {
		return 0, badField(field, "%q is longer than a year", s)
	}
	return d, nil
}

// SplitDefinitions returns the registrations of a service definition file (see
// ServiceDefinitions), each checked, as the JSON to send to PUT /v1/agent/service/register.
func SplitDefinitions(b []byte) ([]json.RawMessage, error) {
	var f struct {
		Service  json.RawMessage
		Services []json.RawMessage
	}
	if err := decodeStrict(b, &f); err != nil {
		return nil, err
	}
	raws := f.Services
	if f.Service != nil {
		raws = append([]json.RawMessage{f.Service}, raws...)
	}
	if len(raws) == 0 {
		return nil, fmt.Errorf("%w: no \"service\" or \"services\"", ErrBadRequest)
	}
	for i, raw := range raws {
		if _, err := DecodeRegistration(bytes.NewReader(raw)); err != nil {
			return nil, fmt.Errorf("service %d: %w", i+1, err)
		}
	}
	return raws, nil
}

// ServiceDefinitions reads a service definition file as Consul's agent does in its config
// directory: {"service": {...}} or {"services": [{...}, ...]}.
func ServiceDefinitions(b []byte) ([]*Instance, error) {
	raws, err := SplitDefinitions(b)
	if err != nil {
		return nil, err
	}
	out := make([]*Instance, 0, len(raws))
	for _, raw := range raws {
		in, _ := DecodeRegistration(bytes.NewReader(raw)) // checked by SplitDefinitions
		out = append(out, in)
	}
	return out, nil
}
