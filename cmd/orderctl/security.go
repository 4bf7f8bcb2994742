package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/orderd/orderd/client"
	"github.com/orderd/orderd/server/devcert"
)

// transport is how orderctl reaches orderd: TLS, a client certificate,
// a bearer token.
type transport struct {
	tls        bool
	caFile     string
	certFile   string
	keyFile    string
	serverName string
	bearer     string
	bearerFile string
}

func (t *transport) register(fs *flag.FlagSet) {
	fs.BoolVar(&t.tls, "tls", t.tls, "use TLS, trusting the system's CAs (implied by the other --tls-* flags)")
	fs.StringVar(&t.caFile, "tls-ca", t.caFile, "PEM CA bundle that signed orderd's certificate")
	fs.StringVar(&t.certFile, "tls-cert", t.certFile, "PEM client certificate (mTLS)")
	fs.StringVar(&t.keyFile, "tls-key", t.keyFile, "PEM key of --tls-cert")
	fs.StringVar(&t.serverName, "tls-server-name", t.serverName, "name to verify in orderd's certificate (default: the host of --addr)")
	fs.StringVar(&t.bearer, "bearer", t.bearer, "bearer token sent as authorization metadata (env ORDERCTL_BEARER; visible to other local users in ps: prefer --bearer-file)")
	fs.StringVar(&t.bearerFile, "bearer-file", t.bearerFile, "file holding the bearer token")
}

// bearerCreds sends "authorization: Bearer <token>" with every call.
type bearerCreds struct {
	token string
	// tls is whether the connection is TLS; grpc-go then refuses to send
	// the token over anything else.
	tls bool
}

func (b bearerCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearerCreds) RequireTransportSecurity() bool { return b.tls }

