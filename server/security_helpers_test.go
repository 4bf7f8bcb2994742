package server_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/orderd/orderd/server"
	"github.com/orderd/orderd/server/devcert"
	"github.com/orderd/orderd/store"
)

// counting counts the store calls that reach it: a call refused before its
// handler runs never gets here.
type counting struct {
	server.Store
	calls atomic.Int64
}

func (c *counting) IssueToken(ctx context.Context, customerID string) (store.IssuedToken, error) {
	c.calls.Add(1)
	return c.Store.IssueToken(ctx, customerID)
}

func (c *counting) IssueTokenCapped(ctx context.Context, customerID string, n int) (store.IssuedToken, error) {
	c.calls.Add(1)
	return c.Store.IssueTokenCapped(ctx, customerID, n)
}

func (c *counting) PlaceOrder(ctx context.Context, req store.PlaceRequest) (*store.Outcome, error) {
	c.calls.Add(1)
	return c.Store.PlaceOrder(ctx, req)
}

func (c *counting) GetToken(ctx context.Context, token, customerID string) (store.TokenStatus, error) {
	c.calls.Add(1)
	return c.Store.GetToken(ctx, token, customerID)
}

func (c *counting) PutProduct(ctx context.Context, p store.Product) (store.Product, error) {
	c.calls.Add(1)
	return c.Store.PutProduct(ctx, p)
}

func (c *counting) GetProduct(ctx context.Context, sku string) (store.Product, error) {
	c.calls.Add(1)
	return c.Store.GetProduct(ctx, sku)
}

// dial connects to addr, closed when the test ends.
func dial(tb testing.TB, addr string, creds credentials.TransportCredentials, opts ...grpc.DialOption) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// pki is a throwaway CA with a server certificate for 127.0.0.1 and
// localhost, written to files as orderd reads them.
type pki struct {
	ca                        *devcert.Authority
	dir                       string
	certFile, keyFile, caFile string
}

func newPKI(tb testing.TB) *pki {
	tb.Helper()
	ca, err := devcert.NewAuthority("orderd test CA", 24*time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	p := &pki{ca: ca, dir: dir, certFile: filepath.Join(dir, "server.pem"), keyFile: filepath.Join(dir, "server-key.pem"), caFile: filepath.Join(dir, "ca.pem")}
	p.writeServerCert(tb, ca)
	writeFile(tb, p.caFile, ca.CertPEM)
	return p
}

// writeServerCert issues a server certificate from ca into the files.
func (p *pki) writeServerCert(tb testing.TB, ca *devcert.Authority) *x509.Certificate {
	tb.Helper()
	cert, key, err := ca.Issue(devcert.Leaf{CommonName: "orderd", DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		tb.Fatal(err)
	}
	writeFile(tb, p.certFile, cert)
	writeFile(tb, p.keyFile, key)
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		tb.Fatal(err)
	}
	return pair.Leaf
}

func writeFile(tb testing.TB, path string, b []byte) {
	tb.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// serverTLS is the server's reloading TLS configuration over p's files,
// requiring client certificates when mTLS is set.
func (p *pki) serverTLS(tb testing.TB, mTLS bool) *tls.Config {
	tb.Helper()
	f := server.TLSFiles{CertFile: p.certFile, KeyFile: p.keyFile}
	if mTLS {
		f.ClientCAFile = p.caFile
	}
	cfg, err := server.NewServerTLS(f, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// client issues a client certificate for a SPIFFE-style identity.
func (p *pki) client(tb testing.TB, uri string) tls.Certificate {
	tb.Helper()
	c, err := p.ca.IssueTLS(devcert.Leaf{CommonName: "client", URIs: []string{uri}})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// clientCreds trusts roots and presents certs (none: no client
// certificate).
func clientCreds(roots *x509.CertPool, certs ...tls.Certificate) credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: certs, MinVersion: tls.VersionTLS12})
}

// bearerFile returns a bearer token file for tokens (token → identity).
func bearerFile(tokens map[string]string) string {
	var b strings.Builder
	b.WriteString("# sha256(token) identity\n")
	for tok, id := range tokens {
		h := sha256.Sum256([]byte(tok))
		b.WriteString(hex.EncodeToString(h[:]) + "  " + id + "\n")
	}
	return b.String()
}

// counterValue is the value of the counter name with labels in reg (0
// when absent).
func counterValue(tb testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// slogTo is a debug-level text logger writing to w.
func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
