package trackapi

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Listener is the tracking API's HTTP server.
type Listener struct {
	srv  *http.Server
	ln   net.Listener
	cert atomic.Pointer[tls.Certificate] // served over https; nil for plain http
}

// TLS names the certificate and key files the API serves https with.
type TLS struct {
	CertFile, KeyFile string
}

// Listen serves api on addr (http.listen), over https with certs when it is
// not nil.
func Listen(addr string, api *API, certs *TLS) (*Listener, error) {
	l := &Listener{}
	if certs != nil {
		if err := l.ReloadTLS(*certs); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http.listen %q: %w", addr, err)
	}
	if certs != nil {
		// Each handshake takes the certificate loaded last, so that one
		// renewed on disk is served from the next reload on.
		ln = tls.NewListener(ln, &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return l.cert.Load(), nil },
		})
	}
	l.ln = ln
	l.srv = &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 10 * time.Second,
		// A 500 KB batch from a slow mobile link still fits.
		ReadTimeout:    time.Minute,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		// What net/http has to say (a client's TLS or protocol fault) goes to the daemon's log.
		ErrorLog: slog.NewLogLogger(api.log.Handler(), slog.LevelWarn),
	}
	// Serve only fails once the listener is closed, which Shutdown does.
	go func() { _ = l.srv.Serve(ln) }()
	return l, nil
}

// ReloadTLS reads the certificate and key files again; the next handshakes
// use them. On an error the certificate served stays as it was.
func (l *Listener) ReloadTLS(certs TLS) error {
	cert, err := tls.LoadX509KeyPair(certs.CertFile, certs.KeyFile)
	if err != nil {
		return fmt.Errorf("http.tls.cert_file %s with key_file %s: %w", certs.CertFile, certs.KeyFile, err)
	}
	l.cert.Store(&cert)
	return nil
}

// Addr is the address the API listens on.
func (l *Listener) Addr() string { return l.ln.Addr().String() }

// Shutdown stops accepting requests and waits for those in flight to be
// answered, or for ctx to be done.
func (l *Listener) Shutdown(ctx context.Context) error { return l.srv.Shutdown(ctx) }
