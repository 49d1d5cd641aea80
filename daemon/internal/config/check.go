package config

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"trackd.dev/trackd/sdk"
)

// A destination id becomes part of a consumer name and a subject token.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Stream and bucket names may not contain subject wildcards, dots or spaces.
var streamName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// The daemon's own subjects; ingest subjects must stay clear of them.
const internalSubjectPrefix = "trackd."

func (c *Config) check(name string, lookupEnv func(string) (string, bool)) error {
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("%s: %s %s", name, key, fmt.Sprintf(format, args...))
	}
	for key, p := range map[string]*string{
		"nats.url": &c.NATS.URL, "nats.user": &c.NATS.User, "nats.password": &c.NATS.Password,
		"nats.token": &c.NATS.Token, "nats.creds": &c.NATS.Creds, "nats.nkey": &c.NATS.NKey,
	} {
		v, err := expand(*p, lookupEnv)
		if err != nil {
			return bad(key, "%v", err)
		}
		*p = v
	}
	for _, p := range []*string{&c.NATS.Creds, &c.NATS.NKey, &c.NATS.TLS.CAFile, &c.NATS.TLS.CertFile, &c.NATS.TLS.KeyFile} {
		*p = c.Resolve(*p)
	}
	if c.NATS.Replicas < 1 || c.NATS.Replicas > 5 {
		return bad("nats.replicas", "is %d; it must be between 1 and 5 (3 on a three-node cluster)", c.NATS.Replicas)
	}
	if c.NATS.URL == "" && c.NATS.Replicas > 1 {
		return bad("nats.replicas", "is %d, but the embedded server is one node; set nats.url to a cluster or use 1", c.NATS.Replicas)
	}
	if c.NATS.URL == "" && c.NATS.Embedded.Listen == "" {
		return bad("nats.embedded.listen", "is empty; set it (for example \"127.0.0.1:4222\") or set nats.url")
	}
	if !streamName.MatchString(c.Ingest.Stream) {
		return bad("ingest.stream", "%q is not a valid stream name; use letters, digits, - and _", c.Ingest.Stream)
	}
	if len(c.Ingest.Subjects) == 0 {
		return bad("ingest.subjects", "is empty; set at least one subject such as \"track\"")
	}
	for _, s := range c.Ingest.Subjects {
		if s == "" || s == ">" || strings.HasPrefix(s, internalSubjectPrefix) || strings.HasPrefix(s, "$") {
			return bad("ingest.subjects", "contains %q, which overlaps the daemon's own subjects (trackd.>, $JS, $KV)", s)
		}
	}
	if c.Ingest.MaxEventBytes <= 0 || c.Ingest.MaxEventBytes > 1<<20 {
		return bad("ingest.max_event_bytes", "is %d; it must be between 1 and 1048576", c.Ingest.MaxEventBytes)
	}
	for _, b := range [...]struct {
		key  string
		size Bytes
	}{{"ingest.max_bytes", c.Ingest.MaxBytes}, {"dlq.max_bytes", c.DLQ.MaxBytes}} {
		if b.size < 1<<20 {
			return bad(b.key, "is %s; a stream needs at least 1 MiB, such as \"8GiB\"", b.size)
		}
	}
	if c.DLQ.MaxAge <= 0 {
		return bad("dlq.max_age", "is %s; dead letters must be kept for some time, such as \"336h\"", c.DLQ.MaxAge)
	}
	if !streamName.MatchString(c.Dedupe.Bucket) {
		return bad("dedupe.bucket", "%q is not a valid bucket name; use letters, digits, - and _", c.Dedupe.Bucket)
	}
	if c.Dedupe.Window <= 0 {
		return bad("dedupe.window", "must be a positive duration such as \"12h\"")
	}
	if c.Dedupe.Shards < 1 || c.Dedupe.Shards > 64 {
		return bad("dedupe.shards", "is %d; it must be between 1 and 64", c.Dedupe.Shards)
	}
	if c.Dedupe.MaxKeys < 0 {
		return bad("dedupe.max_keys", "is %d; use 0 for no limit, or the most messageIds a bucket may hold", c.Dedupe.MaxKeys)
	}
	if err := c.checkHTTP(bad, lookupEnv); err != nil {
		return err
	}
	if err := checkRetry("retry", c.Retry, bad); err != nil {
		return err
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return bad("log.level", "is %q; use debug, info, warn or error", c.Log.Level)
	}
	if c.Shutdown.Timeout <= 0 {
		return bad("shutdown.timeout", "must be a positive duration such as \"30s\"")
	}
	return c.checkDestinations(bad, lookupEnv)
}

