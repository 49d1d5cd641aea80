// Command testplugin is a destination plugin for the sdk's own tests. Its
// settings choose what Deliver answers, including answers that break the
// protocol.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"trackd.dev/trackd/sdk"
)

type settings struct {
	// Fail, if set, is the error Configure returns.
	Fail string `toml:"fail"`
	// Answer is what Deliver does: "echo" drops each event with its fields as
	// the reason; "retry" retries each after RetryAfter; "short" returns one
	// result too few; "zero" returns one OK and the rest zero Results;
	// "block" waits for its context to end; "panic" panics.
	Answer     string        `toml:"answer"`
	RetryAfter time.Duration `toml:"retry_after"`
	// Types is what its Types answers; empty means track only.
	Types []string `toml:"types"`
	// Token is a secret setting: the plugin prints it to stderr at Configure.
	Token string `toml:"token"`
	// Closed, if set, is a file Close writes "closed" to.
	Closed string `toml:"closed"`
}

type testPlugin struct {
	s settings
}

func (p *testPlugin) Configure(_ context.Context, s sdk.Settings) error {
	cfg := settings{Answer: "echo"}
	if err := s.Decode(&cfg); err != nil {
		return err
	}
	if cfg.Fail != "" {
		return errors.New(cfg.Fail)
	}
	p.s = cfg
	if cfg.Token != "" {
		fmt.Fprintf(os.Stderr, "token is %s\n", cfg.Token)
	}
	return nil
}

func (p *testPlugin) Types() []string {
	if len(p.s.Types) == 0 {
		return []string{sdk.TypeTrack}
	}
	return p.s.Types
}

func (p *testPlugin) Close(context.Context) error {
	if p.s.Closed == "" {
		return nil
	}
	return os.WriteFile(p.s.Closed, []byte("closed"), 0o644)
}

func (p *testPlugin) Deliver(ctx context.Context, batch []sdk.Event) []sdk.Result {
	// One line through the log package (the process's stderr) and one
	// through os.Stderr (which go-plugin streams over gRPC).
	log.Printf("log: %d events", len(batch))
	fmt.Fprintf(os.Stderr, "stderr: %d events\n", len(batch))

	results := make([]sdk.Result, len(batch))
	switch p.s.Answer {
	case "echo":
		for i, e := range batch {
			results[i] = sdk.Drop(fmt.Sprintf("%s|%s|%s|%s|%s|%s|%s|%s|%s", e.MessageID, e.Type, e.Name, e.UserID,
				e.AnonymousID, e.GroupID, e.PreviousID, e.Timestamp.Format(time.RFC3339Nano), e.JSON))
		}
	case "retry":
		for i := range batch {
			results[i] = sdk.Retry(p.s.RetryAfter, "later")
		}
	case "short":
		results = results[:len(batch)-1]
		for i := range results {
			results[i] = sdk.OK()
		}
	case "zero":
		results[0] = sdk.OK()
	case "block":
		<-ctx.Done()
		log.Printf("deliver: %v", ctx.Err())
		for i := range batch {
			results[i] = sdk.Retry(0, ctx.Err().Error())
		}
	case "panic":
		panic("testplugin: deliberate panic")
	}
	return results
}

func main() {
	sdk.Serve(&testPlugin{}, sdk.ServeOptions{SampleConfig: "# sample settings\nanswer = \"echo\"\n", Secrets: []string{"token"}})
}
