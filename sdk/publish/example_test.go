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
	ctx := context.Background()
	js, stream, stop := exampleServer(ctx)
	defer stop()

	c := publish.New(js, publish.Options{})
	_, err := c.Track(ctx, publish.Event{
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

	var ev struct {
		Type, Event, UserID string
		Properties          map[string]any
		Context             struct{ Library struct{ Name string } }
	}
	exampleStored(ctx, stream, &ev)
	fmt.Println(ev.Type, ev.Event, "by", ev.UserID, ev.Properties, "from", ev.Context.Library.Name)
	// Output:
	// track Order Completed by u1 map[currency:USD revenue:18.9] from trackd-go
}

func ExampleClient_Identify() {
	ctx := context.Background()
	js, stream, stop := exampleServer(ctx)
	defer stop()

	c := publish.New(js, publish.Options{})
	_, err := c.Identify(ctx, publish.Identify{
		UserID: "u1",
		Traits: map[string]any{"email": "ada@example.com", "plan": "pro"},
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range c.Close(ctx) {
		log.Printf("call %s was not stored: %v", f.MessageID, f.Err)
	}

	var ev struct {
		Type, UserID string
		Traits       map[string]any
	}
	exampleStored(ctx, stream, &ev)
	fmt.Println(ev.Type, ev.UserID, ev.Traits)
	// Output:
	// identify u1 map[email:ada@example.com plan:pro]
}

// exampleServer starts a stand-in for trackd's embedded server and its ingest
// stream, and connects to it; stop shuts them down.
func exampleServer(ctx context.Context) (js jetstream.JetStream, stream jetstream.Stream, stop func()) {
	dir, err := os.MkdirTemp("", "publish-example-")
	if err != nil {
		log.Fatal(err)
	}
	srv, err := startServer(dir)
	if err != nil {
		log.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		log.Fatal(err)
	}
	stop = func() {
		nc.Close()
		srv.Shutdown()
		srv.WaitForShutdown()
		os.RemoveAll(dir)
	}
	js, err = jetstream.New(nc, jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	stream, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "TRACK", Subjects: []string{"track", "track.>"}})
	if err != nil {
		log.Fatal(err)
	}
	return js, stream, stop
}

// exampleStored decodes the first message of stream into v.
func exampleStored(ctx context.Context, stream jetstream.Stream, v any) {
	msg, err := stream.GetMsg(ctx, 1)
	if err != nil {
		log.Fatal(err)
	}
	if err := json.Unmarshal(msg.Data, v); err != nil {
		log.Fatal(err)
	}
}
