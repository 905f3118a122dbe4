// Package httpjson writes the JSON replies of mesh's HTTP APIs, in one place: a reply is
// Content-Type application/json, the status code, then the value encoded by encoding/json
// (indented by two spaces unless the Style is Compact), ending in a newline. An error reply
// is {"error": "<message>"}.
package httpjson

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Style is how a server writes its replies; the zero Style indents and leaves caching alone.
type Style struct {
	// NoStore sets Cache-Control: no-store (replies carrying credentials or live state).
	NoStore bool
	// Compact leaves out the indentation.
	Compact bool
}

// Write writes v as the reply with status code. An encoding error is not reported: the
// status line is out by then, and the values written are the server's own.
func (s Style) Write(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	if s.NoStore {
		w.Header().Set("Cache-Control", "no-store")
	}
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	if !s.Compact {
		enc.SetIndent("", "  ")
	}
	enc.Encode(v)
}

// Error writes {"error": message} with status code, the message formatted as by fmt.Sprintf.
func (s Style) Error(w http.ResponseWriter, code int, format string, args ...any) {
	s.Write(w, code, map[string]string{"error": fmt.Sprintf(format, args...)})
}

// Write is Style{}.Write: indented, no Cache-Control.
func Write(w http.ResponseWriter, code int, v any) { Style{}.Write(w, code, v) }

// Error is Style{}.Error.
func Error(w http.ResponseWriter, code int, format string, args ...any) {
	Style{}.Error(w, code, format, args...)
}
