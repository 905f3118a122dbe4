package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzDecodeRegistration: any body either decodes to an instance that passes the server's own
// checks and survives a round trip through a command, or is refused with ErrBadRequest; it
// never panics.
func FuzzDecodeRegistration(f *testing.F) {
	for _, s := range []string{
		`{"Name":"api","Port":80}`,
		`{"ID":"api-1","Name":"api","Address":"10.0.0.1","Port":8080,"Tags":["v1"],"Meta":{"version":"v1"},"Weights":{"Passing":3,"Warning":1}}`,
		`{"Name":"api","Check":{"TTL":"10s","Status":"passing"}}`,
		`{"Name":"api","Checks":[{"HTTP":"http://127.0.0.1:1/h","Interval":"1s","Header":{"a":["b"]}},{"GRPC":"127.0.0.1:1/svc","Interval":"2s"}]}`,
		`{"Name":"api","Check":{"TCP":"127.0.0.1:1","Interval":"1s","DeregisterCriticalServiceAfter":"1m","SuccessBeforePassing":2}}`,
		`{"Name":"api","Port":-1}`, `{"Name":"api","Check":{}}`, `[]`, `null`, `{"Name":"api"}{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := DecodeRegistration(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		in.Node = "n1"
		if err := validateInstance(in); err != nil {
			t.Fatalf("a decoded registration fails the server's checks: %v", err)
		}
		c := Command{Op: OpRegister, Node: &Node{Name: "n1"}, Instance: in}
		enc, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		dc, err := DecodeCommand(enc)
		if err != nil {
			t.Fatal(err)
		}
		s1, err := Empty().Apply(1, c)
		if err != nil {
			t.Fatalf("apply: %v", err)
		}
		s2, err := Empty().Apply(1, dc)
		if err != nil {
			t.Fatalf("apply decoded: %v", err)
		}
		j1, _ := json.Marshal(s1)
		j2, _ := json.Marshal(s2)
		if !bytes.Equal(j1, j2) {
			t.Fatalf("a command and its encoding apply differently:\n%s\n%s", j1, j2)
		}
	})
}
