package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"

	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/config"
)

// natsTarget is the NATS server a client command (send, dlq) talks to, and
// where that came from, for error messages.
type natsTarget struct {
	url      string
	from     string // "--nats", "config.toml nats.url" or "config.toml nats.embedded.listen"
	embedded bool   // url is a running trackd's embedded server
	opts     []nats.Option
	cfg      *config.Config // nil when --nats alone chose the server
}

// targetFlags are the --config and --nats flags of the client commands.
type targetFlags struct {
	fs         *flag.FlagSet
	configPath *string
	natsURL    *string
}

func addTargetFlags(fs *flag.FlagSet) *targetFlags {
	return &targetFlags{
		fs:         fs,
		configPath: fs.String("config", "config.toml", "the configuration `file` saying where NATS is: nats.url, or nats.embedded.listen of a running trackd"),
		natsURL:    fs.String("nats", "", "connect to NATS at this `url` instead of the configuration's"),
	}
}

// resolve returns the target the parsed flags name.
func (f *targetFlags) resolve() (*natsTarget, error) {
	configSet := false
	f.fs.Visit(func(fl *flag.Flag) { configSet = configSet || fl.Name == "config" })
	return resolveTarget(*f.natsURL, *f.configPath, configSet)
}

// resolveTarget applies the rules of --nats and --config. With --nats alone
// the configuration is not read; with both, the configuration still gives
// the credentials and its other settings.
func resolveTarget(natsURL, configPath string, configSet bool) (*natsTarget, error) {
	t := &natsTarget{url: natsURL, from: "--nats"}
	if natsURL != "" && !configSet {
		return t, nil
	}
	cfg, err := config.Load(configPath)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && !configSet {
			return nil, fmt.Errorf("cannot read %s (the default --config); run where trackd's config.toml is, or give --config FILE or --nats URL", configPath)
		}
		return nil, err
	}
	t.cfg = cfg
	switch {
	case natsURL != "":
	case cfg.NATS.URL != "":
		t.url, t.from = cfg.NATS.URL, configPath+" nats.url"
	default:
		addr, err := dialAddr(cfg.NATS.Embedded.Listen)
		if err != nil {
			return nil, fmt.Errorf("%s: nats.embedded.listen %q is not host:port", configPath, cfg.NATS.Embedded.Listen)
		}
		t.url, t.from, t.embedded = "nats://"+addr, configPath+" nats.embedded.listen", true
		return t, nil
	}
	t.opts, err = bus.AuthOptions(cfg.NATS)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", configPath, err)
	}
	return t, nil
}

// connect dials the target; the error says where the address came from.
func (t *natsTarget) connect(name string) (*nats.Conn, error) {
	nc, err := nats.Connect(t.url, append(t.opts, nats.Name(name))...)
	if err == nil {
		return nc, nil
	}
	where := redactURL(t.url)
	if errors.Is(err, nats.ErrNoServers) {
		running := "the NATS server"
		if t.embedded {
			running = "trackd"
		}
		return nil, fmt.Errorf("cannot connect to NATS at %s (from %s); is %s running?", where, t.from, running)
	}
	return nil, fmt.Errorf("cannot connect to NATS at %s (from %s): %w", where, t.from, err)
}

// dialAddr turns a listen address into one to connect to: a server listening
// on every interface is reached on the loopback one.
func dialAddr(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// redactURL hides the password or token in a NATS URL, or in each URL of a
// comma-separated list, before it is printed.
func redactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			continue
		}
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			u.User = url.User("xxxxx")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
