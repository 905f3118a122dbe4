package mesh

import "strings"

// NormalizePath normalizes a request path the way Envoy's HTTP connection manager does with
// normalize_path and merge_slashes set, which is how proxies render the HTTP connection managers
// of their listeners, and in Envoy's order: first the path is canonicalized (PathUtil::
// canonicalPath, Chromium's URL path canonicalizer, see CanonicalPath), then runs of slashes are
// merged (PathUtil::mergeSlashes). So "/public//../admin" is "/public/admin", as in Envoy:
// the ".." removes the empty segment between the two slashes. Matching a normalized path is
// what keeps "/v1/../admin" from passing a "/v1/" rule and reaching "/admin". The query string
// must already be split off. A path Envoy rejects (see CanonicalPath) is normalized all the same.
func NormalizePath(p string) string {
	if p == "" {
		return p
	}
	c, _ := CanonicalPath(p)
	return MergeSlashes(c)
}

// CanonicalPath canonicalizes a path (without its query) as Envoy's normalize_path does with
// its copy of Chromium's URL path canonicalizer:
//   - the result starts with "/" ("" becomes "/", "a/b" becomes "/a/b");
//   - a backslash is a slash;
//   - "." and ".." segments are removed (RFC 3986 5.2.4), with "%2e" and "%2E" counting as a
//     dot; ".." never climbs above the root;
//   - percent-encoded unreserved characters (ALPHA, DIGIT, "-", "_", "~") are decoded; other
//     valid percent-encodings are kept exactly, hex case included; an invalid "%" is kept, and
//     where decoding would turn it into a valid encoding ("%%30%30") it becomes "%25";
//   - spaces, controls, non-ASCII bytes and `"#<>?^{|}` are percent-encoded (upper-case hex).
//
// ok is false for a path that Envoy rejects: one holding a NUL byte, raw or as "%00".
// Slashes are not merged (see NormalizePath).
func CanonicalPath(p string) (canon string, ok bool) {
	out := make([]byte, 0, len(p)+1)
	if p == "" || !isURLSlash(p[0]) {
		out = append(out, '/')
	}
	ok = true
	lastInvalidPercent := -1 << 30
	for i := 0; i < len(p); i++ {
		c := p[i]
		flags := pathChar(c)
		if flags&charSpecial == 0 {
			out = append(out, c)
			continue
		}
		if n := dotLen(p, i); n > 0 {
			if len(out) > 0 && out[len(out)-1] == '/' {
				kind, consumed := classifyAfterDot(p, i+n)
				switch kind {
				case notADirectory:
					out = append(out, '.')
					i += n - 1
				case directoryCur:
					i += n + consumed - 1
				case directoryUp:
					out = backUpToPreviousSlash(out)
					i += n + consumed - 1
				}
			} else {
				out = append(out, '.')
				i += n - 1
			}
			continue
		}
		switch {
		case c == '\\':
			out = append(out, '/')
		case c == '%':
			v, valid := decodeEscaped(p, i)
			if !valid {
				lastInvalidPercent = len(out)
				out = append(out, '%')
				continue
			}
			i += 2
			if pathChar(v)&charUnescape != 0 {
				out = append(out, v)
				if lastInvalidPercent >= len(out)-3 {
					out = fixNestedEscape(p, i+1, lastInvalidPercent, out)
				}
				continue
			}
			out = append(out, '%', p[i-1], p[i])
			if pathChar(v)&charInvalid != 0 {
				ok = false
			}
		case flags&charInvalid != 0:
			out = appendEscaped(out, c)
			ok = false
		case flags&charEscape != 0:
			out = appendEscaped(out, c)
		}
	}
	return string(out), ok
}