func (c *Config) checkHTTP(bad func(key, format string, args ...any) error, lookupEnv func(string) (string, bool)) error {
	h := &c.HTTP
	if h.Listen == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(h.Listen); err != nil {
		return bad("http.listen", "%q is not host:port, such as \"127.0.0.1:8088\"", h.Listen)
	}
	if len(h.WriteKeys) == 0 {
		return bad("http.write_keys", "is empty, so no call could be accepted; add a source, such as web = \"${WEB_WRITE_KEY}\", or set http.listen = \"\"")
	}
	if !server.IsValidLiteralSubject(h.SubjectPrefix) {
		return bad("http.subject_prefix", "%q is not a subject of tokens without wildcards, such as \"track\"", h.SubjectPrefix)
	}
	if h.PublicURL != "" {
		u, err := url.Parse(h.PublicURL)
		if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.Opaque != "" {
			return bad("http.public_url", "%q is not an http or https URL such as \"https://trackd.example.com\"", h.PublicURL)
		}
		if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
			return bad("http.public_url", "%q has a user, query or fragment; give only the scheme, host and any path prefix, such as \"https://trackd.example.com\"", h.PublicURL)
		}
		h.PublicURL = u.Scheme + "://" + u.Host + strings.TrimRight(u.EscapedPath(), "/")
	}
	if t := &h.TLS; t.CertFile != "" || t.KeyFile != "" {
		if t.CertFile == "" || t.KeyFile == "" {
			return bad("http.tls", "needs both cert_file and key_file to serve https")
		}
		t.CertFile, t.KeyFile = c.Resolve(t.CertFile), c.Resolve(t.KeyFile)
		if _, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile); err != nil {
			return bad("http.tls.cert_file", "%s with key_file %s: %v", t.CertFile, t.KeyFile, err)
		}
	}
	sources := map[string]string{} // write key → the source that has it
	for _, source := range slices.Sorted(maps.Keys(h.WriteKeys)) {
		key := "http.write_keys." + source
		if !idPattern.MatchString(source) {
			return bad(key, "is not a source name of letters, digits, - and _ (it becomes the subject token after %s.)", h.SubjectPrefix)
		}
		v, err := expand(h.WriteKeys[source], lookupEnv)
		if err != nil {
			return bad(key, "%v", err)
		}
		if v == "" {
			return bad(key, "is empty; a source needs a write key")
		}
		if prev, ok := sources[v]; ok {
			return bad(key, "is the same write key as http.write_keys.%s; give each source its own", prev)
		}
		sources[v] = source
		h.WriteKeys[source] = v
		if subject := h.SubjectPrefix + "." + source; !c.ingests(subject) {
			return bad("http.subject_prefix", "%q: calls of source %s would go to %s, which ingest.subjects %q do not cover", h.SubjectPrefix, source, subject, c.Ingest.Subjects)
		}
	}
	return nil
}

// ingests reports whether one of the ingest subjects matches subject.
func (c *Config) ingests(subject string) bool {
	for _, pattern := range c.Ingest.Subjects {
		if server.SubjectMatchesFilter(subject, pattern) {
			return true
		}
	}
	return false
}

func checkRetry(key string, r Retry, bad func(key, format string, args ...any) error) error {
	switch {
	case r.Initial <= 0:
		return bad(key+".initial", "must be a positive duration such as \"1s\"")
	case r.Max < r.Initial:
		return bad(key+".max", "(%s) is shorter than %s.initial (%s)", r.Max, key, r.Initial)
	case r.MaxAttempts < 1:
		return bad(key+".max_attempts", "is %d; it must be at least 1", r.MaxAttempts)
	case r.MaxAge <= 0:
		return bad(key+".max_age", "must be a positive duration such as \"24h\"")
	}
	return nil
}

