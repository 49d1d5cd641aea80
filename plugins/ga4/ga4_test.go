package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/destinationtest"
	"trackd.dev/trackd/sdk/host"
)

func TestMain(m *testing.M) { destinationtest.Main(m) }

const (
	pkg           = "trackd.dev/trackd/plugins/ga4"
	measurementID = "G-TEST12345"
	// A secret no reason or error may contain; the "+" and "/" also check
	// that it is escaped in the query string.
	apiSecret = "Zx9+sEcReT/vAlUe_42"
)

// base is the timestamp of the first event of a batch; event i happened i
// seconds later.
var base = time.Date(2025, 3, 1, 12, 30, 0, 123_000_000, time.UTC)

// batch normalizes tracks the way the daemon does: event i has messageId
// "m-i" and happened i seconds after base.
func batch(t *testing.T, tracks ...destinationtest.Track) []sdk.Event {
	out := make([]sdk.Event, len(tracks))
	for i, tr := range tracks {
		tr.MessageID = fmt.Sprintf("m-%d", i)
		tr.Timestamp = base.Add(time.Duration(i) * time.Second)
		out[i] = destinationtest.Event(t, tr)
	}
	return out
}

// micros is the timestamp_micros of event i of a batch.
func micros(i int) int64 { return base.Add(time.Duration(i) * time.Second).UnixMicro() }

// request is a request to the collector, its body decoded.
type request struct {
	destinationtest.Request
	parsed payload
}

func decode(r destinationtest.Request) (request, error) {
	req := request{Request: r}
	err := json.Unmarshal(r.Body, &req.parsed)
	return req, err
}

// payload is a request body as GA4 reads it; raw parts keep their bytes for
// exact comparison.
type payload struct {
	ClientID        string          `json:"client_id"`
	UserID          json.RawMessage `json:"user_id"`
	TimestampMicros int64           `json:"timestamp_micros"`
	Events          []struct {
		Name            string          `json:"name"`
		Params          json.RawMessage `json:"params"`
		TimestampMicros int64           `json:"timestamp_micros"`
	} `json:"events"`
}

// collector plays /mp/collect. It reads each request as GA4 does (see
// check) and fails the test on one GA4 would not take; else it answers 204,
// as GA4 does, unless answer returns another answer for a client_id.
type collector struct{ *destinationtest.Server }

func newCollector(t *testing.T, answer func(clientID string) destinationtest.Answer) collector {
	return collector{destinationtest.NewServer(t, func(r destinationtest.Request) destinationtest.Answer {
		if err := check(r); err != nil {
			t.Errorf("GA4 would not take this request: %v\n%s", err, r.Body)
			return destinationtest.Answer{Status: http.StatusBadRequest, Body: err.Error()}
		}
		req, err := decode(r)
		if err != nil {
			return destinationtest.Answer{Status: http.StatusBadRequest, Body: "not JSON: " + err.Error()}
		}
		var a destinationtest.Answer
		if answer != nil {
			a = answer(req.parsed.ClientID)
		}
		if a.Status == 0 {
			a.Status = http.StatusNoContent
		}
		return a
	})}
}

