package publish

import (
	"context"
	"time"

	"trackd.dev/trackd/sdk"
)

// Event is a Segment-style track call: something the user did.
type Event struct {
	Event        string         // what the user did, such as "Order Completed"; required
	UserID       string         // UserID or AnonymousID is required
	AnonymousID  string         //
	Properties   map[string]any // revenue, currency and value are understood by destinations
	Context      map[string]any // context.library is filled in unless set here
	Integrations map[string]any // per destination: a bool, an object of options, or nil
	MessageID    string         // filled with a new UUID when empty
	// Timestamp is when the event happened, for backfills; when zero the daemon
	// takes the time it received the event, corrected for the producer's clock.
	Timestamp time.Time
}

// Identify is an identify call: who the user is. The fields it shares with
// Event mean what they mean there.
type Identify struct {
	UserID      string         // UserID or AnonymousID is required
	AnonymousID string         //
	Traits      map[string]any // such as email, name or plan; optional

	Context, Integrations map[string]any
	MessageID             string
	Timestamp             time.Time
}

// Page is a page call: a web page the user saw. The fields it shares with
// Event mean what they mean there.
type Page struct {
	Name        string         // such as "Pricing"; optional
	Category    string         // such as "Docs"; optional
	UserID      string         // UserID or AnonymousID is required
	AnonymousID string         //
	Properties  map[string]any // such as url, path, referrer or title

	Context, Integrations map[string]any
	MessageID             string
	Timestamp             time.Time
}

// Screen is a screen call: a screen of a mobile app the user saw. Its fields
// are Page's, Name naming the screen.
type Screen Page

// Group is a group call: the user belongs to a group, such as a company or
// an account. The fields it shares with Event mean what they mean there.
type Group struct {
	GroupID     string         // required
	UserID      string         // UserID or AnonymousID is required
	AnonymousID string         //
	Traits      map[string]any // the group's, such as name, industry or employees

	Context, Integrations map[string]any
	MessageID             string
	Timestamp             time.Time
}

// Alias is an alias call: the user known as PreviousID is now UserID, as
// when an anonymous visitor signs up. The fields it shares with Event mean
// what they mean there.
type Alias struct {
	UserID     string // the new id; required
	PreviousID string // the id the user had, such as an anonymousId; required

	Context, Integrations map[string]any
	MessageID             string
	Timestamp             time.Time
}

// Track checks e as the daemon would, fills in type, messageId,
// originalTimestamp, sentAt and context.library, and publishes it. It returns
// once the event is sent, not stored: Flush or Close reports the events
// JetStream did not store. When MaxInFlight events await their
// acknowledgement, Track waits for a free slot or for ctx to be done.
func (c *Client) Track(ctx context.Context, e Event) (messageID string, err error) {
	return c.send(ctx, call{
		wire:       wireCall{Type: sdk.TypeTrack, Event: e.Event, UserID: e.UserID, AnonymousID: e.AnonymousID, MessageID: e.MessageID},
		required:   []required{{"Event", e.Event, `name what the user did, such as "Order Completed"`}},
		properties: e.Properties, context: e.Context, integrations: e.Integrations, timestamp: e.Timestamp,
	})
}

// Identify publishes an identify call as Track publishes a track call.
func (c *Client) Identify(ctx context.Context, i Identify) (messageID string, err error) {
	return c.send(ctx, call{
		wire:   wireCall{Type: sdk.TypeIdentify, UserID: i.UserID, AnonymousID: i.AnonymousID, MessageID: i.MessageID},
		traits: i.Traits, context: i.Context, integrations: i.Integrations, timestamp: i.Timestamp,
	})
}

// Page publishes a page call as Track publishes a track call.
func (c *Client) Page(ctx context.Context, p Page) (messageID string, err error) {
	return c.send(ctx, p.asCall(sdk.TypePage))
}

// Screen publishes a screen call as Track publishes a track call.
func (c *Client) Screen(ctx context.Context, s Screen) (messageID string, err error) {
	return c.send(ctx, Page(s).asCall(sdk.TypeScreen))
}

// Group publishes a group call as Track publishes a track call.
func (c *Client) Group(ctx context.Context, g Group) (messageID string, err error) {
	return c.send(ctx, call{
		wire:     wireCall{Type: sdk.TypeGroup, GroupID: g.GroupID, UserID: g.UserID, AnonymousID: g.AnonymousID, MessageID: g.MessageID},
		required: []required{{"GroupID", g.GroupID, "set the id of the group the user belongs to; a group call requires it"}},
		traits:   g.Traits, context: g.Context, integrations: g.Integrations, timestamp: g.Timestamp,
	})
}

// Alias publishes an alias call as Track publishes a track call.
func (c *Client) Alias(ctx context.Context, a Alias) (messageID string, err error) {
	return c.send(ctx, call{
		wire: wireCall{Type: sdk.TypeAlias, UserID: a.UserID, PreviousID: a.PreviousID, MessageID: a.MessageID},
		required: []required{
			{"UserID", a.UserID, "set the user's new id; an alias call requires it"},
			{"PreviousID", a.PreviousID, "set the id the user had before, such as their anonymousId; an alias call requires it"},
		},
		context: a.Context, integrations: a.Integrations, timestamp: a.Timestamp,
	})
}

// asCall is p as a call of type typ: page or screen, which have the same fields.
func (p Page) asCall(typ string) call {
	return call{
		wire:       wireCall{Type: typ, Name: p.Name, Category: p.Category, UserID: p.UserID, AnonymousID: p.AnonymousID, MessageID: p.MessageID},
		properties: p.Properties, context: p.Context, integrations: p.Integrations, timestamp: p.Timestamp,
	}
}

// send encodes k and publishes it.
func (c *Client) send(ctx context.Context, k call) (messageID string, err error) {
	// originalTimestamp is the time of the call and sentAt the time of the
	// send: the daemon subtracts the wait between them from the time it
	// received the event, which corrects for the producer's clock.
	body, id, err := c.encode(k, time.Now())
	if err != nil {
		return "", err
	}
	if err := c.publish(ctx, id, body, true); err != nil {
		return "", err
	}
	return id, nil
}
