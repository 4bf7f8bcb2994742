package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/orderd/orderd/store"
)

// Auth is who may call orderd and what they may call. With an Auth, every
// call to OrderService and ProductService needs an identity: the verified
// client certificate's (when the listener's TLS requires one, see
// NewServerTLS) or, for a connection without one, a bearer token's. Health
// and reflection need none. Without an Auth (Options.Auth nil) every caller
// may call everything, which is how orderd runs in plaintext on loopback.
type Auth struct {
	// Tokens authenticates callers that present no client certificate, by
	// the "authorization: Bearer <token>" request header (nil: client
	// certificates only).
	Tokens *BearerTokens
	// Policy says which identity may call which method (nil: every
	// authenticated caller may call every method).
	Policy *Policy
}

// authenticate is the auth.AuthFunc of the interceptor chain: it finds the
// caller's identity, then asks the policy. Either failure is a domain error
// that the error table answers UNAUTHENTICATED or PERMISSION_DENIED; its
// cause goes to the log line only, so callers learn nothing about which
// tokens or identities exist.
func (a *Auth) authenticate(ctx context.Context) (context.Context, error) {
	id, err := a.identify(ctx)
	if err != nil {
		note(ctx, "auth", err.Error())
		return nil, errUnauthenticated
	}
	note(ctx, "identity", id)
	method, _ := grpc.Method(ctx)
	if a.Policy != nil && !a.Policy.Allows(id, method) {
		return nil, &store.DetailError{Err: errPermissionDenied, Metadata: map[string]string{"identity": id, "method": method}}
	}
	return ctx, nil
}

// identify returns the identity of a verified client certificate, else of a
// known bearer token.
func (a *Auth) identify(ctx context.Context) (string, error) {
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
			if id := CertIdentity(ti.State.VerifiedChains[0][0]); id != "" {
				return id, nil
			}
			return "", errors.New("client certificate names no identity")
		}
	}
	if a.Tokens == nil {
		return "", errors.New("no verified client certificate")
	}
	token, err := auth.AuthFromMD(ctx, "bearer")
	if err != nil {
		return "", errors.New("no client certificate and no bearer token")
	}
	id, ok := a.Tokens.identity(token)
	if !ok {
		return "", errors.New("unknown bearer token")
	}
	return id, nil
}

// CertIdentity is the identity a client certificate stands for: its first
// URI SAN (such as a SPIFFE ID, spiffe://orderd.local/shop), else its first
// DNS SAN, else its subject common name; "" if it has none.
func CertIdentity(c *x509.Certificate) string {
	switch {
	case len(c.URIs) > 0:
		return c.URIs[0].String()
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	}
	return c.Subject.CommonName
}

func (a *Auth) unary() grpc.UnaryServerInterceptor {
	if a == nil {
		return nil
	}
	return auth.UnaryServerInterceptor(a.authenticate)
}

// stream authenticates streaming calls the same way; the unary error
// interceptor does not see them, so the error is mapped here.
func (a *Auth) stream() grpc.StreamServerInterceptor {
	if a == nil {
		return nil
	}
	return auth.StreamServerInterceptor(func(ctx context.Context) (context.Context, error) {
		ctx, err := a.authenticate(ctx)
		if err != nil {
			return nil, statusFor(err).Err()
		}
		return ctx, nil
	})
}

// BearerTokens are the bearer tokens orderd accepts, known only by their
// SHA-256, each standing for an identity.
type BearerTokens struct {
	entries []bearerEntry
}

type bearerEntry struct {
	hash     [sha256.Size]byte
	identity string
}

// LoadBearerTokens reads a bearer token file (see ParseBearerTokens).
func LoadBearerTokens(path string) (*BearerTokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseBearerTokens(f)
}

// ParseBearerTokens reads bearer tokens, one a line: the SHA-256 of the
// token in hex, white space, the identity it stands for (no white space).
// Blank lines and lines starting with # are ignored. The file holds no
// token itself: `printf %s "$TOKEN" | sha256sum` gives a line's first
// field.
func ParseBearerTokens(r io.Reader) (*BearerTokens, error) {
	var b BearerTokens
	seen := map[[sha256.Size]byte]int{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want \"SHA256HEX IDENTITY\", got %d fields", n, len(fields))
		}
		raw, err := hex.DecodeString(fields[0])
		if err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("line %d: the first field is not a SHA-256 in hex (64 characters)", n)
		}
		var e bearerEntry
		copy(e.hash[:], raw)
		e.identity = fields[1]
		if prev, dup := seen[e.hash]; dup {
			return nil, fmt.Errorf("line %d: the same token hash as line %d", n, prev)
		}
		seen[e.hash] = n
		b.entries = append(b.entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(b.entries) == 0 {
		return nil, errors.New("no tokens")
	}
	return &b, nil
}

