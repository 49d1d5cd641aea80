// Command pagelog is the example plugin of trackd's README: it takes track
// and page calls and writes one line for each to a file.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"trackd.dev/trackd/sdk"
)

type pageLog struct {
	Path string `toml:"path"`

	mu   sync.Mutex // Deliver may be called again before an earlier call returns
	file *os.File
}

// Configure gets the destination's settings table; an unknown key is an error naming it.
func (p *pageLog) Configure(_ context.Context, settings sdk.Settings) error {
	if err := settings.Decode(p); err != nil {
		return err
	}
	if p.Path == "" {
		return errors.New("path is empty; set it to the file the lines go to")
	}
	f, err := os.OpenFile(p.Path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	p.file = f
	return err
}

// Types says which calls trackd routes here; without it, track calls alone.
func (p *pageLog) Types() []string { return []string{sdk.TypeTrack, sdk.TypePage} }

func (p *pageLog) Deliver(_ context.Context, batch []sdk.Event) []sdk.Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	results := make([]sdk.Result, len(batch))
	for i, e := range batch {
		props, err := e.Properties()
		if err != nil {
			results[i] = sdk.Drop(err.Error()) // dead-lettered with this reason
			continue
		}
		_, err = fmt.Fprintf(p.file, "%s %s %q %s %d properties\n", e.Timestamp.Format("15:04:05"), e.Type, e.Name, e.MessageID, len(props))
		if err != nil {
			results[i] = sdk.Retry(0, err.Error()) // tried again after the host's backoff
			continue
		}
		results[i] = sdk.OK()
	}
	return results
}

// Close is called once before trackd stops the plugin.
func (p *pageLog) Close(context.Context) error { return p.file.Close() }

func main() {
	sdk.Serve(&pageLog{}, sdk.ServeOptions{SampleConfig: "# The file the lines go to.\npath = \"pages.log\"\n"})
}
