// Package dedupe decides whether a messageId was seen within the window, using
// JetStream key-value buckets whose TTL is the window: one, or several shards
// with each messageId in the one its hash picks.
//
// A claim's value is the ingest stream sequence of the message that made it, so
// a redelivery of that same message after a crash finds its own claim and is
// still delivered, while a different message with the same messageId is a repeat.
package dedupe

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Claim asks for messageId on behalf of the ingest message at stream sequence Seq.
type Claim struct {
	MessageID string
	Seq       uint64
}

// Claimer claims messageIds in a set of buckets.
type Claimer struct {
	js      jetstream.JetStream
	buckets []bucket
	maxKeys int64 // dedupe.max_keys, for Watch
}

type bucket struct {
	kv     jetstream.KeyValue
	prefix string // of its keys' subjects
}

// locate returns a messageId's bucket and key there.
func (c *Claimer) locate(messageID string) (*bucket, string) {
	sum := sha256.Sum256([]byte(messageID))
	// The shard comes from bytes the key does not use.
	shard := binary.BigEndian.Uint32(sum[keyBytes:]) % uint32(len(c.buckets))
	return &c.buckets[shard], keyOf(sum)
}

// keyOf is the bucket key of a messageId whose SHA-256 is sum: KV keys allow
// few characters, and a messageId may hold any, so it is hashed. NATS keeps an
// index entry per key in memory, and its size grows with the key's, so the
// key is the first 128 bits of the hash (22 characters): two ids in the
// window sharing one is as likely as guessing a random UUID.
func keyOf(sum [sha256.Size]byte) string { return base64.RawURLEncoding.EncodeToString(sum[:keyBytes]) }

const keyBytes = 16

// ClaimAll claims every messageId and reports, in order, which claims are first
// sightings (true) and which are repeats (false). The claims are pipelined:
// one asynchronous publish each, with no round trip per claim.
func (c *Claimer) ClaimAll(ctx context.Context, claims []Claim) ([]bool, error) {
	p, err := c.Start(claims)
	if err != nil {
		return nil, err
	}
	return p.Wait(ctx)
}

// Pending is a set of claims sent and not yet answered.
type Pending struct {
	c       *Claimer
	claims  []Claim
	futures []jetstream.PubAckFuture
}

// Start sends the claims without waiting for their answers, so that the
// caller can do other work, or send the next batch's claims, meanwhile.
// Claims are settled in the order they are sent: a messageId claimed in an
// earlier batch is a repeat in a later one even if that batch is sent before
// the earlier one is answered.
func (c *Claimer) Start(claims []Claim) (*Pending, error) {
	p := &Pending{c: c, claims: claims, futures: make([]jetstream.PubAckFuture, len(claims))}
	for i, cl := range claims {
		f, err := c.js.PublishMsgAsync(c.claimMsg(cl))
		if err != nil {
			return nil, fmt.Errorf("dedupe claim: %w", err)
		}
		p.futures[i] = f
	}
	return p, nil
}

// Wait reports, in order, which claims are first sightings (true) and which
// are repeats (false).
func (p *Pending) Wait(ctx context.Context) ([]bool, error) {
	first := make([]bool, len(p.claims))
	var conflicts []int
	for i, f := range p.futures {
		select {
		case <-f.Ok():
			first[i] = true
		case err := <-f.Err():
			if !isWrongLastSequence(err) {
				return nil, fmt.Errorf("dedupe claim: %w", err)
			}
			conflicts = append(conflicts, i)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	// Each existing key needs a lookup; they go out together rather than
	// one round trip after another.
	errs := make([]error, len(conflicts))
	var wg sync.WaitGroup
	for n, i := range conflicts {
		wg.Go(func() { first[i], errs[n] = p.c.resolve(ctx, p.claims[i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return first, nil
}

func (c *Claimer) claimMsg(cl Claim) *nats.Msg {
	b, key := c.locate(cl.MessageID)
	return &nats.Msg{
		Subject: b.prefix + key,
		Data:    strconv.AppendUint(nil, cl.Seq, 10),
		// Expected last subject sequence 0 means "create only": it fails when the
		// key holds a live value, and succeeds again once that value has expired.
		Header: nats.Header{jetstream.ExpectedLastSubjSeqHeader: createOnly},
	}
}

var createOnly = []string{"0"}

// resolve settles a claim whose key already exists: it is ours when the
// stored sequence is the claimant's own.
func (c *Claimer) resolve(ctx context.Context, cl Claim) (bool, error) {
	b, key := c.locate(cl.MessageID)
	want := strconv.FormatUint(cl.Seq, 10)
	for range 3 {
		e, err := b.kv.Get(ctx, key)
		if err == nil {
			return string(e.Value()) == want, nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return false, fmt.Errorf("dedupe lookup: %w", err)
		}
		// The earlier claim expired between our publish and the read: claim again.
		_, err = b.kv.Create(ctx, key, []byte(want))
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongLastSequence(err) {
			return false, fmt.Errorf("dedupe claim: %w", err)
		}
	}
	return false, fmt.Errorf("dedupe claim for messageId %q kept changing; giving up for now", cl.MessageID)
}
