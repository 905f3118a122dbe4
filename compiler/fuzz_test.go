package compiler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"
)

// FuzzCompile feeds arbitrary text to the loader as one mesh file next to a valid one. The
// compiler must never panic, must return either a snapshot or configuration errors with
// positions, and must compile the same input to the same version twice. The fast path, the full
// path and a compilation through a Cache that has seen every earlier input must give the same
// snapshot, positions included, or the same errors.
func FuzzCompile(f *testing.F) {
	base := File{Name: "base.cue", Data: []byte("package mesh\n\nmesh: {name: \"shop\", trustDomain: \"shop.mesh\"}\nservices: api: {protocol: \"http\", port: 8080}\n")}
	seeds, _ := filepath.Glob("testdata/errors/*.txtar")
	for _, p := range seeds {
		ar, err := txtar.ParseFile(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range ar.Files {
			if file.Name != "want" {
				f.Add(file.Data)
			}
		}
	}
	examples, _ := filepath.Glob("../repo-example/teams/*.cue")
	for _, p := range examples {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("package mesh\nintentions: api: api: permissions: [{action: \"allow\", http: pathRegex: \"(\"}]\n"))
	cache := NewCache()
	f.Fuzz(func(t *testing.T, data []byte) {
		files := []File{base, {Name: "fuzz.cue", Data: data}}
		fast, fastErr := compileString(files, nil)
		fastPath = false
		full, fullErr := compileString(files, nil)
		fastPath = true
		if fast != full || fastErr != fullErr {
			t.Fatalf("fast and full paths differ:\nfast: %.800s %s\nfull: %.800s %s", fast, fastErr, full, fullErr)
		}
		if cached, cachedErr := compileString(files, cache); cached != fast || cachedErr != fastErr {
			t.Fatalf("with a Cache:\n%.800s %s\nwithout:\n%.800s %s", cached, cachedErr, fast, fastErr)
		}
		s1, err1 := Compile(context.Background(), files)
		if err1 != nil {
			var list Errors
			if !errors.As(err1, &list) {
				t.Fatalf("not a configuration error: %v", err1)
			}
			return
		}
		s2, err2 := Compile(context.Background(), files)
		if err2 != nil || s2.Version != s1.Version {
			t.Fatalf("recompile: %v, version %s then %v", err2, s1.Version, s2)
		}
	})
}

// FuzzReadElements: reading a review cache's elements file never panics, and accepts exactly
// the magic line followed by whole 32-byte keys.
func FuzzReadElements(f *testing.F) {
	f.Add([]byte(elementsMagic))
	f.Add(append([]byte(elementsMagic), make([]byte, 64)...))
	f.Add([]byte("mesh compiler elements 1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := NewCache()
		err := c.ReadElements(bytes.NewReader(data))
		rest, ok := bytes.CutPrefix(data, []byte(elementsMagic))
		if want := ok && len(rest)%32 == 0; (err == nil) != want {
			t.Fatalf("ReadElements(%q) = %v", data, err)
		}
		if err == nil && len(c.elems) > len(rest)/32 {
			t.Fatalf("%d keys from %d bytes", len(c.elems), len(rest))
		}
	})
}

// FuzzDecodeValue builds plain values from the fuzzer's bytes (maps keyed by the raw forms'
// field names and a few others, lists, strings, numbers of every shape plain data allows,
// bools) and decodes each into every raw form both with decodeValue and through encoding/json:
// they must agree on success and on the value.
func FuzzDecodeValue(f *testing.F) {
	f.Add([]byte{0, 3, 1, 2, 4, 5})
	f.Add([]byte{0, 2, 7, 0, 1, 3, 9, 2, 2})
	f.Add([]byte("services and intentions"))
	f.Fuzz(func(t *testing.T, data []byte) {
		v := plainFromBytes(&data, 0)
		if typ, ok := sameAsJSON(v); !ok {
			t.Fatalf("%#v as %s: decodeValue and encoding/json differ", v, typ)
		}
	})
}

var (
	fuzzKeys = []string{"port", "protocol", "owners", "meta", "upstreams", "localPort", "datacenter",
		"endpoints", "address", "healthCheck", "http", "tcp", "grpc", "interval", "action",
		"permissions", "methods", "header", "queryParam", "name", "exact", "present", "invert",
		"routes", "match", "destination", "numRetries", "retryOn", "splits", "weight", "service",
		"subset", "subsets", "filter", "failover", "datacenters", "redirect", "loadBalancer",
		"policy", "tls", "ca", "leafTTL", "web", "*", "other"}
	fuzzNumbers = []string{"0", "1", "-1", "80", "1.5", "2.0", "1e3", "-0", "99999999999999999999", "0.125"}
)

// plainFromBytes reads one plain value from the front of *b.
func plainFromBytes(b *[]byte, depth int) any {
	next := func() int {
		if len(*b) == 0 {
			return 0
		}
		c := int((*b)[0])
		*b = (*b)[1:]
		return c
	}
	kind := next() % 6
	if depth > 4 && kind < 2 {
		kind += 2
	}
	switch kind {
	case 0:
		m := map[string]any{}
		for n := next() % 5; n > 0; n-- {
			m[fuzzKeys[next()%len(fuzzKeys)]] = plainFromBytes(b, depth+1)
		}
		return m
	case 1:
		var l []any
		for n := next() % 4; n > 0; n-- {
			l = append(l, plainFromBytes(b, depth+1))
		}
		if l == nil {
			l = []any{}
		}
		return l
	case 2:
		return fuzzKeys[next()%len(fuzzKeys)]
	case 3:
		return json.Number(fuzzNumbers[next()%len(fuzzNumbers)])
	case 4:
		return next()%2 == 0
	default:
		return "/v1/" + string(rune('a'+next()%26))
	}
}
