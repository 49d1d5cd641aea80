// Package bus connects the daemon to NATS — an embedded server or an
// external one (bus.go) — creates the streams and consumers the daemon uses
// (topology.go) under their names (names.go), and pulls from consumers in
// batches (consume.go).
package bus

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"trackd.dev/trackd/daemon/internal/config"
)

// Bus is an open connection, and the embedded server when there is one.
type Bus struct {
	Conn   *nats.Conn
	JS     jetstream.JetStream
	server *server.Server
}

// Watch is told when the connection to NATS drops, comes back or closes: it
// logs each change and keeps the instruments, which may be nil.
type Watch struct {
	Log        *slog.Logger
	Connected  prometheus.Gauge   // 1 while connected, else 0
	Reconnects prometheus.Counter // reconnections after a drop
}

func (w Watch) options() []nats.Option {
	set := func(v float64) {
		if w.Connected != nil {
			w.Connected.Set(v)
		}
	}
	return []nats.Option{
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			set(0)
			// Closing the connection (a stop) disconnects it too; only the
			// closed handler speaks then.
			if w.Log != nil && !nc.IsClosed() {
				w.Log.Warn("lost the connection to NATS; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			set(1)
			if w.Reconnects != nil {
				w.Reconnects.Inc()
			}
			if w.Log != nil {
				w.Log.Info("reconnected to NATS", "server", nc.ConnectedUrlRedacted())
			}
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			set(0)
			if w.Log != nil {
				w.Log.Info("connection to NATS closed")
			}
		}),
	}
}

// Open starts the embedded server when cfg.NATS.URL is empty, then connects,
// telling watch about the connection from then on.
func Open(cfg *config.Config, watch Watch) (*Bus, error) {
	b := &Bus{}
	opts := append([]nats.Option{
		nats.Name("trackd"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
	}, watch.options()...)
	url := cfg.NATS.URL
	if url == "" {
		srv, err := startEmbedded(cfg)
		if err != nil {
			return nil, err
		}
		b.server = srv
		opts = append(opts, nats.InProcessServer(srv))
	} else {
		auth, err := AuthOptions(cfg.NATS)
		if err != nil {
			return nil, err
		}
		opts = append(opts, auth...)
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("cannot connect to NATS at %q (nats.url): %w", url, err)
	}
	b.Conn = nc
	if watch.Connected != nil {
		watch.Connected.Set(1)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		b.Close()
		return nil, err
	}
	b.JS = js
	return b, nil
}

func startEmbedded(cfg *config.Config) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.NATS.Embedded.Listen)
	if err != nil {
		return nil, fmt.Errorf("nats.embedded.listen %q is not host:port: %w", cfg.NATS.Embedded.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats.embedded.listen %q has a bad port", cfg.NATS.Embedded.Listen)
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "trackd",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.Resolve(cfg.NATS.Embedded.StoreDir),
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("cannot start the embedded NATS server (nats.embedded): %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("the embedded NATS server did not start listening on %s (nats.embedded.listen); is the port in use?", cfg.NATS.Embedded.Listen)
	}
	return srv, nil
}

// AuthOptions are the client options for the [nats] credentials and TLS settings.
func AuthOptions(c config.NATS) ([]nats.Option, error) {
	var opts []nats.Option
	if c.Creds != "" {
		opts = append(opts, nats.UserCredentials(c.Creds))
	}
	if c.NKey != "" {
		o, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			return nil, fmt.Errorf("nats.nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.Token != "" {
		opts = append(opts, nats.Token(c.Token))
	}
	if c.TLS.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.TLS.CAFile))
	}
	if c.TLS.CertFile != "" || c.TLS.KeyFile != "" {
		opts = append(opts, nats.ClientCert(c.TLS.CertFile, c.TLS.KeyFile))
	}
	return opts, nil
}

// Close drains the connection and stops the embedded server.
func (b *Bus) Close() {
	if b.Conn != nil {
		_ = b.Conn.Drain()
		for b.Conn.IsDraining() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if b.server != nil {
		b.server.Shutdown()
		b.server.WaitForShutdown()
	}
}
