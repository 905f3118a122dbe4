package httpjson

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestStyles(t *testing.T) {
	for _, c := range []struct {
		name      string
		write     func(w http.ResponseWriter)
		code      int
		body      string
		cacheCtrl string
	}{
		{"indented", func(w http.ResponseWriter) { Write(w, 201, map[string]any{"a": 1, "b": "<x>"}) }, 201,
			"{\n  \"a\": 1,\n  \"b\": \"\\u003cx\\u003e\"\n}\n", ""},
		{"error", func(w http.ResponseWriter) { Error(w, 404, "no service %q", "api") }, 404,
			"{\n  \"error\": \"no service \\\"api\\\"\"\n}\n", ""},
		{"no-store", func(w http.ResponseWriter) { Style{NoStore: true}.Write(w, 200, []int{1, 2}) }, 200,
			"[\n  1,\n  2\n]\n", "no-store"},
		{"compact error", func(w http.ResponseWriter) { Style{NoStore: true, Compact: true}.Error(w, 400, "bad %d", 7) }, 400,
			"{\"error\":\"bad 7\"}\n", "no-store"},
	} {
		rec := httptest.NewRecorder()
		c.write(rec)
		if rec.Code != c.code || rec.Body.String() != c.body {
			t.Errorf("%s: %d %q, want %d %q", c.name, rec.Code, rec.Body.String(), c.code, c.body)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s: Content-Type %q", c.name, ct)
		}
		if cc := rec.Header().Get("Cache-Control"); cc != c.cacheCtrl {
			t.Errorf("%s: Cache-Control %q, want %q", c.name, cc, c.cacheCtrl)
		}
	}
}
