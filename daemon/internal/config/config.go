// Package config reads trackd's TOML configuration: defaults, ${VAR} expansion,
// and every check that must refuse a bad file at start-up with the key at fault.
package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/dustin/go-humanize"
)

// Config is the whole configuration file.
type Config struct {
	NATS         NATS                    `toml:"nats"`
	Ingest       Ingest                  `toml:"ingest"`
	DLQ          DLQ                     `toml:"dlq"`
	Dedupe       Dedupe                  `toml:"dedupe"`
	HTTP         HTTP                    `toml:"http"`
	Retry        Retry                   `toml:"retry"`
	Admin        Admin                   `toml:"admin"`
	Plugins      Plugins                 `toml:"plugins"`
	Log          Log                     `toml:"log"`
	Shutdown     Shutdown                `toml:"shutdown"`
	Destinations map[string]*Destination `toml:"destinations"`

	// Path is the file the configuration was read from; relative paths in it
	// (store_dir, plugins.dir, plugin paths, NATS credentials and TLS files)
	// are resolved against its directory.
	Path string `toml:"-"`
}

// NATS says which server to use: an embedded one when URL is empty.
type NATS struct {
	URL      string   `toml:"url"`
	Replicas int      `toml:"replicas"`
	Creds    string   `toml:"creds"`
	NKey     string   `toml:"nkey"`
	User     string   `toml:"user"`
	Password string   `toml:"password"`
	Token    string   `toml:"token"`
	TLS      TLS      `toml:"tls"`
	Embedded Embedded `toml:"embedded"`
}

// TLS configures the client side of a TLS connection to an external NATS.
type TLS struct {
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// Embedded configures the in-process nats-server.
type Embedded struct {
	Listen   string `toml:"listen"`
	StoreDir string `toml:"store_dir"`
}

// Ingest is where producers publish.
type Ingest struct {
	Stream        string   `toml:"stream"`
	Subjects      []string `toml:"subjects"`
	MaxEventBytes int      `toml:"max_event_bytes"`
	MaxBytes      Bytes    `toml:"max_bytes"` // the stream's bound; full, it refuses new events
}

// DLQ bounds the dead-letter stream; past either bound its oldest letters go.
type DLQ struct {
	MaxAge   time.Duration `toml:"max_age"`
	MaxBytes Bytes         `toml:"max_bytes"`
}

// Dedupe is the messageId repeat window.
type Dedupe struct {
	Bucket  string        `toml:"bucket"`
	Window  time.Duration `toml:"window"`
	Shards  int           `toml:"shards"`
	MaxKeys int64         `toml:"max_keys"`
}

// Buckets are the names of the dedupe buckets: Bucket itself with one shard,
// else Bucket_0 … Bucket_<Shards-1>.
func (d Dedupe) Buckets() []string {
	if d.Shards <= 1 {
		return []string{d.Bucket}
	}
	names := make([]string, d.Shards)
	for i := range names {
		names[i] = fmt.Sprintf("%s_%d", d.Bucket, i)
	}
	return names
}

// HTTP is the Segment-compatible tracking API; an empty Listen turns it off.
type HTTP struct {
	Listen        string `toml:"listen"`
	SubjectPrefix string `toml:"subject_prefix"`
	// PublicURL is the base URL browsers reach trackd at (a proxy's, when one
	// terminates TLS in front of it), which the browser SDKs' settings send
	// them to; "" means the settings request's own host and scheme.
	PublicURL string `toml:"public_url"`
	// WriteKeys maps a source name to its write key; a call made with a
	// source's key is published to <SubjectPrefix>.<source>.
	WriteKeys map[string]string `toml:"write_keys"`
	// TLS, when its files are set, serves the API over https; the files are
	// read again on reload.
	TLS HTTPTLS `toml:"tls"`
}

// HTTPTLS is the tracking API's certificate and private key, PEM files;
// relative paths are from the config's directory.
type HTTPTLS struct {
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// Retry is the backoff policy for events a destination asks to retry.
// In a destination's own retry table a zero field means "as in [retry]".
type Retry struct {
	Initial     time.Duration `toml:"initial"`
	Max         time.Duration `toml:"max"`
	MaxAttempts int           `toml:"max_attempts"`
	MaxAge      time.Duration `toml:"max_age"`
}

// Admin is the HTTP listener for /metrics, /healthz and /readyz; "" turns it off.
type Admin struct {
	Listen string `toml:"listen"`
	// Pprof also serves Go's profiles (CPU, heap, goroutines, execution
	// traces) under /debug/pprof/, for finding where time and memory go.
	Pprof bool `toml:"pprof"`
}

// Plugins says where plugin binaries are found by name.
type Plugins struct {
	Dir string `toml:"dir"`
}

// Log sets the log level: debug, info, warn or error.
type Log struct {
	Level string `toml:"level"`
}

// Shutdown bounds how long a stopping daemon waits for in-flight batches.
type Shutdown struct {
	Timeout time.Duration `toml:"timeout"`
}

// Destination is one [destinations.<id>] table.
type Destination struct {
	ID            string         `toml:"-"`
	Plugin        string         `toml:"plugin"`
	Name          string         `toml:"name"`
	Aliases       []string       `toml:"aliases"`
	Enabled       *bool          `toml:"enabled"`
	Types         []string       `toml:"types"`  // the call types to take; empty means all its plugin takes
	SHA256        string         `toml:"sha256"` // the plugin binary's pinned checksum, hex; "" pins none
	Events        []string       `toml:"events"`
	ExcludeEvents []string       `toml:"exclude_events"`
	BatchSize     int            `toml:"batch_size"`
	MaxInFlight   int            `toml:"max_in_flight"`
	DirectTimeout time.Duration  `toml:"direct_timeout"`
	Retry         Retry          `toml:"retry"`
	Settings      map[string]any `toml:"settings"`

	// PluginPath is Plugin resolved to an absolute path of a file that exists.
	PluginPath string `toml:"-"`
	// PluginSHA256 is SHA256 decoded; nil when none is pinned.
	PluginSHA256 []byte `toml:"-"`
}

// IsEnabled reports whether the destination receives events; absent means yes.
func (d *Destination) IsEnabled() bool { return d.Enabled == nil || *d.Enabled }

// Bytes is a size, written as a number of bytes or a string such as "8GiB"
// or "500MB".
type Bytes int64

// UnmarshalTOML reads an integer or a size string.
func (b *Bytes) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		*b = Bytes(v)
	case string:
		n, err := humanize.ParseBytes(v)
		if err != nil || n > math.MaxInt64 {
			return fmt.Errorf("%q is not a size such as \"8GiB\" or \"500MB\"", v)
		}
		*b = Bytes(n)
	default:
		return fmt.Errorf("%v is not a size such as \"8GiB\"", v)
	}
	return nil
}

