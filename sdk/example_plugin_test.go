package sdk_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/destinationtest"
)

func TestMain(m *testing.M) { destinationtest.Main(m) }

// The README's example plugin is this module's sdk/internal/exampleplugin,
// word for word, and works: it takes the two types it says, writes its lines
// and closes.
func TestReadmeExamplePlugin(t *testing.T) {
	code, err := os.ReadFile("internal/exampleplugin/main.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```go\n"+string(code)+"```\n") {
		t.Error("README.md's example plugin differs from sdk/internal/exampleplugin/main.go; copy the file into the README")
	}

	out := filepath.Join(t.TempDir(), "pages.log")
	c := destinationtest.Launch(t, destinationtest.Build(t, "trackd.dev/trackd/sdk/internal/exampleplugin"))
	types, err := c.Configure(t.Context(), map[string]any{"path": out})
	if err != nil || strings.Join(types, ",") != "track,page" {
		t.Fatalf("Configure = %v, %v; want the types track and page", types, err)
	}
	results := destinationtest.Deliver(t, c, []sdk.Event{
		destinationtest.Event(t, destinationtest.Call{Type: sdk.TypePage, Name: "Home", MessageID: "m1", UserID: "u"}),
		destinationtest.Event(t, destinationtest.Call{Name: "Signed Up", MessageID: "m2", UserID: "u", Properties: `{"plan":"pro"}`}),
	})
	destinationtest.CheckResults(t, results, []sdk.Result{sdk.OK(), sdk.OK()})
	if err := c.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) != 2 ||
		!strings.Contains(lines[0], `page "Home" m1 0 properties`) || !strings.Contains(lines[1], `track "Signed Up" m2 1 properties`) {
		t.Errorf("the plugin wrote %q", b)
	}
}