// identity returns the identity of token. It compares the token's hash
// with every entry in constant time and does not stop at a match, so the
// time taken says nothing about how close a guess came.
func (b *BearerTokens) identity(token string) (string, bool) {
	h := sha256.Sum256([]byte(token))
	var id string
	found := 0
	for i := range b.entries {
		eq := subtle.ConstantTimeCompare(b.entries[i].hash[:], h[:])
		if eq == 1 {
			id = b.entries[i].identity
		}
		found |= eq
	}
	return id, found == 1
}

// Policy maps identities to the methods they may call. A call is allowed
// when a rule whose identity pattern matches the caller lists a method
// pattern that matches the call's full method name; everything else is
// denied. In patterns, * matches any run of characters (including /).
//
//	{"rules": [
//	  {"identity": "spiffe://orderd.local/admin", "methods": ["*"]},
//	  {"identity": "spiffe://orderd.local/shop",
//	   "methods": ["/order.v1.OrderService/*", "/order.v1.ProductService/GetProduct"]}
//	]}
type Policy struct {
	// Rules are tried in turn; the first that allows the call decides.
	Rules []PolicyRule `json:"rules"`
}

// PolicyRule lets the identities matching Identity call the methods
// matching Methods.
type PolicyRule struct {
	// Comment is for people; orderd ignores it.
	Comment string `json:"comment,omitempty"`
	// Identity is a pattern of caller identities, such as
	// "spiffe://orderd.local/shop" or "spiffe://orderd.local/*".
	Identity string `json:"identity"`
	// Methods are patterns of full method names, such as
	// "/order.v1.OrderService/*"; "*" alone allows every method.
	Methods []string `json:"methods"`
}

// LoadPolicy reads a policy file (JSON, see Policy).
func LoadPolicy(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParsePolicy(b)
}

// ParsePolicy parses a policy (JSON, see Policy). Unknown fields, rules
// without an identity or methods, and method patterns not starting with /
// are errors.
func ParsePolicy(b []byte) (*Policy, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if dec.More() {
		return nil, errors.New("policy: data after the JSON object")
	}
	if len(p.Rules) == 0 {
		return nil, errors.New("policy: no rules (it would deny every call)")
	}
	for i, r := range p.Rules {
		if r.Identity == "" {
			return nil, fmt.Errorf("policy: rule %d: no identity", i+1)
		}
		if len(r.Methods) == 0 {
			return nil, fmt.Errorf("policy: rule %d (%s): no methods", i+1, r.Identity)
		}
		for _, m := range r.Methods {
			if !strings.HasPrefix(m, "/") && m != "*" {
				return nil, fmt.Errorf("policy: rule %d (%s): method %q: want a full method name such as /order.v1.OrderService/PlaceOrder, or *", i+1, r.Identity, m)
			}
		}
	}
	return &p, nil
}

// Allows reports whether identity may call fullMethod.
func (p *Policy) Allows(identity, fullMethod string) bool {
	for _, r := range p.Rules {
		if !globMatch(r.Identity, identity) {
			continue
		}
		for _, m := range r.Methods {
			if globMatch(m, fullMethod) {
				return true
			}
		}
	}
	return false
}

// checkMethods fails when a method pattern matches none of methods: a typo
// in a policy should stop orderd at start, not deny calls in production.
func (p *Policy) checkMethods(methods []string) error {
	var bad []string
	for i, r := range p.Rules {
		for _, m := range r.Methods {
			found := false
			for _, name := range methods {
				if globMatch(m, name) {
					found = true
					break
				}
			}
			if !found {
				bad = append(bad, fmt.Sprintf("rule %d (%s): %q", i+1, r.Identity, m))
			}
		}
	}
	if len(bad) > 0 {
		sort.Strings(methods)
		return fmt.Errorf("policy: method patterns that match no method of this server: %s (methods: %s)", strings.Join(bad, "; "), strings.Join(methods, ", "))
	}
	return nil
}

// globMatch reports whether s matches pattern, in which * matches any run
// of characters and everything else only itself.
func globMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, part := range parts[1 : len(parts)-1] {
		i := strings.Index(s, part)
		if i < 0 {
			return false
		}
		s = s[i+len(part):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}
