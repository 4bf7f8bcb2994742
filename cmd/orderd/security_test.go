package main

import (
	"context"
	"crypto/tls"
	"database/sql"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	orderv1 "github.com/orderd/orderd/gen/order/v1"
	"github.com/orderd/orderd/server/devcert"
	"github.com/orderd/orderd/server/servertest"
	"github.com/orderd/orderd/store/storetest"
)

// serveInBackground runs orderd with args until the test ends and returns
// its log.
func serveInBackground(t *testing.T, args []string, getenv func(string) string) *servertest.LogBuffer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var logs servertest.LogBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"serve", "-metrics-addr="}, args...), getenv, &logs, &logs) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v\n%s", err, logs.String())
		}
	})
	return &logs
}

func TestPlaintextOffLoopbackIsRefused(t *testing.T) {
	getenv := env(map[string]string{"ORDERD_MYSQL_DSN": "u@tcp(127.0.0.1:1)/orderd"})
	err := run(context.Background(), []string{"serve", "-grpc-addr=0.0.0.0:0"}, getenv, &servertest.LogBuffer{}, &servertest.LogBuffer{})
	if err == nil {
		t.Fatal("orderd started plaintext on 0.0.0.0")
	}
	for _, want := range []string{"-grpc-addr", "-tls-cert", "-tls-key", "-insecure-plaintext"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestInsecurePlaintextWarns(t *testing.T) {
	dsn := storetest.NewDatabase(t)
	port := freeAddr(t)[len("127.0.0.1:"):]
	logs := serveInBackground(t, []string{"-grpc-addr=0.0.0.0:" + port, "-insecure-plaintext"}, env(map[string]string{"ORDERD_MYSQL_DSN": dsn}))
	conn, err := grpc.NewClient("127.0.0.1:"+port, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"level=WARN msg=\"serving plaintext gRPC on a non-loopback address", "no caller authentication"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// TestServeWithMTLSAndPolicy starts orderd from files as make run TLS=1
// does: TLS, client certificates, a policy, reflection off.
func TestServeWithMTLSAndPolicy(t *testing.T) {
	dir := t.TempDir()
	ca, err := devcert.NewAuthority("orderd test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key, err := ca.Issue(devcert.Leaf{DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, caFile := write("server.pem", cert), write("server-key.pem", key), write("ca.pem", ca.CertPEM)
	policy := write("policy.json", []byte(`{"rules": [
	  {"identity": "spiffe://orderd.local/admin", "methods": ["*"]},
	  {"identity": "spiffe://orderd.local/shop", "methods": ["/order.v1.OrderService/*"]}]}`))

	dsn := storetest.NewDatabase(t)
	addr := freeAddr(t)
	logs := serveInBackground(t, []string{"-grpc-addr=" + addr, "-reflection=false", "-policy-file=" + policy},
		env(map[string]string{"ORDERD_MYSQL_DSN": dsn, "ORDERD_TLS_CERT": certFile, "ORDERD_TLS_KEY": keyFile, "ORDERD_TLS_CLIENT_CA": caFile}))

	client := func(identity string) *grpc.ClientConn {
		cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
		if identity != "" {
			c, err := ca.IssueTLS(devcert.Leaf{URIs: []string{identity}})
			if err != nil {
				t.Fatal(err)
			}
			cfg.Certificates = []tls.Certificate{c}
		}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	product := &orderv1.PutProductRequest{Product: &orderv1.Product{Sku: "apple", Name: "Apple", UnitPriceMinor: 1, Currency: "EUR", Stock: 5}}
	if _, err := orderv1.NewProductServiceClient(client("spiffe://orderd.local/admin")).PutProduct(ctx, product, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("admin PutProduct: %v\n%s", err, logs.String())
	}
	shop := client("spiffe://orderd.local/shop")
	if _, err := orderv1.NewProductServiceClient(shop).PutProduct(ctx, product); status.Code(err) != codes.PermissionDenied {
		t.Errorf("shop PutProduct: %v, want PERMISSION_DENIED", err)
	}
	if _, err := orderv1.NewOrderServiceClient(shop).IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "alice"}); err != nil {
		t.Errorf("shop IssueToken: %v", err)
	}
	if _, err := orderv1.NewOrderServiceClient(client("")).IssueToken(ctx, &orderv1.IssueTokenRequest{CustomerId: "alice"}); status.Code(err) != codes.Unavailable {
		t.Errorf("without a client certificate: %v, want UNAVAILABLE", err)
	}
	if !strings.Contains(logs.String(), "client_certificates=true") || !strings.Contains(logs.String(), "policy=true") {
		t.Errorf("start line does not say how callers are checked:\n%s", logs.String())
	}
}

func TestBadSecurityFilesNameTheSetting(t *testing.T) {
	dsn := storetest.NewDatabase(t)
	dir := t.TempDir()
	bogus := filepath.Join(dir, "bogus")
	if err := os.WriteFile(bogus, []byte("not what orderd wants\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, err := devcert.NewAuthority("ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	badPolicy := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(badPolicy, []byte(`{"rules": [{"identity": "x", "methods": ["/order.v1.OrderService/Nope"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(strings.Repeat("ab", 32)+" ci\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-tls-cert=" + bogus, "-tls-key=" + bogus}, "-tls-cert"},
		{[]string{"-bearer-tokens-file=" + bogus}, "-bearer-tokens-file"},
		{[]string{"-bearer-tokens-file=" + filepath.Join(dir, "missing")}, "-bearer-tokens-file"},
		{[]string{"-bearer-tokens-file=" + tokens, "-policy-file=" + bogus}, "-policy-file"},
		{[]string{"-bearer-tokens-file=" + tokens, "-policy-file=" + badPolicy}, "/order.v1.OrderService/Nope"},
	}
	for _, tc := range tests {
		err := run(context.Background(), append([]string{"serve", "-grpc-addr=" + freeAddr(t), "-metrics-addr="}, tc.args...),
			env(map[string]string{"ORDERD_MYSQL_DSN": dsn}), &servertest.LogBuffer{}, &servertest.LogBuffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("serve %v: %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
}

// TestDSNPasswordNeverShown serves with a DSN whose password is a marker,
// and fails to connect with another: neither log nor error may hold it.
func TestDSNPasswordNeverShown(t *testing.T) {
	const password = "pw-MARKER-7f3a9c"
	dsn := storetest.NewDatabase(t)
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	admin := storetest.DB(t, dsn)
	user := "orderd_pw_" + cfg.DBName[len(cfg.DBName)-6:]
	ctx := context.Background()
	for _, q := range []string{
		"CREATE USER '" + user + "'@'%' IDENTIFIED BY '" + password + "'",
		"GRANT ALL ON " + cfg.DBName + ".* TO '" + user + "'@'%'",
	} {
		if _, err := admin.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() { admin.ExecContext(context.Background(), "DROP USER IF EXISTS '"+user+"'@'%'") })
	cfg.User, cfg.Passwd = user, password
	if db, err := sql.Open("mysql", cfg.FormatDSN()); err == nil {
		err = db.PingContext(ctx)
		db.Close()
		if err != nil {
			t.Fatalf("the new user cannot connect: %v", err)
		}
	}

	logs := serveInBackground(t, []string{"-grpc-addr=" + freeAddr(t), "-log-level=debug"}, env(map[string]string{"ORDERD_MYSQL_DSN": cfg.FormatDSN()}))
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "orderd serving") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "orderd serving") || !strings.Contains(logs.String(), user) {
		t.Fatalf("orderd did not log its start with the database user:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), password) {
		t.Errorf("the log holds the DSN password:\n%s", logs.String())
	}

	// Wrong password, and a server that is not there.
	for _, bad := range []string{
		strings.Replace(cfg.FormatDSN(), password, password+"-wrong", 1),
		user + ":" + password + "@tcp(127.0.0.1:1)/orderd",
	} {
		var out servertest.LogBuffer
		err := run(ctx, []string{"serve", "-grpc-addr=" + freeAddr(t), "-metrics-addr="}, env(map[string]string{"ORDERD_MYSQL_DSN": bad}), &out, &out)
		if err == nil {
			t.Fatalf("serve with %s started", redactedDSN(bad))
		}
		for _, s := range []string{err.Error(), out.String()} {
			if strings.Contains(s, password) {
				t.Errorf("the DSN password shows in %q", s)
			}
		}
	}
}
