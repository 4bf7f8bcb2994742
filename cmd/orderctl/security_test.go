package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderd/orderd/server"
	"github.com/orderd/orderd/server/servertest"
	"github.com/orderd/orderd/store"
	"github.com/orderd/orderd/store/storetest"
)

// serveSecure serves a fresh database with TLS from the files of certs
// create in dir: client certificates and bearer tokens both accepted
// (bearer=true: server-only TLS and the bearer-tokens file), the example
// policy applied.
func serveSecure(tb testing.TB, dir string, bearer bool) string {
	tb.Helper()
	st, _ := storetest.New(tb, store.Options{TokenTTL: time.Hour})
	files := server.TLSFiles{CertFile: filepath.Join(dir, "server.pem"), KeyFile: filepath.Join(dir, "server-key.pem")}
	auth := &server.Auth{}
	if bearer {
		tokens, err := server.LoadBearerTokens(filepath.Join(dir, "bearer-tokens"))
		if err != nil {
			tb.Fatal(err)
		}
		auth.Tokens = tokens
	} else {
		files.ClientCAFile = filepath.Join(dir, "ca.pem")
	}
	policy, err := server.LoadPolicy(filepath.Join(dir, "policy.json"))
	if err != nil {
		tb.Fatal(err)
	}
	auth.Policy = policy
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg, err := server.NewServerTLS(files, log)
	if err != nil {
		tb.Fatal(err)
	}
	return servertest.Start(tb, st, server.Options{Logger: log, TLS: cfg, Auth: auth})
}

// TestCertsCreateAndTLS: certs create writes a working set (keys private)
// and will not overwrite it by accident; orderctl then talks to orderd with
// those certificates and tokens, and the example policy keeps the shop
// from changing products.
func TestCertsCreateAndTLS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	r := orderctl(t, "unused:1", "certs", "create", "--dir", dir).want(t, exitOK)
	if !strings.Contains(r.stdout, "grpcurl -cacert") {
		t.Errorf("certs create does not say how to use the files:\n%s", r.stdout)
	}
	for _, name := range []string{"ca.pem", "server.pem", "server-key.pem", "admin.pem", "admin-key.pem", "shop.pem", "shop-key.pem", "policy.json", "bearer-tokens", "admin.token", "shop.token"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("certs create did not write %s: %v", name, err)
		}
		secret := strings.HasSuffix(name, "-key.pem") || strings.HasSuffix(name, ".token")
		if secret && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	before, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	r = orderctl(t, "unused:1", "certs", "create", "--dir", dir).want(t, exitError)
	if !strings.Contains(r.stderr, "--force") {
		t.Errorf("second certs create: %s, want a hint at --force", r.stderr)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); string(after) != string(before) {
		t.Error("a refused certs create changed ca.pem")
	}

	mtls := func(who string) []string {
		return []string{"--tls-ca", filepath.Join(dir, "ca.pem"), "--tls-cert", filepath.Join(dir, who+".pem"), "--tls-key", filepath.Join(dir, who+"-key.pem"), "--max-attempts", "1", "--timeout", "10s"}
	}
	t.Run("client certificates", func(t *testing.T) {
		addr := serveSecure(t, dir, false)
		orderctl(t, addr, append(mtls("admin"), "product", "put", "--sku", "pear", "--name", "Pear", "--price", "80", "--currency", "EUR", "--stock", "5")...).want(t, exitOK)
		r := orderctl(t, addr, append(mtls("shop"), "product", "put", "--sku", "pear", "--name", "Pear", "--price", "1", "--currency", "EUR", "--stock", "500")...).want(t, exitRejected)
		if !strings.Contains(r.stderr, "PERMISSION_DENIED") {
			t.Errorf("shop product put: %s, want PERMISSION_DENIED", r.stderr)
		}
		orderctl(t, addr, append(mtls("shop"), "order", "place", "--customer", "alice", "--item", "pear=1")...).want(t, exitOK)
		// Without a client certificate the handshake fails: the outcome
		// of the call is unknown to orderctl.
		orderctl(t, addr, "--tls-ca", filepath.Join(dir, "ca.pem"), "--max-attempts", "1", "--timeout", "10s", "token", "issue", "--customer", "alice").want(t, exitUnknown)
	})
	t.Run("bearer tokens", func(t *testing.T) {
		addr := serveSecure(t, dir, true)
		ca := []string{"--tls-ca", filepath.Join(dir, "ca.pem"), "--max-attempts", "1"}
		orderctl(t, addr, append(ca, "--bearer-file", filepath.Join(dir, "shop.token"), "token", "issue", "--customer", "alice")...).want(t, exitOK)
		r := orderctl(t, addr, append(ca, "token", "issue", "--customer", "alice")...).want(t, exitRejected)
		if !strings.Contains(r.stderr, "UNAUTHENTICATED") {
			t.Errorf("without a token: %s, want UNAUTHENTICATED", r.stderr)
		}
		tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
		if err != nil {
			t.Fatal(err)
		}
		orderctl(t, addr, append(ca, "--bearer", strings.TrimSpace(string(tok)), "product", "put", "--sku", "kiwi", "--name", "Kiwi", "--price", "1", "--currency", "EUR", "--stock", "1")...).want(t, exitOK)
	})
}

func TestBearerNeverInPlaintextOffLoopback(t *testing.T) {
	r := orderctl(t, "orderd.example:50051", "--bearer", "secret", "token", "issue", "--customer", "alice").want(t, exitUsage)
	if !strings.Contains(r.stderr, "plaintext") || strings.Contains(r.stderr, "secret") {
		t.Errorf("stderr = %s, want a refusal that does not repeat the token", r.stderr)
	}
	for target, want := range map[string]bool{"127.0.0.1:50051": true, "localhost:1": true, "[::1]:1": true, "dns:///localhost:1": true, "orderd:50051": false, "10.0.0.1:1": false} {
		if got := loopbackTarget(target); got != want {
			t.Errorf("loopbackTarget(%q) = %v, want %v", target, got, want)
		}
	}
}
