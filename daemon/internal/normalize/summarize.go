package normalize

import (
	"errors"
	"fmt"
	"time"

	"trackd.dev/trackd/daemon/internal/jsonscan"
	"trackd.dev/trackd/sdk"
)

// Summarize reads back, from an event Normalize wrote, what a plugin gets and when
// the event was received, skipping over properties, context and the rest without
// decoding them. It refuses anything that is not a JSON object with string ids and
// valid timestamp and receivedAt.
func Summarize(event []byte) (s sdk.Event, receivedAt time.Time, err error) {
	s.JSON = event
	var (
		fault           string
		eventName, name string
		timestamp       []byte
		received        []byte
	)
	ok := jsonscan.EachMember(event, func(key []byte, plain bool, value []byte) {
		var dst *string
		switch string(key) {
		case "messageId":
			dst = &s.MessageID
		case "type":
			dst = &s.Type
		case "event":
			dst = &eventName
		case "name":
			dst = &name
		case "userId":
			dst = &s.UserID
		case "anonymousId":
			dst = &s.AnonymousID
		case "groupId":
			dst = &s.GroupID
		case "previousId":
			dst = &s.PreviousID
		case "timestamp":
			timestamp = value
			return
		case "receivedAt":
			received = value
			return
		default:
			return
		}
		switch value[0] {
		case '"':
			*dst = unquote(value)
		case 'n':
		default:
			if fault == "" {
				fault = string(key) + " is " + jsonscan.Kind(value) + ", not a string"
			}
		}
	})
	if !ok {
		return sdk.Event{}, time.Time{}, errors.New("not a valid JSON object")
	}
	if fault != "" {
		return sdk.Event{}, time.Time{}, errors.New(fault)
	}
	switch s.Type {
	case "":
		// Written before calls had other types than track.
		s.Type, s.Name = sdk.TypeTrack, eventName
	case sdk.TypeTrack:
		s.Name = eventName
	case sdk.TypePage, sdk.TypeScreen:
		s.Name = name
	}
	if s.Timestamp, err = summaryTime(timestamp, "timestamp"); err != nil {
		return sdk.Event{}, time.Time{}, err
	}
	if receivedAt, err = summaryTime(received, "receivedAt"); err != nil {
		return sdk.Event{}, time.Time{}, err
	}
	return s, receivedAt, nil
}

func summaryTime(raw []byte, key string) (time.Time, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return time.Time{}, fmt.Errorf("%s is missing or not a string", key)
	}
	if t, ok := parseUTC(raw[1 : len(raw)-1]); ok {
		return t, nil
	}
	t, err := ParseTime(unquote(raw))
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", key, err)
	}
	return t, nil
}