// options returns the client options for t, or a usage error.
func (t *transport) options(addr string) ([]client.Option, error) {
	var opts []client.Option
	useTLS := t.tls || t.caFile != "" || t.certFile != "" || t.keyFile != "" || t.serverName != ""
	if useTLS {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.serverName}
		if t.caFile != "" {
			pem, err := os.ReadFile(t.caFile)
			if err != nil {
				return nil, fmt.Errorf("--tls-ca: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--tls-ca %s: no PEM certificates", t.caFile)
			}
		}
		if (t.certFile == "") != (t.keyFile == "") {
			return nil, usagef("--tls-cert and --tls-key go together")
		}
		if t.certFile != "" {
			c, err := tls.LoadX509KeyPair(t.certFile, t.keyFile)
			if err != nil {
				return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
			}
			cfg.Certificates = []tls.Certificate{c}
		}
		opts = append(opts, client.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	token := t.bearer
	if t.bearerFile != "" {
		b, err := os.ReadFile(t.bearerFile)
		if err != nil {
			return nil, fmt.Errorf("--bearer-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token != "" {
		if !useTLS && !loopbackTarget(addr) {
			return nil, usagef("a bearer token would travel in plaintext to %s: use TLS (--tls-ca, or --tls)", addr)
		}
		opts = append(opts, client.WithDialOptions(grpc.WithPerRPCCredentials(bearerCreds{token: token, tls: useTLS})))
	}
	return opts, nil
}

// loopbackTarget reports whether a gRPC target (host:port, or with a
// dns:/// or passthrough:/// scheme) is on loopback.
func loopbackTarget(target string) bool {
	if i := strings.Index(target, ":///"); i >= 0 {
		target = target[i+4:]
	}
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Identities of the certificates certs create makes.
const (
	adminIdentity = "spiffe://orderd.local/admin"
	shopIdentity  = "spiffe://orderd.local/shop"
)

// examplePolicy lets the admin call everything and the shop the order API
// and product reads.
const examplePolicy = `{
  "rules": [
    {
      "comment": "operators: everything, including PutProduct",
      "identity": "spiffe://orderd.local/admin",
      "methods": ["*"]
    },
    {
      "comment": "the shop front end: orders and product reads",
      "identity": "spiffe://orderd.local/shop",
      "methods": ["/order.v1.OrderService/*", "/order.v1.ProductService/GetProduct"]
    }
  ]
}
`

// certsCreate writes a throwaway CA, a server certificate for 127.0.0.1,
// ::1 and localhost, client certificates for an admin and a shop, an
// example policy, and a bearer token file with a token for each.
func certsCreate(fs *flag.FlagSet) action {
	dir := fs.String("dir", ".data/certs", "directory to write into (created if missing)")
	validFor := fs.Duration("valid-for", 30*24*time.Hour, "validity of the certificates")
	force := fs.Bool("force", false, "overwrite files that exist")
	return func(_ context.Context, e *env) error {
		if *validFor <= 0 {
			return usagef("--valid-for must be positive")
		}
		files, err := devSet(*validFor)
		if err != nil {
			return err
		}
		if !*force {
			for _, f := range files {
				if _, err := os.Stat(filepath.Join(*dir, f.name)); err == nil {
					return fmt.Errorf("%s exists: remove the directory, or pass --force to overwrite", filepath.Join(*dir, f.name))
				}
			}
		}
		if err := os.MkdirAll(*dir, 0o700); err != nil {
			return err
		}
		var written []string
		for _, f := range files {
			p := filepath.Join(*dir, f.name)
			if err := os.WriteFile(p, f.data, f.mode); err != nil {
				return err
			}
			if err := os.Chmod(p, f.mode); err != nil { // WriteFile keeps an existing file's mode
				return err
			}
			written = append(written, p)
		}
		if e.json {
			return writeJSON(e.out, map[string]any{"dir": *dir, "files": written})
		}
		fmt.Fprintf(e.out, "wrote %s\n\n", strings.Join(written, "\n      "))
		fmt.Fprintf(e.out, `serve:   make run TLS=1   (or bin/orderd -tls-cert %[1]s/server.pem -tls-key %[1]s/server-key.pem \
                          -tls-client-ca %[1]s/ca.pem -policy-file %[1]s/policy.json)
call:    orderctl --tls-ca %[1]s/ca.pem --tls-cert %[1]s/shop.pem --tls-key %[1]s/shop-key.pem token issue --customer alice
grpcurl: grpcurl -cacert %[1]s/ca.pem -cert %[1]s/admin.pem -key %[1]s/admin-key.pem -servername localhost 127.0.0.1:50051 list
`, *dir)
		return nil
	}
}

type devFile struct {
	name string
	data []byte
	mode os.FileMode
}

// devSet makes the files of certs create.
func devSet(validFor time.Duration) ([]devFile, error) {
	ca, err := devcert.NewAuthority("orderd development CA", validFor)
	if err != nil {
		return nil, err
	}
	files := []devFile{{"ca.pem", ca.CertPEM, 0o644}}
	leaves := []struct {
		name string
		leaf devcert.Leaf
	}{
		{"server", devcert.Leaf{CommonName: "orderd", DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, ValidFor: validFor}},
		{"admin", devcert.Leaf{CommonName: "admin", URIs: []string{adminIdentity}, ValidFor: validFor}},
		{"shop", devcert.Leaf{CommonName: "shop", URIs: []string{shopIdentity}, ValidFor: validFor}},
	}
	for _, l := range leaves {
		cert, key, err := ca.Issue(l.leaf)
		if err != nil {
			return nil, err
		}
		files = append(files, devFile{l.name + ".pem", cert, 0o644}, devFile{l.name + "-key.pem", key, 0o600})
	}
	var tokens strings.Builder
	tokens.WriteString("# orderd -bearer-tokens-file: SHA-256 (hex) of a token, then its identity.\n")
	for _, who := range []struct{ name, identity string }{{"admin", adminIdentity}, {"shop", shopIdentity}} {
		var b [24]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, errors.New("crypto/rand failed")
		}
		tok := "obt_" + base64.RawURLEncoding.EncodeToString(b[:])
		h := sha256.Sum256([]byte(tok))
		fmt.Fprintf(&tokens, "%s %s\n", hex.EncodeToString(h[:]), who.identity)
		files = append(files, devFile{who.name + ".token", []byte(tok + "\n"), 0o600})
	}
	files = append(files, devFile{"bearer-tokens", []byte(tokens.String()), 0o644}, devFile{"policy.json", []byte(examplePolicy), 0o644})
	return files, nil
}
