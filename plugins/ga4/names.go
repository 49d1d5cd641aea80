package main

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"trackd.dev/trackd/sdk/clip"
)

// segmentEvents maps the Segment e-commerce and B2B spec event names, lower
// case, to GA4's recommended events, as Segment's own GA4 destination does.
var segmentEvents = map[string]string{
	"order completed":           "purchase",
	"order refunded":            "refund",
	"checkout started":          "begin_checkout",
	"payment info entered":      "add_payment_info",
	"cart viewed":               "view_cart",
	"product added":             "add_to_cart",
	"product removed":           "remove_from_cart",
	"product viewed":            "view_item",
	"product clicked":           "select_item",
	"product list viewed":       "view_item_list",
	"product added to wishlist": "add_to_wishlist",
	"products searched":         "search",
	"promotion viewed":          "view_promotion",
	"promotion clicked":         "select_promotion",
	"signed up":                 "sign_up",
	"signed in":                 "login",
}

// reservedEvents are the event names the Measurement Protocol reference
// reserves for Google's own collection.
var reservedEvents = map[string]bool{
	"ad_activeview": true, "ad_click": true, "ad_exposure": true, "ad_impression": true,
	"ad_query": true, "ad_reward": true, "adunit_exposure": true, "app_background": true,
	"app_clear_data": true, "app_exception": true, "app_install": true, "app_remove": true,
	"app_store_refund": true, "app_store_subscription_cancel": true,
	"app_store_subscription_convert": true, "app_store_subscription_renew": true,
	"app_update": true, "app_upgrade": true, "dynamic_link_app_open": true,
	"dynamic_link_app_update": true, "dynamic_link_first_open": true, "error": true,
	"firebase_campaign": true, "firebase_in_app_message_action": true,
	"firebase_in_app_message_dismiss": true, "firebase_in_app_message_impression": true,
	"first_open": true, "first_visit": true, "in_app_purchase": true,
	"notification_dismiss": true, "notification_foreground": true, "notification_open": true,
	"notification_receive": true, "notification_send": true, "os_update": true,
	"screen_view": true, "session_start": true, "session_start_with_rollout": true,
	"user_engagement": true,
}

// reservedPrefixes start no event or parameter name ("gtag." cannot survive
// safeName, which drops dots).
var reservedPrefixes = []string{"_", "firebase_", "ga_", "google_"}

// eventName is the GA4 name of a track event's name, or why there is none.
func eventName(name string) (string, error) {
	if ga, ok := segmentEvents[strings.ToLower(strings.TrimSpace(name))]; ok {
		return ga, nil
	}
	safe := safeName(name)
	what := "event name " + quote(name)
	if safe != name {
		what += " (" + quote(safe) + " in GA4)"
	}
	switch {
	case safe == "":
		return "", fmt.Errorf("%s has none of the letters, digits and underscores GA4 event names are made of", what)
	case !isLetter(safe[0]):
		return "", fmt.Errorf("%s does not start with a letter, as GA4 event names must", what)
	}
	lower := strings.ToLower(safe)
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(lower, p) {
			return "", fmt.Errorf("%s starts with %q, a prefix GA4 reserves for its own events", what, p)
		}
	}
	if reservedEvents[lower] {
		return "", fmt.Errorf("%s is reserved for an event GA4 collects itself", what)
	}
	return safe, nil
}

// paramName is the GA4 name of a property, or false when it has none: it
// does not start with a letter or uses a reserved prefix.
func paramName(key string) (string, bool) {
	safe := safeName(key)
	if safe == "" || !isLetter(safe[0]) || safe == "firebase_conversion" {
		return "", false
	}
	lower := strings.ToLower(safe)
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(lower, p) {
			return "", false
		}
	}
	return safe, true
}

// safeName makes s fit GA4's rules for names as far as rewriting can: white
// space becomes "_", characters other than ASCII letters, digits and "_" are
// dropped, and the result is cut to 40 characters. It may still start with
// something other than a letter.
func safeName(s string) string {
	var b strings.Builder
	for _, r := range strings.TrimSpace(s) {
		switch {
		case unicode.IsSpace(r):
			b.WriteByte('_')
		case r == '_' || r < utf8.RuneSelf && (isLetter(byte(r)) || '0' <= r && r <= '9'):
			b.WriteRune(r)
		}
	}
	name := b.String()
	if len(name) > maxNameLen {
		name = name[:maxNameLen]
	}
	return name
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// quote shows a producer's name in a reason without letting a long one
// swamp it.
func quote(s string) string { return clip.Quote(s, 64) }
