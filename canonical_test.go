package mesh

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

func TestVersionDeterministic(t *testing.T) {
	s := richSnapshot()
	v, err := s.ComputeVersion()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(v) {
		t.Fatalf("version %q is not 16 lower-case hex digits", v)
	}
	// Maps are built afresh each time, so their iteration order differs between builds; the
	// canonical bytes and the version must not.
	c0, _ := s.Canonical()
	for i := 0; i < 20; i++ {
		s := richSnapshot()
		c, err := s.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(c, c0) {
			t.Fatalf("canonical JSON differs between two builds of the same snapshot:\n%s\n%s", c0, c)
		}
		if err := s.Seal(); err != nil {
			t.Fatal(err)
		}
		if s.Version != v {
			t.Fatalf("Seal recorded version %s, want %s", s.Version, v)
		}
	}
}

func TestVersionChangesWithContent(t *testing.T) {
	base, _ := richSnapshot().ComputeVersion()
	for name, edit := range map[string]func(*Snapshot){
		"port":        func(s *Snapshot) { s.Services["api"].Port = 8081 },
		"action":      func(s *Snapshot) { s.Intention("api", "db").Action = Deny },
		"default":     func(s *Snapshot) { s.Mesh.DefaultIntention = Allow },
		"weight":      func(s *Snapshot) { s.Chains["api"].Routes[1].Splits[0].Weight = 8999 },
		"timeout":     func(s *Snapshot) { s.Resolvers["api"].ConnectTimeout = Duration(4e9) },
		"meta":        func(s *Snapshot) { s.Services["api"].Meta["tier"] = "edge" },
		"permission":  func(s *Snapshot) { s.Intention("web", "api").Permissions[0].HTTP.PathPrefix = "/int/" },
		"header":      func(s *Snapshot) { s.Intention("web", "api").Permissions[1].HTTP.Header[1].Invert = false },
		"new service": func(s *Snapshot) { s.Services["cart"] = &Service{Name: "cart", Protocol: ProtocolTCP, Port: 1} },
	} {
		s := richSnapshot()
		edit(s)
		v, err := s.ComputeVersion()
		if err != nil {
			t.Fatal(err)
		}
		if v == base {
			t.Errorf("changing the %s did not change the version", name)
		}
	}
}

func TestVersionIgnoresPositionsAndCommit(t *testing.T) {
	s := richSnapshot()
	want, _ := s.ComputeVersion()
	c0, _ := s.Canonical()

	// Moving every definition to another file, as a reorganisation of the repository would.
	moved := richSnapshot()
	moved.Commit = "fedcba9876543210fedcba9876543210fedcba98"
	moved.Version = "0000000000000000"
	for k, p := range moved.Positions {
		moved.Positions[k] = Pos{File: "elsewhere/" + p.File, Line: p.Line + 100, Col: 1}
	}
	moved.Positions["services.extra"] = Pos{File: "x.cue", Line: 1, Col: 1}
	if got, _ := moved.ComputeVersion(); got != want {
		t.Errorf("version with other positions and commit = %s, want %s", got, want)
	}
	none := richSnapshot()
	none.Positions, none.Commit = nil, ""
	if got, _ := none.ComputeVersion(); got != want {
		t.Errorf("version without positions and commit = %s, want %s", got, want)
	}

	var top map[string]json.RawMessage
	if err := json.Unmarshal(c0, &top); err != nil {
		t.Fatalf("canonical JSON does not parse: %v", err)
	}
	for _, k := range []string{"version", "commit", "positions"} {
		if _, ok := top[k]; ok {
			t.Errorf("canonical JSON has %q", k)
		}
	}
	for _, k := range []string{"mesh", "services", "intentions", "routers", "splitters", "resolvers", "chains"} {
		if _, ok := top[k]; !ok {
			t.Errorf("canonical JSON lacks %q", k)
		}
	}
}

func TestCanonicalNoHTMLEscaping(t *testing.T) {
	// "→" and "<" appear in descriptions and regexes; they are written as they are, so that the
	// canonical bytes are the same as any other faithful encoder's output.
	s := newSnapshot(Deny, allow("web", "api"))
	s.Intentions[0].Description = "web → api <& >"
	c, err := s.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(c, []byte(`"web → api <& >"`)) {
		t.Errorf("canonical JSON escapes the description: %s", c)
	}
	if bytes.HasSuffix(c, []byte("\n")) {
		t.Errorf("canonical JSON ends with a newline")
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	s := richSnapshot()
	if err := s.Seal(); err != nil {
		t.Fatal(err)
	}
	b, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if d.Version != s.Version || d.Commit != s.Commit {
		t.Errorf("decoded version, commit = %s, %s; want %s, %s", d.Version, d.Commit, s.Version, s.Commit)
	}
	b2, err := d.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, b2) {
		t.Errorf("re-encoding a decoded snapshot changes it:\n%s\n%s", b, b2)
	}
	if len(d.Positions) != len(s.Positions) {
		t.Errorf("decoded %d positions, want %d", len(d.Positions), len(s.Positions))
	}
	for k, p := range s.Positions {
		if d.Positions[k] != p {
			t.Errorf("position of %s = %s, want %s", k, d.Positions[k], p)
		}
	}
	if got, want := d.Services["api"].HealthCheck.Timeout, Duration(1500e6); got != want {
		t.Errorf("decoded health check timeout = %s, want %s", got, want)
	}
	// The decoded snapshot decides as the original does.
	for _, r := range []Request{
		{Source: "web", Destination: "api", Method: "GET", Path: "/v1/x?page=3", Headers: map[string]string{"X-Tenant": "a"}},
		{Source: "web", Destination: "api", Method: "GET", Path: "/internal/x"},
		{Source: "metrics", Destination: "db"},
		{Source: "metrics", Destination: "web"},
		{Source: "api", Destination: "db"},
	} {
		a, b := Authorize(s, r), Authorize(d, r)
		if a.Verdict != b.Verdict || a.Reason != b.Reason || a.Pos != b.Pos || a.Permission != b.Permission {
			t.Errorf("%+v: decoded snapshot decides %+v, original %+v", r, b, a)
		}
	}
}