// gaName is what GA4 takes as an event or parameter name.
var gaName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,39}$`)

// valueLimits are the parameters whose values may be longer than 100
// characters, and their limits.
var valueLimits = map[string]int{"page_location": 1000, "page_title": 300, "page_referrer": 420}

// check reads a request the way the Measurement Protocol does and says what
// GA4 would not take: the wrong method, path, query or content type; a body
// field it does not know, or one in the wrong place or of the wrong type;
// names and values beyond its rules and limits. Reserved event names are
// left to TestEventNames: screen calls send one on purpose (see README.md).
func check(r destinationtest.Request) error {
	want := url.Values{"measurement_id": {measurementID}, "api_secret": {apiSecret}}
	switch {
	case r.Method != http.MethodPost || r.Path != "/mp/collect":
		return fmt.Errorf("%s %s, want POST /mp/collect", r.Method, r.Path)
	case r.Query.Encode() != want.Encode():
		return fmt.Errorf("query %q, want measurement_id and api_secret alone", r.Query.Encode())
	case r.Header.Get("Content-Type") != "application/json":
		return fmt.Errorf("Content-Type %q, want application/json", r.Header.Get("Content-Type"))
	case len(r.Body) >= 130_000:
		return fmt.Errorf("body of %d bytes, want under 130 kB", len(r.Body))
	}
	var body struct {
		ClientID        *string `json:"client_id"`
		UserID          *string `json:"user_id"`
		TimestampMicros *int64  `json:"timestamp_micros"`
		Events          []struct {
			Name            string                     `json:"name"`
			Params          map[string]json.RawMessage `json:"params"`
			TimestampMicros *int64                     `json:"timestamp_micros"`
		} `json:"events"`
	}
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		return fmt.Errorf("body: %v", err)
	}
	switch {
	case body.ClientID == nil || *body.ClientID == "":
		return errors.New("no client_id")
	case body.UserID != nil && *body.UserID == "":
		return errors.New(`user_id is ""`)
	case len(body.Events) == 0 || len(body.Events) > 25:
		return fmt.Errorf("%d events, want 1 to 25", len(body.Events))
	}
	for i, e := range body.Events {
		if !gaName.MatchString(e.Name) {
			return fmt.Errorf("events[%d].name %q is not a GA4 name", i, e.Name)
		}
		if len(e.Params) > 25 {
			return fmt.Errorf("events[%d] has %d params, want at most 25", i, len(e.Params))
		}
		for key, raw := range e.Params {
			at := fmt.Sprintf("events[%d].params.%s", i, key)
			if key == "items" {
				if err := checkItems(at, raw); err != nil {
					return err
				}
				continue
			}
			if err := checkParam(at, key, raw); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkParam checks one parameter: GA4 takes flat strings and numbers, and
// discards the whole event for a nested one.
func checkParam(at, key string, raw json.RawMessage) error {
	if !gaName.MatchString(key) || strings.HasPrefix(strings.ToLower(key), "ga_") ||
		strings.HasPrefix(strings.ToLower(key), "google_") || strings.HasPrefix(strings.ToLower(key), "firebase_") {
		return fmt.Errorf("%s: not a name GA4 takes", at)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("%s: %v", at, err)
	}
	switch v := v.(type) {
	case float64:
		return nil
	case string:
		limit, ok := valueLimits[key]
		if !ok {
			limit = 100
		}
		if n := utf8.RuneCountInString(v); n > limit {
			return fmt.Errorf("%s is %d characters, over GA4's %d", at, n, limit)
		}
		return nil
	}
	return fmt.Errorf("%s is %s, not a string or a number", at, raw)
}

func checkItems(at string, raw json.RawMessage) error {
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return fmt.Errorf("%s is not an array of objects: %v", at, err)
	}
	for i, it := range items {
		if it["item_id"] == nil && it["item_name"] == nil {
			return fmt.Errorf("%s[%d] has neither item_id nor item_name", at, i)
		}
		for key, v := range it {
			if err := checkParam(fmt.Sprintf("%s[%d].%s", at, i, key), key, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// all returns the requests, ordered by client_id and then by the time of
// their first event, since requests for different users run concurrently.
func (c collector) all() []request {
	var out []request
	for _, r := range c.Requests() {
		req, _ := decode(r) // the collector answered 400 to a body that does not decode
		out = append(out, req)
	}
	slices.SortStableFunc(out, func(a, b request) int {
		if n := strings.Compare(a.parsed.ClientID, b.parsed.ClientID); n != 0 {
			return n
		}
		return int(a.parsed.TimestampMicros - b.parsed.TimestampMicros)
	})
	return out
}

func start(t *testing.T, endpoint string, extra map[string]any) *host.Client {
	t.Helper()
	settings := map[string]any{
		"measurement_id": measurementID,
		"api_secret":     apiSecret,
		"endpoint":       endpoint,
	}
	for k, v := range extra {
		settings[k] = v
	}
	return destinationtest.Start(t, destinationtest.Build(t, pkg), settings)
}

func deliver(t *testing.T, c *host.Client, events []sdk.Event) []sdk.Result {
	t.Helper()
	results := destinationtest.Deliver(t, c, events)
	for i, r := range results {
		if strings.Contains(r.Reason, apiSecret) || strings.Contains(r.Reason, url.QueryEscape(apiSecret)) {
			t.Errorf("event %d: reason %q holds the API secret", i, r.Reason)
		}
	}
	return results
}

func compact(t *testing.T, js string) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(js)); err != nil {
		t.Fatalf("bad JSON in test: %v\n%s", err, js)
	}
	return buf.String()
}

func TestOrderCompleted(t *testing.T) {
	col := newCollector(t, nil)
	c := start(t, col.URL, nil)
	results := deliver(t, c, batch(t, destinationtest.Track{
		Name:        "order completed",
		UserID:      "u-1",
		AnonymousID: "anon-1",
		Properties:  `{"order_id":"T_12345","total":12.21,"currency":"usd","shipping":3.33,"tax":1.11}`,
	}))
	if results[0] != sdk.OK() {
		t.Fatalf("result %+v, want ok", results[0])
	}

	reqs := col.all()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Method != http.MethodPost || r.Path != "/mp/collect" {
		t.Errorf("request %s %s, want POST /mp/collect", r.Method, r.Path)
	}
	wantQuery := url.Values{"measurement_id": {measurementID}, "api_secret": {apiSecret}}
	if r.Query.Encode() != wantQuery.Encode() {
		t.Errorf("query %q, want %q", r.Query.Encode(), wantQuery.Encode())
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	want := compact(t, fmt.Sprintf(`{
		"client_id": "anon-1",
		"user_id": "u-1",
		"timestamp_micros": %d,
		"events": [{
			"name": "purchase",
			"params": {"value": 12.21, "currency": "USD", "transaction_id": "T_12345", "shipping": 3.33, "tax": 1.11},
			"timestamp_micros": %[1]d
		}]
	}`, micros(0)))
	if string(r.Body) != want {
		t.Errorf("body\n%s\nwant\n%s", r.Body, want)
	}
}

func TestEventNames(t *testing.T) {
	long := strings.Repeat("abcdefghij", 6) // 60 characters
	tests := []struct {
		segment string
		want    string // the GA4 name, or "" when dropped
		reason  string // part of the drop reason
	}{
		{segment: "Order Completed", want: "purchase"},
		{segment: "ORDER REFUNDED", want: "refund"},
		{segment: "Checkout Started", want: "begin_checkout"},
		{segment: "Payment Info Entered", want: "add_payment_info"},
		{segment: "Cart Viewed", want: "view_cart"},
		{segment: "Product Added", want: "add_to_cart"},
		{segment: "product removed", want: "remove_from_cart"},
		{segment: "Product Viewed", want: "view_item"},
		{segment: "Product Clicked", want: "select_item"},
		{segment: "Product List Viewed", want: "view_item_list"},
		{segment: "Product Added to Wishlist", want: "add_to_wishlist"},
		{segment: "Products Searched", want: "search"},
		{segment: "Promotion Viewed", want: "view_promotion"},
		{segment: "Promotion Clicked", want: "select_promotion"},
		{segment: "Signed Up", want: "sign_up"},
		{segment: "Signed In", want: "login"},
		{segment: "earn virtual currency", want: "earn_virtual_currency"},
		{segment: "purchase", want: "purchase"},
		{segment: "Video Played (HD) v2.1", want: "Video_Played_HD_v21"},
		{segment: long, want: long[:40]},
		{segment: "1234_sign_up", reason: `event name "1234_sign_up" does not start with a letter`},
		{segment: "_private", reason: "does not start with a letter"},
		{segment: "¿¡!", reason: "has none of the letters, digits and underscores"},
		{segment: "firebase_x", reason: `starts with "firebase_", a prefix GA4 reserves`},
		{segment: "Google Thing", reason: `event name "Google Thing" ("Google_Thing" in GA4) starts with "google_"`},
		{segment: "ga_custom", reason: `starts with "ga_"`},
		{segment: "session_start", reason: "reserved for an event GA4 collects itself"},
		{segment: "First Visit", reason: "reserved"},
		{segment: "user_engagement", reason: "reserved"},
		{segment: "app_remove", reason: "reserved"},
	}
	col := newCollector(t, nil)
	c := start(t, col.URL, nil)
	tracks := make([]destinationtest.Track, len(tests))
	for i, tt := range tests {
		tracks[i] = destinationtest.Track{Name: tt.segment, AnonymousID: "anon-1"}
	}
	results := deliver(t, c, batch(t, tracks...))

	var wantNames []string
	for i, tt := range tests {
		r := results[i]
		if tt.want != "" {
			wantNames = append(wantNames, tt.want)
			if r != sdk.OK() {
				t.Errorf("%q: %+v, want ok", tt.segment, r)
			}
			continue
		}
		if r.Status != sdk.StatusDrop || !strings.Contains(r.Reason, tt.reason) {
			t.Errorf("%q: %v %q, want drop with a reason containing %q", tt.segment, r.Status, r.Reason, tt.reason)
		}
	}
	reqs := col.all()
	var got []string
	for _, r := range reqs {
		for _, e := range r.parsed.Events {
			got = append(got, e.Name)
		}
	}
	if !slices.Equal(got, wantNames) {
		t.Errorf("GA4 received events\n%q\nwant\n%q", got, wantNames)
	}
}

func TestParams(t *testing.T) {
	long := strings.Repeat("x", 99) + "é€" // 101 characters
	var many []string
	for i := 1; i <= 30; i++ {
		many = append(many, fmt.Sprintf(`"p%02d":%d`, i, i))
	}
	var first23 []string
	for i := 1; i <= 23; i++ {
		first23 = append(first23, fmt.Sprintf(`"p%02d":%d`, i, i))
	}
	conversion := map[string]any{"convert_to": "USD", "rates": map[string]any{"EUR": 1.08}}

	tests := []struct {
		name     string
		settings map[string]any
		event    string
		props    string
		want     string // the event's params
		reason   string // or part of the drop reason
	}{
		{
			name:  "products become items",
			event: "Order Completed",
			props: `{
				"checkout_id": "fksdjfsdjfisjf9sdfjsd9f", "order_id": "50314b8e9bcf000000000000",
				"affiliation": "Google Store", "total": 27.50, "revenue": 25.00, "shipping": 3,
				"tax": 2, "discount": 2.5, "coupon": "hasbros", "currency": "usd",
				"products": [
					{"product_id": "507f1f77bcf86cd799439011", "sku": "45790-32", "name": "Monopoly: 3rd Edition",
					 "price": 19, "quantity": 1, "category": "Games", "brand": "Hasbro", "variant": "standard",
					 "coupon": "MAYDEALS", "position": 1, "url": "https://www.example.com/product/path"},
					{"sku": "46493-32", "name": "Uno Card Game", "price": "3", "quantity": 2, "category": "Games"},
					{"url": "https://www.example.com/neither/id/nor/name"},
					"not an object"
				]
			}`,
			want: `{"value":27.5,"currency":"USD","transaction_id":"50314b8e9bcf000000000000","coupon":"hasbros",
				"shipping":3,"tax":2,"affiliation":"Google Store","items":[
					{"item_id":"507f1f77bcf86cd799439011","item_name":"Monopoly: 3rd Edition","coupon":"MAYDEALS","index":1,
					 "item_brand":"Hasbro","item_category":"Games","item_variant":"standard","price":19,"quantity":1},
					{"item_id":"46493-32","item_name":"Uno Card Game","item_category":"Games","price":3,"quantity":2}
				],"checkout_id":"fksdjfsdjfisjf9sdfjsd9f","discount":2.5}`,
		},
		{
			name:  "value from revenue, currency defaults to USD",
			event: "Order Completed",
			props: `{"order_id": 1001, "revenue": "9.99"}`,
			want:  `{"value":9.99,"currency":"USD","transaction_id":"1001"}`,
		},
		{
			name:  "value before revenue",
			event: "Subscription Renewed",
			props: `{"revenue": 7, "value": 5, "currency": "eur"}`,
			want:  `{"value":5,"currency":"EUR"}`,
		},
		{
			name:  "currency without an amount",
			event: "Quote Requested",
			props: `{"currency": "gbp"}`,
			want:  `{"currency":"GBP"}`,
		},
		{
			name:     "conversion with a rates table",
			settings: conversion,
			event:    "Order Completed",
			props:    `{"total": 18.9, "shipping": 2, "currency": "EUR", "products": [{"sku": "A", "price": 10}]}`,
			want:     `{"value":20.412,"currency":"USD","shipping":2.16,"items":[{"item_id":"A","price":10.8}]}`,
		},
		{
			name:     "conversion leaves the target currency alone",
			settings: conversion,
			event:    "Order Completed",
			props:    `{"total": 18.9}`,
			want:     `{"value":18.9,"currency":"USD"}`,
		},
		{
			name:     "conversion without a rate",
			settings: conversion,
			event:    "Order Completed",
			props:    `{"total": 18.9, "currency": "GBP"}`,
			reason:   "currency GBP has no rate to USD",
		},
		{
			name:   "malformed total",
			event:  "Order Completed",
			props:  `{"total": "lots", "revenue": 3}`,
			reason: "properties.total",
		},
		{
			name:   "malformed shipping",
			event:  "Order Completed",
			props:  `{"total": 3, "shipping": {"amount": 1}}`,
			reason: "properties.shipping",
		},
		{
			name:   "malformed product price",
			event:  "Checkout Started",
			props:  `{"products": [{"sku": "A", "price": 1}, {"sku": "B", "price": "free"}]}`,
			reason: "properties.products[1].price",
		},
		{
			name:   "malformed currency",
			event:  "Order Completed",
			props:  `{"total": 3, "currency": "dollars"}`,
			reason: "properties.currency",
		},
		{
			name:  "search term",
			event: "Products Searched",
			props: `{"query": "blue hotpants"}`,
			want:  `{"search_term":"blue hotpants"}`,
		},
		{
			name:  "query is only a search term for search",
			event: "Help Searched",
			props: `{"query": "refunds"}`,
			want:  `{"query":"refunds"}`,
		},
		{
			name:  "single product",
			event: "Product Added",
			props: `{"cart_id": "skdjsidjsdkdj29j", "product_id": "507f1f77bcf86cd799439011", "sku": "G-32",
				"category": "Games", "name": "Monopoly: 3rd Edition", "brand": "Hasbro", "variant": "200 pieces",
				"price": 18.99, "quantity": 1, "coupon": "MAYDEALS", "position": 3}`,
			want: `{"currency":"USD","coupon":"MAYDEALS","items":[{"item_id":"507f1f77bcf86cd799439011",
				"item_name":"Monopoly: 3rd Edition","coupon":"MAYDEALS","index":3,"item_brand":"Hasbro",
				"item_category":"Games","item_variant":"200 pieces","price":18.99,"quantity":1}],
				"cart_id":"skdjsidjsdkdj29j"}`,
		},
		{
			name:  "list viewed",
			event: "Product List Viewed",
			props: `{"list_id": "hot_deals_1", "category": "Deals", "products": [{"product_id": "p1", "position": 1}]}`,
			want:  `{"item_list_id":"hot_deals_1","item_list_name":"Deals","items":[{"item_id":"p1","index":1}]}`,
		},
		{
			name:  "promotion",
			event: "Promotion Viewed",
			props: `{"promotion_id": "promo_1", "creative": "top_banner_2", "name": "75% store-wide shoe sale", "position": "home_banner_top"}`,
			want:  `{"promotion_id":"promo_1","promotion_name":"75% store-wide shoe sale","creative_name":"top_banner_2","creative_slot":"home_banner_top"}`,
		},
		{
			name:  "payment info",
			event: "Payment Info Entered",
			props: `{"checkout_id": "39f39fj39f3jf93fj9fj39fj3f", "order_id": "dkfsjidfjsdifsdfksdjfkdsfjsdfkdsf", "payment_method": "Visa"}`,
			want:  `{"transaction_id":"dkfsjidfjsdifsdfksdjfkdsfjsdfkdsf","payment_type":"Visa","checkout_id":"39f39fj39f3jf93fj9fj39fj3f"}`,
		},
		{
			name:  "custom properties",
			event: "Video Played",
			props: `{"title": "` + long + `", "Play Count": 3, "is_hd": true, "muted": false, "nested": {"a": 1},
				"list": [1, 2], "gone": null, "_private": 1, "ga_thing": 2, "Google_x": 3, "firebase_conversion": 1,
				"9lives": 1, "a property name that goes on and on and on": "x", "play-count": "dup",
				"session_id": "1712345", "engagement_time_msec": 1200}`,
			want: `{"title":"` + long[:len(long)-len("€")] + `","Play_Count":3,"is_hd":"true","muted":"false",
				"a_property_name_that_goes_on_and_on_and_":"x","playcount":"dup","session_id":"1712345",
				"engagement_time_msec":1200}`,
		},
		{
			name:  "at most 25 params",
			event: "Survey Answered",
			props: `{` + strings.Join(many, ",") + `}`,
			want:  `{` + strings.Join(many[:25], ",") + `}`,
		},
		{
			name:  "mapped params come first",
			event: "Survey Answered",
			props: `{` + strings.Join(many, ",") + `,"value": 1}`,
			want:  `{"value":1,"currency":"USD",` + strings.Join(first23, ",") + `}`,
		},
		{
			name:  "no properties",
			event: "Signed Up",
			want:  `{}`,
		},
	}
	bin := destinationtest.Build(t, pkg)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			col := newCollector(t, nil)
			settings := map[string]any{"measurement_id": measurementID, "api_secret": apiSecret, "endpoint": col.URL}
			for k, v := range tt.settings {
				settings[k] = v
			}
			c := destinationtest.Start(t, bin, settings)
			results := deliver(t, c, batch(t, destinationtest.Track{Name: tt.event, UserID: "u-1", Properties: tt.props}))
			reqs := col.all()
			if tt.reason != "" {
				if results[0].Status != sdk.StatusDrop || !strings.Contains(results[0].Reason, tt.reason) {
					t.Errorf("%v %q, want drop with a reason containing %q", results[0].Status, results[0].Reason, tt.reason)
				}
				if len(reqs) != 0 {
					t.Errorf("a dropped event was sent: %s", reqs[0].Body)
				}
				return
			}
			if results[0] != sdk.OK() {
				t.Fatalf("%+v, want ok", results[0])
			}
			if len(reqs) != 1 || len(reqs[0].parsed.Events) != 1 {
				t.Fatalf("got %d requests, want 1 with 1 event", len(reqs))
			}
			if got, want := string(reqs[0].parsed.Events[0].Params), compact(t, tt.want); got != want {
				t.Errorf("params\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func TestBatching(t *testing.T) {
	col := newCollector(t, nil)
	c := start(t, col.URL, nil)

	// 30 events of one user, then an anonymous user and a known user
	// without an anonymousId interleaved.
	var tracks []destinationtest.Track
	for i := range 30 {
		tracks = append(tracks, destinationtest.Track{Name: fmt.Sprintf("Step %d", i), UserID: "u-1", AnonymousID: "anon-1"})
	}
	for i := range 3 {
		tracks = append(tracks,
			destinationtest.Track{Name: fmt.Sprintf("Anon %d", i), AnonymousID: "anon-2"},
			destinationtest.Track{Name: fmt.Sprintf("Known %d", i), UserID: "u-3"})
	}
	for i, r := range deliver(t, c, batch(t, tracks...)) {
		if r != sdk.OK() {
			t.Errorf("event %d: %+v, want ok", i, r)
		}
	}

	type sent struct {
		clientID, userID string
		micros           int64
		names            []string
		eventMicros      []int64
	}
	var got []sent
	for _, r := range col.all() {
		s := sent{clientID: r.parsed.ClientID, userID: string(r.parsed.UserID), micros: r.parsed.TimestampMicros}
		for _, e := range r.parsed.Events {
			s.names = append(s.names, e.Name)
			s.eventMicros = append(s.eventMicros, e.TimestampMicros)
		}
		got = append(got, s)
	}
	names := func(prefix string, from, to int) (n []string) {
		for i := from; i < to; i++ {
			n = append(n, fmt.Sprintf("%s_%d", prefix, i))
		}
		return n
	}
	span := func(idx ...int) (m []int64) {
		for _, i := range idx {
			m = append(m, micros(i))
		}
		return m
	}
	seq := func(from, to, step int) (idx []int) {
		for i := from; i < to; i += step {
			idx = append(idx, i)
		}
		return idx
	}
	want := []sent{
		{clientID: "anon-1", userID: `"u-1"`, micros: micros(0), names: names("Step", 0, 25), eventMicros: span(seq(0, 25, 1)...)},
		{clientID: "anon-1", userID: `"u-1"`, micros: micros(25), names: names("Step", 25, 30), eventMicros: span(seq(25, 30, 1)...)},
		{clientID: "anon-2", micros: micros(30), names: names("Anon", 0, 3), eventMicros: span(30, 32, 34)},
		{clientID: "u-3", userID: `"u-3"`, micros: micros(31), names: names("Known", 0, 3), eventMicros: span(31, 33, 35)},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d requests %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.clientID != w.clientID || g.userID != w.userID || g.micros != w.micros ||
			!slices.Equal(g.names, w.names) || !slices.Equal(g.eventMicros, w.eventMicros) {
			t.Errorf("request %d:\n%+v\nwant\n%+v", i, g, w)
		}
	}
}

func TestLargeEventsSplitBySize(t *testing.T) {
	col := newCollector(t, nil)
	c := start(t, col.URL, nil)
	var products []string
	for i := range 60 {
		products = append(products, fmt.Sprintf(`{"product_id": "p%d", "name": "%s", "price": 1}`, i, strings.Repeat("n", 100)))
	}
	props := `{"products": [` + strings.Join(products, ",") + `]}`
	var tracks []destinationtest.Track
	for range 25 {
		tracks = append(tracks, destinationtest.Track{Name: "Cart Viewed", AnonymousID: "anon-1", Properties: props})
	}
	for i, r := range deliver(t, c, batch(t, tracks...)) {
		if r != sdk.OK() {
			t.Errorf("event %d: %+v, want ok", i, r)
		}
	}
	reqs := col.all()
	if len(reqs) < 2 {
		t.Fatalf("%d requests for 25 events of about 9 kB each, want them split to stay under 130 kB", len(reqs))
	}
	total := 0
	for _, r := range reqs {
		if len(r.Body) >= 130_000 {
			t.Errorf("a request body is %d bytes, want under 130 kB", len(r.Body))
		}
		total += len(r.parsed.Events)
	}
	if total != 25 {
		t.Errorf("%d events sent, want 25", total)
	}
}

func TestResults(t *testing.T) {
	col := newCollector(t, func(clientID string) destinationtest.Answer {
		switch clientID {
		case "limited":
			return destinationtest.Answer{Status: http.StatusTooManyRequests, Header: map[string]string{"Retry-After": "7"}}
		case "broken":
			return destinationtest.Answer{Status: http.StatusInternalServerError}
		case "bad":
			return destinationtest.Answer{Status: http.StatusBadRequest, Body: "bad thing in request ?api_secret=" + url.QueryEscape(apiSecret) + " (" + apiSecret + ")"}
		}
		return destinationtest.Answer{}
	})
	c := start(t, col.URL, nil)
	events := batch(t,
		destinationtest.Track{Name: "Signed In", AnonymousID: "limited"},
		destinationtest.Track{Name: "Signed In", AnonymousID: "broken"},
		destinationtest.Track{Name: "Signed In", AnonymousID: "bad"},
		destinationtest.Track{Name: "Signed In", AnonymousID: "fine"},
		destinationtest.Track{Name: "Signed In", AnonymousID: "limited"},
	)
	destinationtest.CheckResults(t, deliver(t, c, events), []sdk.Result{
		sdk.Retry(7*time.Second, "429"),
		sdk.Retry(0, "500"),
		sdk.Drop("400 Bad Request: bad thing in request ?api_secret=[api_secret] ([api_secret])"),
		sdk.OK(),
		sdk.Retry(7*time.Second, "429"),
	})
	if n := len(col.all()); n != 4 {
		t.Errorf("%d requests, want 4: one per client_id", n)
	}
}

func TestUnreachableRetries(t *testing.T) {
	c := start(t, destinationtest.HangUpURL(t), nil)
	results := deliver(t, c, batch(t, destinationtest.Track{Name: "Signed Up", UserID: "u-1"}))
	if results[0].Status != sdk.StatusRetry {
		t.Errorf("unreachable endpoint: %v (%q), want retry", results[0].Status, results[0].Reason)
	}
}

func TestConfigureErrors(t *testing.T) {
	bin := destinationtest.Build(t, pkg)
	valid := func(change map[string]any) map[string]any {
		s := map[string]any{"measurement_id": measurementID, "api_secret": apiSecret}
		for k, v := range change {
			if v == nil {
				delete(s, k)
			} else {
				s[k] = v
			}
		}
		return s
	}
	tests := []struct {
		name     string
		settings map[string]any
		want     string
	}{
		{"missing measurement_id", valid(map[string]any{"measurement_id": nil}), "measurement_id is empty"},
		{"universal analytics id", valid(map[string]any{"measurement_id": "UA-1234-1"}), `measurement_id "UA-1234-1" is not a GA4 measurement ID`},
		{"missing api_secret", valid(map[string]any{"api_secret": nil}), "api_secret is empty; set it or ${GA4_API_SECRET}"},
		{"api_secret with spaces", valid(map[string]any{"api_secret": " " + apiSecret + "\n"}), "api_secret starts or ends with white space"},
		{"endpoint not http", valid(map[string]any{"endpoint": "ftp://example.com"}), `endpoint "ftp://example.com" is not an http:// or https:// base URL`},
		{"endpoint with query", valid(map[string]any{"endpoint": "https://example.com/?a=b"}), "endpoint"},
		{"bad timeout", valid(map[string]any{"timeout": "soon"}), `setting "timeout"`},
		{"zero timeout", valid(map[string]any{"timeout": "0s"}), "timeout 0s is too short"},
		{"rates without convert_to", valid(map[string]any{"rates": map[string]any{"EUR": 1.08}}), "convert_to is empty"},
		{"lower-case convert_to", valid(map[string]any{"convert_to": "usd"}), `convert_to "usd"`},
		{"bad rate", valid(map[string]any{"convert_to": "USD", "rates": map[string]any{"EUR": 0.0}}), "rates.EUR"},
		{"unknown setting", valid(map[string]any{"apisecret": "x"}), `unknown setting "apisecret"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := destinationtest.CheckConfigureError(t, bin, tt.settings, tt.want)
			if err != nil && strings.Contains(err.Error(), apiSecret) {
				t.Errorf("Configure error %q holds the API secret", err)
			}
		})
	}
}

func TestEndpointTrailingSlash(t *testing.T) {
	col := newCollector(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{
		"measurement_id": measurementID, "api_secret": apiSecret, "endpoint": col.URL + "/",
	})
	deliver(t, c, batch(t, destinationtest.Track{Name: "Signed Up", UserID: "u-1"}))
	if reqs := col.all(); len(reqs) != 1 || reqs[0].Path != "/mp/collect" {
		t.Errorf("requests %+v, want one to /mp/collect", reqs)
	}
}

func TestSampleConfig(t *testing.T) {
	// Configure makes no network calls, so Google is never contacted; the
	// placeholder "${GA4_API_SECRET}" stands for the secret the daemon
	// would substitute.
	destinationtest.CheckSampleConfig(t, ".", destinationtest.Build(t, pkg),
		// The commented-out rates are valid with a convert_to.
		strings.NewReplacer(`convert_to = ""`, `convert_to = "USD"`, "# rates", "rates").Replace)
}

func TestCheckRejectsWhatGA4Would(t *testing.T) {
	good := `{"client_id":"c","events":[{"name":"page_view","params":{"page_location":"https://example.com/"}}]}`
	query := url.Values{"measurement_id": {measurementID}, "api_secret": {apiSecret}}
	request := func(body string, change func(*destinationtest.Request)) destinationtest.Request {
		r := destinationtest.Request{
			Method: http.MethodPost, Path: "/mp/collect", Query: query,
			Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(body),
		}
		if change != nil {
			change(&r)
		}
		return r
	}
	if err := check(request(good, nil)); err != nil {
		t.Fatalf("check refuses a good request: %v", err)
	}
	tests := []struct {
		name string
		req  destinationtest.Request
	}{
		{"secret in the body", request(`{"client_id":"c","api_secret":"s","events":[{"name":"a","params":{}}]}`,
			func(r *destinationtest.Request) { r.Query = url.Values{"measurement_id": {measurementID}} })},
		{"params misnamed", request(`{"client_id":"c","events":[{"name":"a","parameters":{}}]}`, nil)},
		{"param outside params", request(`{"client_id":"c","events":[{"name":"page_view","page_location":"https://example.com/"}]}`, nil)},
		{"param at the top", request(`{"client_id":"c","page_title":"Home","events":[{"name":"page_view","params":{}}]}`, nil)},
		{"clientId", request(`{"clientId":"c","events":[{"name":"a","params":{}}]}`, nil)},
		{"user_id a number", request(`{"client_id":"c","user_id":1,"events":[{"name":"a","params":{}}]}`, nil)},
		{"nested param", request(`{"client_id":"c","events":[{"name":"a","params":{"p":{"q":1}}}]}`, nil)},
		{"boolean param", request(`{"client_id":"c","events":[{"name":"a","params":{"p":true}}]}`, nil)},
		{"name with a space", request(`{"client_id":"c","events":[{"name":"Signed Up","params":{}}]}`, nil)},
		{"long value", request(`{"client_id":"c","events":[{"name":"a","params":{"p":"`+strings.Repeat("x", 101)+`"}}]}`, nil)},
		{"long page_title", request(`{"client_id":"c","events":[{"name":"page_view","params":{"page_title":"`+strings.Repeat("x", 301)+`"}}]}`, nil)},
		{"item without id or name", request(`{"client_id":"c","events":[{"name":"a","params":{"items":[{"price":1}]}}]}`, nil)},
		{"GET", request(good, func(r *destinationtest.Request) { r.Method = http.MethodGet })},
		{"wrong path", request(good, func(r *destinationtest.Request) { r.Path = "/collect" })},
		{"no measurement_id", request(good, func(r *destinationtest.Request) { r.Query = url.Values{"api_secret": {apiSecret}} })},
	}
	for _, tt := range tests {
		if err := check(tt.req); err == nil {
			t.Errorf("%s: check takes %s", tt.name, tt.req.Body)
		}
	}
}

func TestTypes(t *testing.T) {
	// Through the handshake, as the daemon asks.
	c := destinationtest.Launch(t, destinationtest.Build(t, pkg))
	types, err := c.Configure(t.Context(), map[string]any{"measurement_id": measurementID, "api_secret": apiSecret})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"track", "page", "screen", "group"}; !slices.Equal(types, want) {
		t.Errorf("the plugin takes %q, want %q", types, want)
	}
}

// browserPage is a page call's context.page as analytics.js fills it in; it
// copies the same fields into the call's properties.
const browserPage = `{"path": "/pricing", "referrer": "https://www.google.com/", "search": "?plan=pro",
	"title": "Pricing | Example", "url": "https://example.com/pricing?plan=pro"}`

func TestPageRequest(t *testing.T) {
	col := newCollector(t, nil)
	c := start(t, col.URL, nil)
	results := deliver(t, c, batch(t, destinationtest.Call{
		Type:        sdk.TypePage,
		Name:        "Pricing",
		UserID:      "u-1",
		AnonymousID: "anon-1",
		Context:     `{"ip": "203.0.113.9", "page": ` + browserPage + `}`,
		Properties:  browserPage,
	}))
	if results[0] != sdk.OK() {
		t.Fatalf("result %+v, want ok", results[0])
	}
	reqs := col.all()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	want := compact(t, fmt.Sprintf(`{
		"client_id": "anon-1",
		"user_id": "u-1",
		"timestamp_micros": %d,
		"events": [{
			"name": "page_view",
			"params": {
				"page_location": "https://example.com/pricing?plan=pro",
				"page_title": "Pricing | Example",
				"page_referrer": "https://www.google.com/",
				"path": "/pricing",
				"search": "?plan=pro"
			},
			"timestamp_micros": %[1]d
		}]
	}`, micros(0)))
	if string(reqs[0].Body) != want {
		t.Errorf("body\n%s\nwant\n%s", reqs[0].Body, want)
	}
}

func TestCallTypes(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	tests := []struct {
		name   string
		call   destinationtest.Call
		event  string // the GA4 event's name
		params string
	}{
		{
			name: "page with context.page, which wins over the properties",
			call: destinationtest.Call{Type: sdk.TypePage, Name: "Pricing",
				Context:    `{"page": ` + browserPage + `}`,
				Properties: `{"url": "https://example.com/stale", "title": "Stale", "referrer": "https://example.com/stale", "plan": "pro"}`},
			event: "page_view",
			params: `{"page_location":"https://example.com/pricing?plan=pro","page_title":"Pricing | Example",
				"page_referrer":"https://www.google.com/","plan":"pro"}`,
		},
		{
			name: "page with only properties, as a server sends it",
			call: destinationtest.Call{Type: sdk.TypePage, Name: "Docs",
				Properties: `{"url": "https://example.com/docs", "title": "Docs", "referrer": "https://example.com/", "section": "api"}`},
			event:  "page_view",
			params: `{"page_location":"https://example.com/docs","page_title":"Docs","page_referrer":"https://example.com/","section":"api"}`,
		},
		{
			name: "page_title falls back to the title property",
			call: destinationtest.Call{Type: sdk.TypePage,
				Context:    `{"page": {"url": "https://example.com/a", "referrer": "", "title": ""}}`,
				Properties: `{"title": "A page"}`},
			event:  "page_view",
			params: `{"page_location":"https://example.com/a","page_title":"A page"}`,
		},
		{
			name: "context.page that is not an object",
			call: destinationtest.Call{Type: sdk.TypePage,
				Context:    `{"page": "home"}`,
				Properties: `{"url": "https://example.com/"}`},
			event:  "page_view",
			params: `{"page_location":"https://example.com/"}`,
		},
		{
			name:   "page with nothing about the page",
			call:   destinationtest.Call{Type: sdk.TypePage},
			event:  "page_view",
			params: `{}`,
		},
		{
			name: "page values cut to their own limits",
			call: destinationtest.Call{Type: sdk.TypePage,
				Context:    `{"page": {"url": "https://example.com/` + long(1200) + `", "title": "` + long(350) + `", "referrer": "` + long(500) + `"}}`,
				Properties: `{"note": "` + long(150) + `"}`},
			event: "page_view",
			params: `{"page_location":"https://example.com/` + long(1000-len("https://example.com/")) + `","page_title":"` + long(300) +
				`","page_referrer":"` + long(420) + `","note":"` + long(100) + `"}`,
		},
		{
			name: "page properties made safe as for track calls",
			call: destinationtest.Call{Type: sdk.TypePage, Name: "Checkout",
				Properties: `{"url": "https://example.com/checkout", "Cart Size": 3, "logged_in": true, "nested": {"a": 1},
					"list": [1], "_private": 1, "ga_x": 2, "value": "19.90", "currency": "eur", "page_title": "dup"}`},
			event: "page_view",
			params: `{"page_location":"https://example.com/checkout","value":19.9,"currency":"EUR",
				"Cart_Size":3,"logged_in":"true","page_title":"dup"}`,
		},
		{
			name: "screen",
			call: destinationtest.Call{Type: sdk.TypeScreen, Name: "Order Summary",
				Properties: `{"step": 2, "Feature Flag": false, "screen_name": "dup"}`},
			event:  "screen_view",
			params: `{"screen_name":"Order Summary","step":2,"Feature_Flag":"false"}`,
		},
		{
			name:   "screen without a name",
			call:   destinationtest.Call{Type: sdk.TypeScreen, Properties: `{"step": 2}`},
			event:  "screen_view",
			params: `{"step":2}`,
		},
		{
			name:   "group",
			call:   destinationtest.Call{Type: sdk.TypeGroup, GroupID: "acct-42", Traits: `{"name": "Initech", "employees": 120}`},
			event:  "join_group",
			params: `{"group_id":"acct-42"}`,
		},
		{
			name:   "group id cut to 100 characters",
			call:   destinationtest.Call{Type: sdk.TypeGroup, GroupID: long(120)},
			event:  "join_group",
			params: `{"group_id":"` + long(100) + `"}`,
		},
	}
	bin := destinationtest.Build(t, pkg)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			col := newCollector(t, nil)
			c := destinationtest.Start(t, bin, map[string]any{"measurement_id": measurementID, "api_secret": apiSecret, "endpoint": col.URL})
			tt.call.UserID = "u-1"
			results := deliver(t, c, batch(t, tt.call))
			if results[0] != sdk.OK() {
				t.Fatalf("%+v, want ok", results[0])
			}
			reqs := col.all()
			if len(reqs) != 1 || len(reqs[0].parsed.Events) != 1 {
				t.Fatalf("got %d requests, want 1 with 1 event", len(reqs))
			}
			r := reqs[0].parsed
			if r.ClientID != "u-1" || string(r.UserID) != `"u-1"` || r.TimestampMicros != micros(0) || r.Events[0].TimestampMicros != micros(0) {
				t.Errorf("client_id %q, user_id %s, timestamp_micros %d and %d; want u-1, the same and %d",
					r.ClientID, r.UserID, r.TimestampMicros, r.Events[0].TimestampMicros, micros(0))
			}
			if r.Events[0].Name != tt.event {
				t.Errorf("event %q, want %q", r.Events[0].Name, tt.event)
			}
			if got, want := string(r.Events[0].Params), compact(t, tt.params); got != want {
				t.Errorf("params\n%s\nwant\n%s", got, want)
			}
		})
	}
}

