package destinationtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/host"
)

// Deliver sends batch to the plugin and returns its results, one per event,
// failing the test if the call itself fails.
func Deliver(t testing.TB, c *host.Client, batch []sdk.Event) []sdk.Result {
	t.Helper()
	results, err := c.Deliver(t.Context(), batch)
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	return results
}

// CheckResults reports each result that does not match the one at its index
// in want, and fails the test if there are not as many. A result matches when
// it has the same Status and RetryAfter and its Reason contains the wanted
// Reason, so that want reads as the plugin's own code would:
//
//	destinationtest.CheckResults(t, results, []sdk.Result{
//		sdk.OK(),
//		sdk.Retry(7*time.Second, "429 Too Many Requests"),
//		sdk.Drop("properties.revenue"),
//	})
func CheckResults(t testing.TB, results, want []sdk.Result) {
	t.Helper()
	if len(results) != len(want) {
		t.Fatalf("%d results, want %d", len(results), len(want))
	}
	for i, r := range results {
		w := want[i]
		if r.Status != w.Status || r.RetryAfter != w.RetryAfter || !strings.Contains(r.Reason, w.Reason) {
			t.Errorf("event %d: %v after %v (%q), want %v after %v with %q", i, r.Status, r.RetryAfter, r.Reason, w.Status, w.RetryAfter, w.Reason)
		}
	}
}

// CheckConfigureError launches the plugin binary and configures it with
// settings, which its Configure must reject with an error containing want,
// such as the name of the setting at fault; anything else fails the test. It
// returns the error for further checks, such as that it quotes no secret.
func CheckConfigureError(t testing.TB, binary string, settings map[string]any, want string) error {
	t.Helper()
	err := Configure(t, Launch(t, binary), settings)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Configure error = %v, want one containing %q", err, want)
	}
	return err
}

// CheckSampleConfig checks the sample settings of the plugin whose source is
// in pluginDir, built as binary (see [Build]):
//
//   - binary --sample-config prints pluginDir/sample.toml exactly, so that it
//     embeds the file rather than a copy;
//   - pluginDir/README.md includes sample.toml verbatim in a ```toml code
//     block, so that the docs cannot drift from it;
//   - the plugin's Configure accepts the settings of sample.toml and of each
//     variant, which rewrites its text: to check that the settings it leaves
//     commented out are valid too, a variant uncomments them, as in
//     strings.NewReplacer("# min_id_length", "min_id_length").Replace.
//
// Configure runs in an empty temporary directory, so that a relative path in
// the sample lands there, and must make no network calls.
func CheckSampleConfig(t testing.TB, pluginDir, binary string, variants ...func(sample string) string) {
	t.Helper()
	sample, err := os.ReadFile(filepath.Join(pluginDir, "sample.toml"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := command(binary, "--sample-config").Output()
	if err != nil {
		t.Fatalf("%s --sample-config: %v", filepath.Base(binary), err)
	}
	if string(out) != string(sample) {
		t.Errorf("--sample-config printed\n%s\nwant sample.toml:\n%s", out, sample)
	}
	readme, err := os.ReadFile(filepath.Join(pluginDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```toml\n"+string(sample)+"```") {
		t.Error("README.md does not include sample.toml verbatim in a toml code block")
	}

	texts := []string{string(sample)}
	for _, v := range variants {
		texts = append(texts, v(string(sample)))
	}
	for i, text := range texts {
		what := "sample.toml"
		if i > 0 {
			what = fmt.Sprintf("variant %d of sample.toml", i)
		}
		var settings map[string]any
		if _, err := toml.Decode(text, &settings); err != nil {
			t.Errorf("%s: %v", what, err)
			continue
		}
		cmd := command(binary)
		cmd.Dir = t.TempDir()
		if err := Configure(t, launch(t, cmd), settings); err != nil {
			t.Errorf("Configure with %s: %v", what, err)
		}
	}
}

// CanonicalJSON re-encodes the JSON value js with object keys sorted, no
// space and numbers as written, so that two payloads that hold the same value
// compare equal as strings. It fails the test if js is not one JSON value.
func CanonicalJSON(t testing.TB, js []byte) string {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(js))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	if _, end := d.Token(); err == nil && !errors.Is(end, io.EOF) {
		err = errors.New("more after the value")
	}
	if err != nil {
		t.Fatalf("invalid JSON %s: %v", js, err)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("re-encode JSON %s: %v", js, err)
	}
	return string(out)
}
