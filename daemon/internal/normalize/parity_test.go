package normalize

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"trackd.dev/trackd/sdk/destinationtest"
)

// Plugin authors test against destinationtest.Event, which builds events
// without the daemon: it must give what Normalize gives for the same input.
func TestDestinationtestParity(t *testing.T) {
	received := time.Date(2026, 12, 2, 10, 0, 0, 123456789, time.UTC)
	for _, tr := range []destinationtest.Call{
		{Name: "Order Completed", MessageID: "m1", UserID: "u1", ReceivedAt: received, Properties: `{"revenue":18.9,"currency":"USD"}`},
		{Name: "Signed Up", MessageID: "m2", AnonymousID: "a1", ReceivedAt: received, Context: `{"ip":"10.0.0.1"}`},
		{Name: "Backfilled", MessageID: "m3", UserID: "u1", AnonymousID: "a1", ReceivedAt: received,
			Timestamp: time.Date(2024, 1, 24, 11, 59, 2, 403e6, time.FixedZone("IST", 5*3600+1800))},
		{Name: "Refund <partial> & more", MessageID: "m4", UserID: "u", ReceivedAt: received, Properties: `{"items":[1,2]}`},
		{Type: "identify", MessageID: "m5", UserID: "u", ReceivedAt: received, Traits: `{"email":"a@b.c"}`},
		{Type: "identify", MessageID: "m6", AnonymousID: "a", ReceivedAt: received},
		{Type: "page", Name: "Pricing", MessageID: "m7", UserID: "u", ReceivedAt: received, Properties: `{"url":"https://x"}`},
		{Type: "screen", MessageID: "m8", AnonymousID: "a", ReceivedAt: received},
		{Type: "group", GroupID: "g1", MessageID: "m9", UserID: "u", ReceivedAt: received, Traits: `{"plan":"pro"}`},
		{Type: "alias", PreviousID: "p1", MessageID: "m10", UserID: "u", ReceivedAt: received},
	} {
		want := destinationtest.Event(t, tr)
		in := map[string]any{"messageId": tr.MessageID}
		switch tr.Type {
		case "":
			in["event"] = tr.Name
		case "page", "screen":
			if tr.Name != "" {
				in["name"] = tr.Name
			}
		}
		if tr.Type != "" {
			in["type"] = tr.Type
		}
		for key, value := range map[string]string{"groupId": tr.GroupID, "previousId": tr.PreviousID} {
			if value != "" {
				in[key] = value
			}
		}
		if tr.Traits != "" {
			in["traits"] = json.RawMessage(tr.Traits)
		}
		if tr.UserID != "" {
			in["userId"] = tr.UserID
		}
		if tr.AnonymousID != "" {
			in["anonymousId"] = tr.AnonymousID
		}
		if !tr.Timestamp.IsZero() {
			in["timestamp"] = tr.Timestamp.Format(time.RFC3339Nano)
		}
		if tr.Properties != "" {
			in["properties"] = json.RawMessage(tr.Properties)
		}
		if tr.Context != "" {
			in["context"] = json.RawMessage(tr.Context)
		}
		body, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Normalize(body, tr.ReceivedAt, Options{})
		if err != nil {
			t.Fatalf("%s: %v", tr.Name, err)
		}
		g, w := got.Event, want
		if g.MessageID != w.MessageID || g.Type != w.Type || g.Name != w.Name || g.UserID != w.UserID || g.AnonymousID != w.AnonymousID ||
			g.GroupID != w.GroupID || g.PreviousID != w.PreviousID || !g.Timestamp.Equal(w.Timestamp) {
			t.Errorf("%s: Normalize gives %+v, destinationtest.Event %+v", tr.Name, g, w)
		}
		var gj, wj map[string]any
		if err := json.Unmarshal(g.JSON, &gj); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(w.JSON, &wj); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(gj, wj) {
			t.Errorf("%s: Normalize's JSON\n  %s\ndestinationtest.Event's\n  %s", tr.Name, g.JSON, w.JSON)
		}
	}
}