func TestDecodeRejectsTampering(t *testing.T) {
	s := richSnapshot()
	if err := s.Seal(); err != nil {
		t.Fatal(err)
	}
	b, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	tamper := []struct {
		name, old, new string
	}{
		{"port", `"port":5432`, `"port":5433`},
		{"action", `"action":"deny"`, `"action":"allow"`},
		{"version", `"version":"` + s.Version + `"`, `"version":"0123456789abcdef"`},
		{"no version", `"version":"` + s.Version + `"`, `"version":""`},
		{"default", `"defaultIntention":"deny"`, `"defaultIntention":"allow"`},
		{"weight", `"weight":9000`, `"weight":9001`},
		{"duration", `"connectTimeout":"5s"`, `"connectTimeout":"5.5s"`},
	}
	for _, tt := range tamper {
		if !bytes.Contains(b, []byte(tt.old)) {
			t.Fatalf("%s: encoded snapshot lacks %s:\n%s", tt.name, tt.old, b)
		}
		bad := bytes.Replace(b, []byte(tt.old), []byte(tt.new), 1)
		if _, err := Decode(bad); err == nil {
			t.Errorf("Decode accepted a snapshot with a tampered %s", tt.name)
		} else if !strings.Contains(err.Error(), "decode snapshot") {
			t.Errorf("%s: error %q does not say what failed", tt.name, err)
		}
	}
	for _, bad := range []string{"", "{", "null x", `{"version": 3}`, `{"positions": {"a": "nope"}}`} {
		if _, err := Decode([]byte(bad)); err == nil {
			t.Errorf("Decode(%q) succeeded", bad)
		}
	}
	// Positions and the commit are not content: changing them is not tampering.
	moved := bytes.Replace(b, []byte(`"teams/api.cue:4:1"`), []byte(`"services/api.cue:1:1"`), 1)
	moved = bytes.Replace(moved, []byte(s.Commit), []byte("fedcba9876543210fedcba9876543210fedcba98"), 1)
	d, err := Decode(moved)
	if err != nil {
		t.Fatalf("Decode after moving a definition: %v", err)
	}
	if got := d.Pos(PathService("api")).String(); got != "services/api.cue:1:1" {
		t.Errorf("moved position = %s", got)
	}
}

func TestPosString(t *testing.T) {
	tests := []struct {
		p    Pos
		want string
	}{
		{Pos{}, "-"},
		{Pos{File: "teams/api.cue", Line: 12, Col: 3}, "teams/api.cue:12:3"},
		{Pos{File: "C:/mesh/api.cue", Line: 1, Col: 1}, "C:/mesh/api.cue:1:1"},
		{Pos{File: "a:b", Line: 0, Col: 0}, "a:b:0:0"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.p, got, tt.want)
		}
		q, err := ParsePos(tt.want)
		if err != nil || q != tt.p {
			t.Errorf("ParsePos(%q) = %#v, %v; want %#v", tt.want, q, err, tt.p)
		}
		b, err := json.Marshal(tt.p)
		if err != nil || string(b) != `"`+tt.want+`"` {
			t.Errorf("json of %#v = %s, %v", tt.p, b, err)
		}
		var r Pos
		if err := json.Unmarshal(b, &r); err != nil || r != tt.p {
			t.Errorf("json round trip of %#v = %#v, %v", tt.p, r, err)
		}
	}
}

func TestParsePosErrors(t *testing.T) {
	for _, s := range []string{"api.cue", "api.cue:3", "api.cue:x:3", "api.cue:3:x", "api.cue:3:", "a: 3:4", "::"} {
		if p, err := ParsePos(s); err == nil {
			t.Errorf("ParsePos(%q) = %#v, want an error", s, p)
		}
	}
	if p, err := ParsePos(""); err != nil || p != (Pos{}) {
		t.Errorf(`ParsePos("") = %#v, %v`, p, err)
	}
}

// A position without a file is not a position: it formats as "-", which parses to the zero
// Pos, so ParsePos must reject it rather than return a Pos that does not survive a round trip.
func TestParsePosEmptyFile(t *testing.T) {
	for _, s := range []string{":1:2", ":0:0"} {
		p, err := ParsePos(s)
		if err == nil && p != (Pos{}) {
			t.Errorf("ParsePos(%q) = %#v, which formats as %q", s, p, p.String())
		}
	}
}
