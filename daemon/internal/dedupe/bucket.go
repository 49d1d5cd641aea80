package dedupe

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/config"
)

// Open creates or updates the buckets [dedupe] names, one per shard, each
// with replicas, and returns a Claimer on them.
func Open(ctx context.Context, js jetstream.JetStream, cfg config.Dedupe, replicas int) (*Claimer, error) {
	c := &Claimer{js: js, maxKeys: cfg.MaxKeys}
	for _, name := range cfg.Buckets() {
		kv, err := createBucket(ctx, js, name, cfg, replicas)
		if err != nil {
			return nil, fmt.Errorf("cannot create key-value bucket %s (dedupe.bucket): %w", name, err)
		}
		c.buckets = append(c.buckets, bucket{kv: kv, prefix: subjectPrefix(name)})
	}
	return c, nil
}

// streamName is the name of a bucket's stream.
func streamName(bucket string) string { return "KV_" + bucket }

// subjectPrefix is what the subjects of a bucket's keys start with.
func subjectPrefix(bucket string) string { return "$KV." + bucket + "." }

// createBucket creates or updates the stream of a bucket and binds to it.
// The stream is made here rather than by jetstream's CreateKeyValue, which
// always discards new messages when full: with dedupe.max_keys a full bucket
// must drop its oldest claims instead, never refuse a claim.
func createBucket(ctx context.Context, js jetstream.JetStream, name string, cfg config.Dedupe, replicas int) (jetstream.KeyValue, error) {
	maxMsgs := cfg.MaxKeys
	if maxMsgs == 0 {
		maxMsgs = -1
	}
	window := cfg.Window
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		// What jetstream's KeyValueConfig{History: 1, TTL: window} makes, but
		// for MaxMsgs and Discard.
		Name:              streamName(name),
		Description:       "messageIds seen within the dedupe window",
		Subjects:          []string{subjectPrefix(name) + ">"},
		MaxMsgsPerSubject: 1,
		MaxMsgs:           maxMsgs,
		Discard:           jetstream.DiscardOld,
		MaxBytes:          -1,
		MaxAge:            window,
		MaxMsgSize:        -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		AllowDirect:       true,
		Duplicates:        min(2*time.Minute, window),
	})
	if err != nil {
		return nil, err
	}
	return js.KeyValue(ctx, name)
}

// isWrongLastSequence reports whether err is JetStream refusing a publish
// whose expected last subject sequence did not match: a key that already
// exists.
func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	// 10071 on a single server; 10164 is what replicated streams answer.
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}