// String writes the size for people: "8.0 GiB".
func (b Bytes) String() string { return humanize.IBytes(uint64(max(b, 0))) }

// Defaults returns the configuration an empty file means. What a
// [destinations.<id>] table leaves out is in DestinationDefaults.
func Defaults() Config {
	return Config{
		NATS: NATS{Replicas: 1, Embedded: Embedded{Listen: "127.0.0.1:4222", StoreDir: "data/nats"}},
		Ingest: Ingest{
			Stream:        "TRACK",
			Subjects:      []string{"track", "track.>"},
			MaxEventBytes: 32768,
			MaxBytes:      8 << 30,
		},
		DLQ:    DLQ{MaxAge: 14 * 24 * time.Hour, MaxBytes: 1 << 30},
		Dedupe: Dedupe{Bucket: "TRACK_DEDUPE", Window: 12 * time.Hour, Shards: 1},
		HTTP:   HTTP{SubjectPrefix: "track"},
		Retry: Retry{
			Initial:     time.Second,
			Max:         5 * time.Minute,
			MaxAttempts: 10,
			MaxAge:      24 * time.Hour,
		},
		Admin:    Admin{Listen: "127.0.0.1:9090"},
		Plugins:  Plugins{Dir: "bin/plugins"},
		Log:      Log{Level: "info"},
		Shutdown: Shutdown{Timeout: 30 * time.Second},
	}
}

// DestinationDefaults returns what a [destinations.<id>] table means by a key
// it leaves out or sets to zero. Besides these, the name is the table's id;
// enabled, left out, means true (IsEnabled); and a zero field of the table's
// retry is [retry]'s (RetryFor).
func DestinationDefaults() Destination {
	return Destination{BatchSize: 100, MaxInFlight: 4, DirectTimeout: 2 * time.Second}
}

// setDefaults fills what the [destinations.<id>] table left out or zero.
func (d *Destination) setDefaults(id string) {
	def := DestinationDefaults()
	d.ID = id
	if d.Name == "" {
		d.Name = id
	}
	if d.BatchSize == 0 {
		d.BatchSize = def.BatchSize
	}
	if d.MaxInFlight == 0 {
		d.MaxInFlight = def.MaxInFlight
	}
	if d.DirectTimeout == 0 {
		d.DirectTimeout = def.DirectTimeout
	}
}

// Load reads, expands and checks the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the configuration: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	return Parse(abs, data, os.LookupEnv)
}

