package trackapi

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Listener is the tracking API's HTTP server.
type Listener struct {
	srv *http.Server
	ln  net.Listener
}

// Listen serves api on addr (http.listen).
func Listen(addr string, api *API) (*Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http.listen %q: %w", addr, err)
	}
	l := &Listener{ln: ln, srv: &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 10 * time.Second,
		// A 500 KB batch from a slow mobile link still fits.
		ReadTimeout:    time.Minute,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		// What net/http has to say (a client's TLS or protocol fault) goes to the daemon's log.
		ErrorLog: slog.NewLogLogger(api.log.Handler(), slog.LevelWarn),
	}}
	// Serve only fails once the listener is closed, which Shutdown does.
	go func() { _ = l.srv.Serve(ln) }()
	return l, nil
}

// Addr is the address the API listens on.
func (l *Listener) Addr() string { return l.ln.Addr().String() }

// Shutdown stops accepting requests and waits for those in flight to be
// answered, or for ctx to be done.
func (l *Listener) Shutdown(ctx context.Context) error { return l.srv.Shutdown(ctx) }