// MergeSlashes merges every run of slashes into one, as Envoy's merge_slashes does. Only the
// path takes part: a query ("?...") is left as it is.
func MergeSlashes(p string) string {
	path, query, hasQuery := strings.Cut(p, "?")
	if !strings.Contains(path, "//") {
		return p
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(path); i++ {
		if path[i] == '/' && i > 0 && path[i-1] == '/' {
			continue
		}
		b.WriteByte(path[i])
	}
	if hasQuery {
		b.WriteByte('?')
		b.WriteString(query)
	}
	return b.String()
}

// Character classes of the path canonicalizer, per byte.
const (
	charSpecial  = 1 << iota // needs more than copying
	charEscape               // percent-encoded in the output
	charUnescape             // decoded when found percent-encoded
	charInvalid              // fails canonicalization (NUL)
)

// pathChar classifies c as Chromium's kPathCharLookup does.
func pathChar(c byte) uint8 {
	switch {
	case c == 0:
		return charInvalid | charSpecial
	case c < 0x20 || c >= 0x7f:
		return charEscape | charSpecial
	case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '_' || c == '~':
		return charUnescape
	case c == '.':
		return charSpecial
	}
	switch c {
	case ' ', '"', '#', '%', '<', '>', '?', '\\', '^', '`', '{', '|', '}':
		return charEscape | charSpecial
	}
	return 0
}

func isURLSlash(c byte) bool { return c == '/' || c == '\\' }

// dotLen returns the length of the dot at p[i]: 1 for ".", 3 for "%2e" or "%2E", else 0.
func dotLen(p string, i int) int {
	if p[i] == '.' {
		return 1
	}
	if p[i] == '%' && i+3 <= len(p) && p[i+1] == '2' && (p[i+2] == 'e' || p[i+2] == 'E') {
		return 3
	}
	return 0
}

const (
	notADirectory = iota
	directoryCur
	directoryUp
)

// classifyAfterDot says what the dot that ends just before p[after] is, given that it follows a
// slash, and how many more bytes that takes.
func classifyAfterDot(p string, after int) (kind, consumed int) {
	if after == len(p) {
		return directoryCur, 0
	}
	if isURLSlash(p[after]) {
		return directoryCur, 1
	}
	if n := dotLen(p, after); n > 0 {
		next := after + n
		if next == len(p) {
			return directoryUp, n
		}
		if isURLSlash(p[next]) {
			return directoryUp, n + 1
		}
	}
	return notADirectory, 0
}

// backUpToPreviousSlash removes the last segment of out, which ends with "/", keeping the
// slash before it; it never goes above the first slash.
func backUpToPreviousSlash(out []byte) []byte {
	i := len(out) - 1
	if i <= 0 {
		return out
	}
	i--
	for i > 0 && out[i] != '/' {
		i--
	}
	return out[:i+1]
}

// decodeEscaped decodes the percent-encoding at p[i] ("%XX").
func decodeEscaped(p string, i int) (byte, bool) {
	if i+3 > len(p) {
		return 0, false
	}
	hi, ok1 := unhex(p[i+1])
	lo, ok2 := unhex(p[i+2])
	if !ok1 || !ok2 {
		return 0, false
	}
	return hi<<4 | lo, true
}

// fixNestedEscape is called right after a character was decoded within two output bytes of an
// invalid "%" at out[pct]. If the output would now read as a valid encoding ("%%30%30" gives
// "%00"), the "%" becomes "%25" so that the result cannot be decoded into something else.
// next is the index in p of the next unread byte.
func fixNestedEscape(p string, next, pct int, out []byte) []byte {
	n := len(out)
	last := out[n-1]
	appendNext := pct == n-2
	if appendNext {
		if next == len(p) || p[next] >= 0x80 {
			return out
		}
		out = append(out, p[next])
	}
	if _, valid := decodeEscaped(string(out), pct); valid {
		if !appendNext {
			out = append(out, out[pct+1])
		}
		out[pct+1], out[pct+2] = '2', '5'
		return append(out, last)
	}
	if appendNext {
		out = out[:n]
	}
	return out
}

func appendEscaped(out []byte, c byte) []byte {
	const hex = "0123456789ABCDEF"
	return append(out, '%', hex[c>>4], hex[c&0xf])
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