func TestCallTypesShareRequests(t *testing.T) {
	col := newCollector(t, nil)
	c := start(t, col.URL, nil)
	results := deliver(t, c, batch(t,
		destinationtest.Call{Type: sdk.TypePage, AnonymousID: "anon-1", Properties: `{"url": "https://example.com/"}`},
		destinationtest.Call{Type: sdk.TypeIdentify, AnonymousID: "anon-1", UserID: "u-1", Traits: `{"plan": "pro"}`},
		destinationtest.Call{Type: sdk.TypeGroup, AnonymousID: "anon-1", GroupID: "acct-42"},
		destinationtest.Call{Type: sdk.TypeAlias, UserID: "u-1", PreviousID: "anon-1"},
		destinationtest.Call{Type: sdk.TypeScreen, AnonymousID: "anon-1", Name: "Home"},
		destinationtest.Call{Name: "Signed Up", AnonymousID: "anon-1"},
	))
	// The daemon routes no identify or alias call to GA4; should one come,
	// it is dropped saying why.
	destinationtest.CheckResults(t, results, []sdk.Result{
		sdk.OK(),
		sdk.Drop(`GA4 takes track, page, screen and group calls, not "identify" calls`),
		sdk.OK(),
		sdk.Drop(`not "alias" calls`),
		sdk.OK(),
		sdk.OK(),
	})
	reqs := col.all()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want the four events of anon-1 in one", len(reqs))
	}
	var names []string
	for _, e := range reqs[0].parsed.Events {
		names = append(names, e.Name)
	}
	if want := []string{"page_view", "join_group", "screen_view", "sign_up"}; !slices.Equal(names, want) {
		t.Errorf("events %q, want %q", names, want)
	}
}
