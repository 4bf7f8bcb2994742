package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"
)

// TLSFiles names the PEM files of the gRPC listener's TLS.
type TLSFiles struct {
	// CertFile and KeyFile are the server's certificate (chain) and key.
	CertFile, KeyFile string
	// ClientCAFile, if set, is a CA bundle: every client must then present
	// a certificate that chains to one of them (mTLS), and the
	// certificate's identity (CertIdentity) is the caller's.
	ClientCAFile string
}

// tlsReloadInterval is how often, at most, handshakes look at the files.
const tlsReloadInterval = time.Second

// NewServerTLS returns the TLS configuration of the gRPC listener: TLS 1.2
// or later, the certificate and key of f, and with f.ClientCAFile client
// certificates required and verified against that bundle
// (tls.RequireAndVerifyClientCert). Certificates rotate without a restart:
// a handshake looks at the files' modification times and sizes, at most
// once a second, and rereads them when they changed. Files that do not load
// (half written, key and certificate not matching yet) leave the previous
// configuration in use; the failure is logged once and the files are tried
// again at the next check. Connections already open keep their
// certificates. It fails when the files do not load now.
func NewServerTLS(f TLSFiles, log *slog.Logger) (*tls.Config, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, errors.New("TLS needs both a certificate and a key file")
	}
	if log == nil {
		log = slog.Default()
	}
	r := &tlsReloader{files: f, log: log, now: time.Now}
	cfg, stamps, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cfg, r.stamps, r.checked = cfg, stamps, r.now()
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetConfigForClient: r.config,
	}, nil
}

type tlsReloader struct {
	files TLSFiles
	log   *slog.Logger
	now   func() time.Time

	mu      sync.Mutex
	cfg     *tls.Config
	stamps  []fileStamp // of the files cfg was loaded from
	failed  []fileStamp // of files that did not load (logged once)
	checked time.Time
	// statFailed: a file could not be found (logged once).
	statFailed bool
}

// fileStamp is what tells that a file changed.
type fileStamp struct {
	modTime int64 // ns since 1970
	size    int64
}

func (r *tlsReloader) paths() []string {
	p := []string{r.files.CertFile, r.files.KeyFile}
	if r.files.ClientCAFile != "" {
		p = append(p, r.files.ClientCAFile)
	}
	return p
}

func (r *tlsReloader) stat() ([]fileStamp, error) {
	var out []fileStamp
	for _, p := range r.paths() {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		out = append(out, fileStamp{fi.ModTime().UnixNano(), fi.Size()})
	}
	return out, nil
}

// load reads the files. The stamps are taken first: a file that changes
// while it is read is read again at the next check.
func (r *tlsReloader) load() (*tls.Config, []fileStamp, error) {
	stamps, err := r.stat()
	if err != nil {
		return nil, nil, err
	}
	cert, err := tls.LoadX509KeyPair(r.files.CertFile, r.files.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("server certificate %s / key %s: %w", r.files.CertFile, r.files.KeyFile, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		// gRPC requires ALPN h2; the configuration a handshake uses is this
		// one, not the one credentials.NewTLS added h2 to.
		NextProtos: []string{"h2"},
	}
	if r.files.ClientCAFile != "" {
		pem, err := os.ReadFile(r.files.ClientCAFile)
		if err != nil {
			return nil, nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("client CA bundle %s: no PEM certificates", r.files.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, stamps, nil
}

// config is tls.Config.GetConfigForClient: the current configuration,
// reloaded first if the files changed.
func (r *tlsReloader) config(*tls.ClientHelloInfo) (*tls.Config, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.checked) < tlsReloadInterval {
		return r.cfg, nil
	}
	r.checked = now
	stamps, err := r.stat()
	if err != nil {
		if !r.statFailed {
			r.log.Warn("TLS files unreadable; keeping the loaded certificates", "err", err)
			r.statFailed = true
		}
		return r.cfg, nil
	}
	r.statFailed = false
	if slices.Equal(stamps, r.stamps) || slices.Equal(stamps, r.failed) {
		return r.cfg, nil
	}
	cfg, loaded, err := r.load()
	if err != nil {
		r.log.Warn("TLS files changed but do not load; keeping the loaded certificates", "err", err)
		r.failed = stamps
		return r.cfg, nil
	}
	r.cfg, r.stamps, r.failed = cfg, loaded, nil
	r.log.Info("TLS certificates reloaded", "cert", r.files.CertFile, "client_ca", r.files.ClientCAFile)
	return r.cfg, nil
}
