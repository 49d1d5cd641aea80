package publish_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/sdk/publish"
)

func Example_track() {
	// A stand-in for trackd's embedded server and its ingest stream.
	dir, err := os.MkdirTemp("", "publish-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	srv, err := startServer(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown()
	ctx := context.Background()

	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TRACK", Subjects: []string{"track", "track.>"}})
	if err != nil {
		log.Fatal(err)
	}

	c := publish.New(js, publish.Options{})
	_, err = c.Track(ctx, publish.Event{
		Event:      "Order Completed",
		UserID:     "u1",
		Properties: map[string]any{"revenue": 18.9, "currency": "USD"},
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range c.Close(ctx) {
		log.Printf("event %s was not stored: %v", f.MessageID, f.Err)
	}

	msg, err := stream.GetMsg(ctx, 1)
	if err != nil {
		log.Fatal(err)
	}
	var ev struct {
		Type, Event, UserID string
		Properties          map[string]any
		Context             struct{ Library struct{ Name string } }
	}
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		log.Fatal(err)
	}
	fmt.Println(ev.Type, ev.Event, "by", ev.UserID, ev.Properties, "from", ev.Context.Library.Name)
	// Output:
	// track Order Completed by u1 map[currency:USD revenue:18.9] from trackd-go
}
