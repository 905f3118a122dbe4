package mesh

import "strings"

// NormalizePath normalizes a request path the way Envoy does with normalize_path and
// merge_slashes set, which is how proxies render the HTTP connection managers of their inbound
// listeners: percent-encoded unreserved characters are decoded, other percent-encodings are
// upper-cased, runs of slashes are merged and "." and ".." segments are removed (RFC 3986,
// 6.2.2 and 5.2.4). Matching a normalized path is what keeps "/v1/../admin" from passing a
// "/v1/" rule and reaching "/admin". The query string must already be split off.
func NormalizePath(p string) string {
	if p == "" {
		return p
	}
	if strings.IndexByte(p, '%') >= 0 {
		p = normalizePercent(p)
	}
	if strings.Contains(p, "//") {
		var b strings.Builder
		prevSlash := false
		for i := 0; i < len(p); i++ {
			if p[i] == '/' && prevSlash {
				continue
			}
			prevSlash = p[i] == '/'
			b.WriteByte(p[i])
		}
		p = b.String()
	}
	if strings.Contains(p, "/.") || strings.HasPrefix(p, ".") {
		p = removeDotSegments(p)
	}
	return p
}

func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
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

func normalizePercent(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) {
			hi, ok1 := unhex(p[i+1])
			lo, ok2 := unhex(p[i+2])
			if ok1 && ok2 {
				c := hi<<4 | lo
				if isUnreserved(c) {
					b.WriteByte(c)
				} else {
					b.WriteByte('%')
					b.WriteString(strings.ToUpper(p[i+1 : i+3]))
				}
				i += 2
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

// removeDotSegments is RFC 3986 section 5.2.4.
func removeDotSegments(in string) string {
	var out []string // output segments, each starting with "/" (or the first one without)
	for len(in) > 0 {
		switch {
		case strings.HasPrefix(in, "../"):
			in = in[3:]
		case strings.HasPrefix(in, "./"):
			in = in[2:]
		case strings.HasPrefix(in, "/./"):
			in = in[2:]
		case in == "/.":
			in = "/"
		case strings.HasPrefix(in, "/../"):
			in = in[3:]
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		case in == "/..":
			in = "/"
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		case in == "." || in == "..":
			in = ""
		default:
			start := 0
			if in[0] == '/' {
				start = 1
			}
			end := strings.IndexByte(in[start:], '/')
			if end < 0 {
				end = len(in)
			} else {
				end += start
			}
			out = append(out, in[:end])
			in = in[end:]
		}
	}
	return strings.Join(out, "")
}