// Parse is Load without the file system read; lookupEnv resolves ${VAR}.
func Parse(path string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	name := filepath.Base(path)
	cfg := Defaults()
	md, err := toml.Decode(string(data), &cfg)
	// Before the decoding error: a duration written as a number, or a table
	// as another value, may be its cause.
	if derr := checkTypes(name, md, &cfg); derr != nil {
		return nil, derr
	}
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			if pe.LastKey != "" {
				return nil, fmt.Errorf("%s line %d: %s: %s", name, pe.Position.Line, pe.LastKey, pe.Message)
			}
			return nil, fmt.Errorf("%s line %d: %s", name, pe.Position.Line, pe.Message)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := unknownKeys(name, md); err != nil {
		return nil, err
	}
	for id, d := range cfg.Destinations {
		d.setDefaults(id)
	}
	cfg.Path = path
	if err := cfg.check(name, lookupEnv); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func unknownKeys(name string, md toml.MetaData) error {
	var unknown []string
	for _, k := range md.Undecoded() {
		// Settings belong to the plugin, which checks them in Configure.
		if len(k) > 3 && k[0] == "destinations" && k[2] == "settings" {
			continue
		}
		unknown = append(unknown, k.String())
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return fmt.Errorf("%s: unknown key %s; check its spelling against the documented keys in config.toml", name, strings.Join(unknown, ", "))
}

// checkTypes refuses what decoding lets through or words badly. For a
// time.Duration: a number, which TOML takes as nanoseconds when it is an
// integer (window = 12 would silently be 12ns) and otherwise refuses as
// "incompatible types"; and a negative duration. For a table of names
// (destinations, http.write_keys, a destination's settings): any other value,
// which decoding drops without a word. It reads md from a decode that may
// have failed, so that a number is reported as such.
func checkTypes(name string, md toml.MetaData, cfg *Config) error {
	for _, key := range md.Keys() {
		v, ok := field(reflect.ValueOf(cfg).Elem(), key)
		switch {
		case !ok:
		case v.Type() == reflect.TypeFor[time.Duration]():
			if md.Type(key...) != "String" {
				return fmt.Errorf("%s: %s is not a string; write a duration as a string with its unit, such as \"12h\" or \"500ms\"", name, key)
			}
			if d := time.Duration(v.Int()); d < 0 {
				return fmt.Errorf("%s: %s is %s; a duration cannot be negative", name, key, d)
			}
		case v.Kind() == reflect.Map && md.Type(key...) != "Hash":
			return fmt.Errorf("%s: %s is %s, not a table; write it as a [%s] table", name, key, tomlType(md.Type(key...)), key)
		}
	}
	return nil
}

// tomlType names a TOML type, as toml.MetaData.Type gives it, for a reason.
func tomlType(t string) string {
	if t == "ArrayHash" {
		return "an array of tables"
	}
	return "a TOML " + strings.ToLower(t)
}

// field returns the value key names in v, a struct decoded from TOML, or a
// zero one in a table that was not decoded; ok is false for a key that names
// no field, and for a value in a table of any values (a destination's
// settings), which is the plugin's to check.
func field(v reflect.Value, key toml.Key) (reflect.Value, bool) {
	for _, k := range key {
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				v = reflect.New(v.Type().Elem())
			}
			v = v.Elem()
		}
		switch v.Kind() {
		case reflect.Struct:
			fields := reflect.VisibleFields(v.Type())
			i := slices.IndexFunc(fields, func(f reflect.StructField) bool {
				tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
				return tag == k
			})
			if i < 0 {
				return reflect.Value{}, false
			}
			v = v.FieldByIndex(fields[i].Index)
		case reflect.Map:
			e := v.MapIndex(reflect.ValueOf(k))
			if !e.IsValid() {
				e = reflect.Zero(v.Type().Elem())
			}
			v = e
		default:
			return reflect.Value{}, false
		}
	}
	return v, v.Kind() != reflect.Interface
}

// Dir is the directory relative paths in the configuration are resolved against.
func (c *Config) Dir() string { return filepath.Dir(c.Path) }

// Resolve returns p as an absolute path, relative paths taken from the config's directory.
func (c *Config) Resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.Dir(), p)
}

// Enabled returns the enabled destinations sorted by id.
func (c *Config) Enabled() []*Destination {
	var out []*Destination
	for _, d := range c.Destinations {
		if d.IsEnabled() {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// RetryFor returns the destination's retry policy with [retry] filling the gaps.
func (c *Config) RetryFor(d *Destination) Retry {
	r := c.Retry
	if d.Retry.Initial != 0 {
		r.Initial = d.Retry.Initial
	}
	if d.Retry.Max != 0 {
		r.Max = d.Retry.Max
	}
	if d.Retry.MaxAttempts != 0 {
		r.MaxAttempts = d.Retry.MaxAttempts
	}
	if d.Retry.MaxAge != 0 {
		r.MaxAge = d.Retry.MaxAge
	}
	return r
}

// RestartOnly lists the sections whose changes a reload cannot apply: the
// NATS connection, the streams and bucket, and the admin and HTTP listeners.
// (The HTTP write keys, subject prefix and public URL are reloaded.)
func RestartOnly(cur, next *Config) []string {
	var out []string
	if !reflect.DeepEqual(cur.NATS, next.NATS) {
		out = append(out, "nats")
	}
	if !reflect.DeepEqual(cur.Ingest, next.Ingest) {
		out = append(out, "ingest")
	}
	if cur.Dedupe != next.Dedupe {
		out = append(out, "dedupe")
	}
	if cur.Admin != next.Admin {
		out = append(out, "admin")
	}
	if cur.HTTP.Listen != next.HTTP.Listen {
		out = append(out, "http.listen")
	}
	if (cur.HTTP.TLS.CertFile == "") != (next.HTTP.TLS.CertFile == "") {
		out = append(out, "http.tls (turning https on or off; new files are read on reload)")
	}
	if cur.DLQ != next.DLQ {
		out = append(out, "dlq")
	}
	return out
}
