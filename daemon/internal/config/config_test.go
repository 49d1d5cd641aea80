package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fixture is a config directory with an executable plugin binary named "file".
func fixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bin", "plugins"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "plugins", "file"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func parse(t *testing.T, dir, text string, env map[string]string) (*Config, error) {
	t.Helper()
	return Parse(filepath.Join(dir, "config.toml"), []byte(text), func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
}

func TestDefaults(t *testing.T) {
	dir := fixture(t)
	cfg, err := parse(t, dir, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"nats.url", cfg.NATS.URL, ""},
		{"nats.embedded.listen", cfg.NATS.Embedded.Listen, "127.0.0.1:4222"},
		{"nats.embedded.store_dir", cfg.NATS.Embedded.StoreDir, "data/nats"},
		{"ingest.stream", cfg.Ingest.Stream, "TRACK"},
		{"ingest.subjects", strings.Join(cfg.Ingest.Subjects, ","), "track,track.>"},
		{"ingest.max_event_bytes", cfg.Ingest.MaxEventBytes, 32768},
		{"dedupe.bucket", cfg.Dedupe.Bucket, "TRACK_DEDUPE"},
		{"dedupe.window", cfg.Dedupe.Window, 12 * time.Hour},
		{"nats.replicas", cfg.NATS.Replicas, 1},
		{"dedupe.shards", cfg.Dedupe.Shards, 1},
		{"dedupe.max_keys", cfg.Dedupe.MaxKeys, int64(0)},
		{"dedupe buckets", strings.Join(cfg.Dedupe.Buckets(), ","), "TRACK_DEDUPE"},
		{"http.listen", cfg.HTTP.Listen, ""},
		{"http.subject_prefix", cfg.HTTP.SubjectPrefix, "track"},
		{"http.public_url", cfg.HTTP.PublicURL, ""},
		{"retry.initial", cfg.Retry.Initial, time.Second},
		{"retry.max", cfg.Retry.Max, 5 * time.Minute},
		{"retry.max_attempts", cfg.Retry.MaxAttempts, 10},
		{"retry.max_age", cfg.Retry.MaxAge, 24 * time.Hour},
		{"admin.listen", cfg.Admin.Listen, "127.0.0.1:9090"},
		{"admin.pprof", cfg.Admin.Pprof, false},
		{"plugins.dir", cfg.Plugins.Dir, "bin/plugins"},
		{"shutdown.timeout", cfg.Shutdown.Timeout, 30 * time.Second},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestDestination(t *testing.T) {
	dir := fixture(t)
	cfg, err := parse(t, dir, `
[retry]
max_attempts = 4
[destinations.file]
plugin = "file"
aliases = ["jsonl"]
events = ["Order *"]
[destinations.file.retry]
initial = "2s"
[destinations.file.settings]
path = "${OUT_DIR}/events.jsonl"
nested = { token = "${TOKEN}", list = ["${TOKEN}", 1] }
price = "$5 and $${NOT_A_VAR}"
[destinations.off]
plugin = "missing"
enabled = false
`, map[string]string{"OUT_DIR": "/tmp/out", "TOKEN": "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Destinations["file"]
	if d.ID != "file" || d.Name != "file" || d.BatchSize != 100 || !d.IsEnabled() {
		t.Errorf("defaults not applied: %+v", d)
	}
	if want := filepath.Join(dir, "bin", "plugins", "file"); d.PluginPath != want {
		t.Errorf("PluginPath = %q, want %q", d.PluginPath, want)
	}
	if got := d.Settings["path"]; got != "/tmp/out/events.jsonl" {
		t.Errorf("settings.path = %v", got)
	}
	nested := d.Settings["nested"].(map[string]any)
	if nested["token"] != "s3cret" || nested["list"].([]any)[0] != "s3cret" {
		t.Errorf("nested settings not expanded: %v", nested)
	}
	if got := d.Settings["price"]; got != "$5 and ${NOT_A_VAR}" {
		t.Errorf("settings.price = %q", got)
	}
	r := cfg.RetryFor(d)
	if r.Initial != 2*time.Second || r.MaxAttempts != 4 || r.Max != 5*time.Minute {
		t.Errorf("RetryFor = %+v", r)
	}
	if got := cfg.Enabled(); len(got) != 1 || got[0].ID != "file" {
		t.Errorf("Enabled() = %v", got)
	}
}

// A destination's table starts from DestinationDefaults, a zero counting as
// left out; its settings are the plugin's, numbers included.
func TestDestinationDefaults(t *testing.T) {
	cfg, err := parse(t, fixture(t), `
[destinations.a]
plugin = "file"
[destinations.a.settings]
timeout = 5
[destinations.b]
plugin = "file"
batch_size = 0
direct_timeout = "0s"
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	def := DestinationDefaults()
	for _, d := range cfg.Destinations {
		if d.BatchSize != def.BatchSize || d.MaxInFlight != def.MaxInFlight || d.DirectTimeout != def.DirectTimeout || d.Name != d.ID || !d.IsEnabled() {
			t.Errorf("%s: %+v, want the defaults %+v", d.ID, d, def)
		}
	}
	if got := cfg.Destinations["a"].Settings["timeout"]; got != int64(5) {
		t.Errorf("settings.timeout = %v, want 5", got)
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"unknown top-level key", "[ingest]\nstreem = \"X\"\n", "ingest.streem"},
		{"unknown destination key", "[destinations.file]\nplugin = \"file\"\nbatchsize = 5\n", "destinations.file.batchsize"},
		{"bad duration", "[dedupe]\nwindow = \"12 hours\"\n", "dedupe.window"},
		{"duration as a number", "[retry]\nmax = 5\n", "retry.max"},
		{"duration as an integer, which TOML would take as nanoseconds", "[dedupe]\nwindow = 12\n", `dedupe.window is not a string; write a duration as a string with its unit, such as "12h"`},
		{"duration as a float", "[destinations.a]\nplugin = \"file\"\ndirect_timeout = 1.5\n", "destinations.a.direct_timeout is not a string"},
		{"negative duration", "[dedupe]\nwindow = \"-1s\"\n", "dedupe.window is -1s; a duration cannot be negative"},
		{"negative destination duration", "[destinations.a]\nplugin = \"file\"\n[destinations.a.retry]\nmax = \"-1m\"\n", "destinations.a.retry.max is -1m0s; a duration cannot be negative"},
		{"wrong type", "[ingest]\nmax_event_bytes = \"big\"\n", "ingest.max_event_bytes"},
		{"destinations not a table", "destinations = 5\n", "destinations is a TOML integer, not a table"},
		{"destinations as an array of tables", "[[destinations]]\nplugin = \"file\"\n", "destinations is an array of tables, not a table"},
		{"write keys not a table", "[http]\nlisten = \"127.0.0.1:8088\"\nwrite_keys = [\"k\"]\n", "http.write_keys is a TOML array, not a table"},
		{"settings not a table", "[destinations.a]\nplugin = \"file\"\nsettings = \"x\"\n", "destinations.a.settings is a TOML string, not a table"},
		{"zero window", "[dedupe]\nwindow = \"0s\"\n", "dedupe.window"},
		{"max below initial", "[retry]\ninitial = \"10s\"\nmax = \"1s\"\n", "retry.max"},
		{"destination retry", "[destinations.file]\nplugin = \"file\"\n[destinations.file.retry]\nmax_attempts = -1\n", "destinations.file.retry.max_attempts"},
		{"plugin not found", "[destinations.x]\nplugin = \"nope\"\n", "destinations.x.plugin"},
		{"plugin missing", "[destinations.x]\nname = \"X\"\n", "destinations.x.plugin"},
		{"duplicate name", "[destinations.a]\nplugin = \"file\"\nname = \"Mixpanel\"\n[destinations.b]\nplugin = \"file\"\nname = \"mixpanel\"\n", "destinations.b.name"},
		{"alias clashes with a name", "[destinations.a]\nplugin = \"file\"\nname = \"Mixpanel\"\n[destinations.b]\nplugin = \"file\"\naliases = [\"MIXPANEL\"]\n", "destinations.b.aliases"},
		{"unset variable", "[destinations.a]\nplugin = \"file\"\n[destinations.a.settings]\ntoken = \"${MIXPANEL_TOKEN}\"\n", "destinations.a.settings.token uses ${MIXPANEL_TOKEN}"},
		{"bad glob", "[destinations.a]\nplugin = \"file\"\nevents = [\"[\"]\n", "destinations.a.events"},
		{"bad batch size", "[destinations.a]\nplugin = \"file\"\nbatch_size = -3\n", "destinations.a.batch_size"},
		{"unknown type", "[destinations.a]\nplugin = \"file\"\ntypes = [\"track\", \"pageview\"]\n", `destinations.a.types has "pageview", which is not a call type`},
		{"type twice", "[destinations.a]\nplugin = \"file\"\ntypes = [\"page\", \"page\"]\n", `destinations.a.types names "page" twice`},
		{"overlapping subject", "[ingest]\nsubjects = [\"trackd.dlq.x\"]\n", "ingest.subjects"},
		{"bad log level", "[log]\nlevel = \"loud\"\n", "log.level"},
		{"bad destination id", "[destinations.\"a b\"]\nplugin = \"file\"\n", "destinations.a b"},
		{"not TOML", "[ingest\n", "config.toml line 2: expected"},
		{"replicas on the embedded server", "[nats]\nreplicas = 3\n", "nats.replicas is 3, but the embedded server is one node"},
		{"too many replicas", "[nats]\nurl = \"nats://a:4222\"\nreplicas = 7\n", "nats.replicas is 7"},
		{"no shards", "[dedupe]\nshards = 0\n", "dedupe.shards is 0"},
		{"negative max_keys", "[dedupe]\nmax_keys = -1\n", "dedupe.max_keys is -1"},
		{"http without write keys", "[http]\nlisten = \"127.0.0.1:8088\"\n", "http.write_keys is empty"},
		{"http listen not host:port", "[http]\nlisten = \"8088\"\n[http.write_keys]\nweb = \"k\"\n", "http.listen"},
		{"http empty write key", "[http]\nlisten = \":8088\"\n[http.write_keys]\nweb = \"\"\n", "http.write_keys.web is empty"},
		{"http write key unset variable", "[http]\nlisten = \":8088\"\n[http.write_keys]\nweb = \"${WEB_KEY}\"\n", "http.write_keys.web uses ${WEB_KEY}"},
		{"http shared write key", "[http]\nlisten = \":8088\"\n[http.write_keys]\nios = \"k\"\nweb = \"k\"\n", "http.write_keys.web is the same write key as http.write_keys.ios"},
		{"http bad source name", "[http]\nlisten = \":8088\"\n[http.write_keys]\n\"a.b\" = \"k\"\n", "http.write_keys.a.b"},
		{"http prefix not ingested", "[http]\nlisten = \":8088\"\nsubject_prefix = \"events\"\n[http.write_keys]\nweb = \"k\"\n", "http.subject_prefix \"events\": calls of source web would go to events.web"},
		{"http prefix with a wildcard", "[http]\nlisten = \":8088\"\nsubject_prefix = \"track.*\"\n[http.write_keys]\nweb = \"k\"\n", "http.subject_prefix"},
		{"unknown http key", "[http]\nlisten = \":8088\"\nport = 1\n", "http.port"},
		{"http public_url without a scheme", "[http]\nlisten = \":8088\"\npublic_url = \"trackd.example.com\"\n[http.write_keys]\nweb = \"k\"\n", `http.public_url "trackd.example.com" is not an http or https URL`},
		{"http public_url of another scheme", "[http]\nlisten = \":8088\"\npublic_url = \"ftp://trackd.example.com\"\n[http.write_keys]\nweb = \"k\"\n", "http.public_url"},
		{"http public_url without a host", "[http]\nlisten = \":8088\"\npublic_url = \"https:///v1\"\n[http.write_keys]\nweb = \"k\"\n", "http.public_url"},
		{"http public_url with a query", "[http]\nlisten = \":8088\"\npublic_url = \"https://trackd.example.com/?a=b\"\n[http.write_keys]\nweb = \"k\"\n", "http.public_url \"https://trackd.example.com/?a=b\" has a user, query or fragment"},
		{"http public_url with a user", "[http]\nlisten = \":8088\"\npublic_url = \"https://me@trackd.example.com\"\n[http.write_keys]\nweb = \"k\"\n", "http.public_url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, fixture(t), tt.text, nil)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.HasPrefix(err.Error(), "config.toml") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not start with the file name and name %q", err, tt.want)
			}
		})
	}
}

// A cluster: replicas, sharded buckets, and credentials found next to the file.
func TestCluster(t *testing.T) {
	dir := fixture(t)
	cfg, err := parse(t, dir, `
[nats]
url = "nats://10.0.0.5:4222,nats://10.0.0.6:4222"
replicas = 3
creds = "trackd.creds"
[nats.tls]
ca_file = "/etc/trackd/ca.pem"
[dedupe]
shards = 3
max_keys = 1000000
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(cfg.Dedupe.Buckets(), ","), "TRACK_DEDUPE_0,TRACK_DEDUPE_1,TRACK_DEDUPE_2"; got != want {
		t.Errorf("buckets %s, want %s", got, want)
	}
	if want := filepath.Join(dir, "trackd.creds"); cfg.NATS.Creds != want {
		t.Errorf("nats.creds = %q, want %q (relative to the config file)", cfg.NATS.Creds, want)
	}
	if cfg.NATS.TLS.CAFile != "/etc/trackd/ca.pem" || cfg.NATS.Replicas != 3 || cfg.Dedupe.MaxKeys != 1000000 {
		t.Errorf("parsed %+v %+v", cfg.NATS, cfg.Dedupe)
	}
}

func TestHTTP(t *testing.T) {
	cfg, err := parse(t, fixture(t), `
[ingest]
subjects = ["track", "web.*"]
[http]
listen = "127.0.0.1:8088"
subject_prefix = "web"
public_url = "HTTPS://Trackd.example.com/collect/"
[http.write_keys]
site = "${SITE_KEY}"
app = "$${literal}"
`, map[string]string{"SITE_KEY": "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.HTTP.WriteKeys, map[string]string{"site": "s3cret", "app": "${literal}"}; !reflect.DeepEqual(got, want) {
		t.Errorf("write keys = %v, want %v", got, want)
	}
	// The browser SDKs' settings are built from it: the scheme lower-cased,
	// no trailing slash.
	if got, want := cfg.HTTP.PublicURL, "https://Trackd.example.com/collect"; got != want {
		t.Errorf("public_url = %q, want %q", got, want)
	}
	// Off, the table is not checked: an unset variable is no error.
	if _, err := parse(t, fixture(t), "[http.write_keys]\nweb = \"${UNSET}\"\n", nil); err != nil {
		t.Errorf("http off: %v", err)
	}
}

// The shipped config.toml parses with nothing but its own defaults.
func TestShippedConfig(t *testing.T) {
	data, err := os.ReadFile("../../../config.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir := fixture(t)
	cfg, err := parse(t, dir, string(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Enabled(); len(got) != 1 || got[0].ID != "file" {
		t.Errorf("the shipped config should enable only the file destination, got %v", got)
	}
	if cfg.HTTP.Listen != "127.0.0.1:8088" || cfg.HTTP.WriteKeys["dev"] == "" {
		t.Errorf("the shipped config should serve the tracking API on loopback with a development key, got %+v", cfg.HTTP)
	}
}

// Every key the Config structs accept is documented in the shipped
// config.toml, set or in a comment, so the reference cannot drift.
func TestShippedConfigDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile("../../../config.toml")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			tag := strings.Split(f.Tag.Get("toml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			ft := f.Type
			for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Map && tag == "destinations" {
				ft = ft.Elem()
			}
			if tag == "destinations" {
				walk("destinations.<id>.", ft)
				continue
			}
			if ft.Kind() == reflect.Map {
				if !strings.Contains(doc, "."+tag+"]") {
					t.Errorf("config.toml has no [%s%s] table", prefix, tag)
				}
				continue
			}
			if ft.Kind() == reflect.Struct {
				if !strings.Contains(doc, "["+prefix+tag+"]") && !strings.Contains(doc, "."+tag+"]") {
					t.Errorf("config.toml has no [%s%s] table", prefix, tag)
				}
				walk(prefix+tag+".", ft)
				continue
			}
			if !strings.Contains(doc, "\n"+tag+" = ") && !strings.Contains(doc, "# "+tag+" = ") {
				t.Errorf("config.toml does not document %s%s", prefix, tag)
			}
		}
	}
	walk("", reflect.TypeOf(Config{}))
}
