package commitsig

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"golang.org/x/crypto/ssh"
)

// allowedSigner is one line of an allowed_signers file:
//
//	principals [options] keytype base64-key [comment]
//
// with the options namespaces="list", valid-after="time" and valid-before="time".
type allowedSigner struct {
	file       string
	line       int
	principals string
	namespaces string // a pattern list; "" admits every namespace
	after      time.Time
	before     time.Time
	key        ssh.PublicKey
}

func (k *Keys) addAllowedSigners(file string, b []byte) error {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		a, err := parseAllowedSigner(line)
		if err != nil {
			return fmt.Errorf("%w: %s:%d: %v", ErrKeys, file, n, err)
		}
		a.file, a.line = file, n
		k.signers = append(k.signers, a)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrKeys, file, err)
	}
	return nil
}

func parseAllowedSigner(line string) (*allowedSigner, error) {
	a := &allowedSigner{}
	var rest string
	if strings.HasPrefix(line, `"`) {
		end := strings.Index(line[1:], `"`)
		if end < 0 {
			return nil, fmt.Errorf("unterminated quoted principals")
		}
		a.principals, rest = line[1:end+1], line[end+2:]
	} else {
		i := strings.IndexAny(line, " \t")
		if i < 0 {
			return nil, fmt.Errorf("want principals, then a public key")
		}
		a.principals, rest = line[:i], line[i:]
	}
	if a.principals == "" {
		return nil, fmt.Errorf("empty principals")
	}
	key, _, options, _, err := ssh.ParseAuthorizedKey([]byte(strings.TrimSpace(rest)))
	if err != nil {
		return nil, fmt.Errorf("public key: %v", err)
	}
	a.key = key
	for _, opt := range options {
		name, val, _ := strings.Cut(opt, "=")
		val = strings.Trim(val, `"`)
		switch strings.ToLower(name) {
		case "cert-authority":
			return nil, fmt.Errorf("cert-authority is not supported: list the signing keys themselves")
		case "namespaces":
			a.namespaces = val
		case "valid-after":
			if a.after, err = parseTime(val); err != nil {
				return nil, fmt.Errorf("valid-after: %v", err)
			}
		case "valid-before":
			if a.before, err = parseTime(val); err != nil {
				return nil, fmt.Errorf("valid-before: %v", err)
			}
		default:
			return nil, fmt.Errorf("unsupported option %q", opt)
		}
	}
	return a, nil
}

// refuses says why this line's key may not sign in namespace ns at time when, or "".
func (a *allowedSigner) refuses(ns string, when time.Time) string {
	if a.namespaces != "" && matchList(ns, a.namespaces) != 1 {
		return fmt.Sprintf("namespaces=%q does not admit %q", a.namespaces, ns)
	}
	if !a.after.IsZero() && when.Before(a.after) {
		return fmt.Sprintf("valid-after %s, and the commit's committer time is %s", a.after.Format(time.RFC3339), when.Format(time.RFC3339))
	}
	if !a.before.IsZero() && when.After(a.before) {
		return fmt.Sprintf("valid-before %s, and the commit's committer time is %s", a.before.Format(time.RFC3339), when.Format(time.RFC3339))
	}
	return ""
}

// matchList matches s against an OpenSSH pattern list (comma-separated, "*" and "?" wildcards,
// "!" negates): 1 when a pattern matches, -1 when a negated one does, else 0.
func matchList(s, list string) int {
	got := 0
	for _, p := range strings.Split(list, ",") {
		neg := strings.HasPrefix(p, "!")
		if match(s, strings.TrimPrefix(p, "!")) {
			if neg {
				return -1
			}
			got = 1
		}
	}
	return got
}

// match is OpenSSH's match_pattern: "*" any run, "?" any one byte, anything else itself.
func match(s, p string) bool {
	for p != "" {
		switch p[0] {
		case '*':
			p = strings.TrimLeft(p, "*")
			if p == "" {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if match(s[i:], p) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
		default:
			if s == "" || s[0] != p[0] {
				return false
			}
		}
		s, p = s[1:], p[1:]
	}
	return s == ""
}

func readArmoredKeyRing(block string) (openpgp.EntityList, error) {
	el, err := openpgp.ReadArmoredKeyRing(strings.NewReader(block))
	if err == nil && len(el) == 0 {
		err = fmt.Errorf("empty keyring")
	}
	return el, err
}

// signatureKeyID returns the issuer key id of an armored OpenPGP signature.
func signatureKeyID(armored string) (string, error) {
	blk, err := armor.Decode(strings.NewReader(armored))
	if err != nil {
		return "", err
	}
	p, err := packet.Read(blk.Body)
	if err != nil {
		return "", err
	}
	if sig, ok := p.(*packet.Signature); ok && sig.IssuerKeyId != nil {
		return fmt.Sprintf("%016X", *sig.IssuerKeyId), nil
	}
	return "", nil
}
