package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	orderv1 "github.com/orderd/orderd/gen/order/v1"
	"github.com/orderd/orderd/server"
	"github.com/orderd/orderd/server/devcert"
	"github.com/orderd/orderd/server/servertest"
	"github.com/orderd/orderd/store"
	"github.com/orderd/orderd/store/storetest"
)

// eventually retries check until it returns true or 10 seconds pass (the
// server looks at its files at most once a second).
func eventually(tb testing.TB, what string, check func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !check() {
		if time.Now().After(deadline) {
			tb.Fatalf("after 10s: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCertificateRotation rewrites the certificate files under a running
// server: new handshakes get the new certificate, connections already open
// keep working, files that do not load leave the last good certificate in
// use, and a rotated client CA bundle takes effect, all without a restart.
func TestCertificateRotation(t *testing.T) {
	p := newPKI(t)
	st, _ := storetest.New(t, store.Options{})
	addr := servertest.Start(t, st, server.Options{TLS: p.serverTLS(t, true), Auth: &server.Auth{}})
	admin := p.client(t, adminID)

	// served is the certificate a new handshake gets.
	served := func() *x509.Certificate {
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: p.ca.Pool(), ServerName: "localhost", NextProtos: []string{"h2"}, Certificates: []tls.Certificate{admin}})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0]
	}
	issue := func(o orderv1.OrderServiceClient) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := o.IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "alice"})
		return err
	}
	open := orderv1.NewOrderServiceClient(dial(t, addr, clientCreds(p.ca.Pool(), admin)))
	if err := issue(open); err != nil {
		t.Fatal(err)
	}
	first := served()

	second := p.writeServerCert(t, p.ca)
	eventually(t, "new handshakes still get the old certificate", func() bool {
		return served().SerialNumber.Cmp(second.SerialNumber) == 0
	})
	if first.SerialNumber.Cmp(second.SerialNumber) == 0 {
		t.Fatal("the test issued the same serial twice")
	}
	if err := issue(open); err != nil {
		t.Errorf("the connection opened before the rotation: %v", err)
	}
	if err := issue(orderv1.NewOrderServiceClient(dial(t, addr, clientCreds(p.ca.Pool(), admin)))); err != nil {
		t.Errorf("a new connection after the rotation: %v", err)
	}

	t.Run("files that do not load keep the last good certificate", func(t *testing.T) {
		writeFile(t, p.keyFile, []byte("-----BEGIN PRIVATE KEY-----\nhalf written"))
		time.Sleep(1200 * time.Millisecond) // past the reload interval: the server has looked
		if got := served(); got.SerialNumber.Cmp(second.SerialNumber) != 0 {
			t.Errorf("served serial %v, want the last good %v", got.SerialNumber, second.SerialNumber)
		}
		third := p.writeServerCert(t, p.ca)
		eventually(t, "the repaired files are not picked up", func() bool {
			return served().SerialNumber.Cmp(third.SerialNumber) == 0
		})
	})

	t.Run("a rotated client CA bundle takes effect", func(t *testing.T) {
		newCA, err := devcert.NewAuthority("rotated client CA", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		fromNew, err := newCA.IssueTLS(devcert.Leaf{URIs: []string{adminID}})
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, p.caFile, newCA.CertPEM)
		eventually(t, "a client certificate from the new CA is still refused", func() bool {
			return issue(orderv1.NewOrderServiceClient(dial(t, addr, clientCreds(p.ca.Pool(), fromNew)))) == nil
		})
		err = issue(orderv1.NewOrderServiceClient(dial(t, addr, clientCreds(p.ca.Pool(), admin))))
		if status.Code(err) != codes.Unavailable {
			t.Errorf("a new connection with a certificate from the old CA: %v, want UNAVAILABLE", err)
		}
	})
}

func TestServerTLSRefusesBadFiles(t *testing.T) {
	p := newPKI(t)
	tests := map[string]server.TLSFiles{
		"no key":            {CertFile: p.certFile},
		"missing cert file": {CertFile: p.dir + "/nope.pem", KeyFile: p.keyFile},
		"key for the cert":  {CertFile: p.caFile, KeyFile: p.keyFile},
		"CA bundle not PEM": {CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: p.keyFile},
	}
	for name, f := range tests {
		if _, err := server.NewServerTLS(f, nil); err == nil {
			t.Errorf("%s: NewServerTLS(%+v) succeeded, want an error", name, f)
		}
	}
	cfg, err := server.NewServerTLS(server.TLSFiles{CertFile: p.certFile, KeyFile: p.keyFile}, nil)
	if err != nil || cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("NewServerTLS = %+v, %v; want TLS 1.2 minimum", cfg, err)
	}
	// A TLS 1.1 client is refused.
	addr := servertest.Start(t, storeOnly(t), server.Options{TLS: cfg})
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: p.ca.Pool(), ServerName: "localhost", MaxVersion: tls.VersionTLS11, NextProtos: []string{"h2"}})
	if err == nil {
		c.Close()
		t.Error("a TLS 1.1 handshake succeeded")
	}
}

func storeOnly(tb testing.TB) server.Store {
	tb.Helper()
	st, _ := storetest.New(tb, store.Options{})
	return st
}