func (c *Config) checkDestinations(bad func(key, format string, args ...any) error, lookupEnv func(string) (string, bool)) error {
	owners := map[string]string{} // lower-cased name or alias → the key that claimed it
	for _, id := range slices.Sorted(maps.Keys(c.Destinations)) {
		d := c.Destinations[id]
		key := "destinations." + id
		if !idPattern.MatchString(id) {
			return bad(key, "has an id that is not letters, digits, - and _")
		}
		for i, n := range append([]string{d.Name}, d.Aliases...) {
			k := key + ".name"
			if i > 0 {
				k = key + ".aliases"
			}
			if n == "" {
				return bad(k, "contains an empty name")
			}
			low := strings.ToLower(n)
			if prev, ok := owners[low]; ok {
				return bad(k, "%q is already used by %s; names and aliases must be unique (case-insensitive)", n, prev)
			}
			owners[low] = k
		}
		if d.BatchSize < 0 || d.BatchSize > 10000 {
			return bad(key+".batch_size", "is %d; it must be between 1 and 10000", d.BatchSize)
		}
		if d.MaxInFlight < 0 || d.MaxInFlight > 64 {
			return bad(key+".max_in_flight", "is %d; it must be between 1 and 64", d.MaxInFlight)
		}
		if d.SHA256 != "" {
			sum, err := hex.DecodeString(d.SHA256)
			if err != nil || len(sum) != sha256.Size {
				return bad(key+".sha256", "is not a SHA-256 in hex (64 characters); `sha256sum %s` or `trackd validate` prints it", d.Plugin)
			}
			d.PluginSHA256 = sum
		}
		for i, t := range d.Types {
			if !slices.Contains(sdk.AllTypes(), t) {
				return bad(key+".types", "has %q, which is not a call type; use %s", t, strings.Join(sdk.AllTypes(), ", "))
			}
			if slices.Contains(d.Types[:i], t) {
				return bad(key+".types", "names %q twice", t)
			}
		}
		for _, g := range [...]struct {
			key   string
			globs []string
		}{{key + ".events", d.Events}, {key + ".exclude_events", d.ExcludeEvents}} {
			for _, p := range g.globs {
				if _, err := path.Match(p, ""); err != nil {
					return bad(g.key, "has a malformed glob %q", p)
				}
			}
		}
		r := c.RetryFor(d)
		if err := checkRetry(key+".retry", r, bad); err != nil {
			return err
		}
		if !d.IsEnabled() {
			continue
		}
		if d.Plugin == "" {
			return bad(key+".plugin", "is missing; name a binary in plugins.dir or give a path")
		}
		d.PluginPath = c.pluginPath(d.Plugin)
		if st, err := os.Stat(d.PluginPath); err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
			return bad(key+".plugin", "%q: no executable at %s; run `make build` or check plugins.dir", d.Plugin, d.PluginPath)
		}
		if err := expandTable(key+".settings", d.Settings, lookupEnv, bad); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) pluginPath(p string) string {
	if strings.ContainsRune(p, filepath.Separator) {
		return c.Resolve(p)
	}
	return filepath.Join(c.Resolve(c.Plugins.Dir), p)
}

// expandTable replaces ${VAR} in every string of a settings table, in place.
func expandTable(key string, t map[string]any, lookupEnv func(string) (string, bool), bad func(key, format string, args ...any) error) error {
	for k, v := range t {
		var err error
		t[k], err = expandValue(key+"."+k, v, lookupEnv, bad)
		if err != nil {
			return err
		}
	}
	return nil
}

func expandValue(key string, v any, lookupEnv func(string) (string, bool), bad func(key, format string, args ...any) error) (any, error) {
	switch v := v.(type) {
	case string:
		s, err := expand(v, lookupEnv)
		if err != nil {
			return nil, bad(key, "%v", err)
		}
		return s, nil
	case map[string]any:
		return v, expandTable(key, v, lookupEnv, bad)
	case []any:
		for i := range v {
			var err error
			if v[i], err = expandValue(fmt.Sprintf("%s[%d]", key, i), v[i], lookupEnv, bad); err != nil {
				return nil, err
			}
		}
		return v, nil
	case []map[string]any:
		for i := range v {
			if err := expandTable(fmt.Sprintf("%s[%d]", key, i), v[i], lookupEnv, bad); err != nil {
				return nil, err
			}
		}
		return v, nil
	}
	return v, nil
}

// expand replaces ${VAR} with the environment's value. A lone $ is left alone
// so that secrets containing dollars need no escaping; $${VAR} writes ${VAR}.
func expand(s string, lookupEnv func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if i > 0 && s[i-1] == '$' {
			b.WriteString(s[:i-1])
			b.WriteString("${")
			s = s[i+2:]
			continue
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("has an unclosed ${ in %q", s)
		}
		name := s[i+2 : i+end]
		val, ok := lookupEnv(name)
		if !ok {
			return "", fmt.Errorf("uses ${%s}, but the environment variable %s is not set", name, name)
		}
		b.WriteString(s[:i])
		b.WriteString(val)
		s = s[i+end+1:]
	}
}
