package sdk

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"trackd.dev/trackd/sdk/destinationpb"
)

// How a batch and its results cross the plugin boundary (protocol 2): a few
// blocks per call, so that neither side allocates or parses per event. The
// Go interface on both sides stays []Event and []Result.

// textFields is how many strings an event has in DeliverRequest.text, and
// lengthsPerEvent how many numbers it has in DeliverRequest.lengths.
const (
	textFields      = 4
	lengthsPerEvent = 1 + textFields
)

// batchRequest is a batch on its way to a plugin. codec encodes it as a
// DeliverRequest straight from the events, without building one first.
type batchRequest []Event

// The DeliverRequest fields, as numbered in destination.proto.
const (
	fieldJSON       protowire.Number = 1
	fieldText       protowire.Number = 2
	fieldLengths    protowire.Number = 3
	fieldTimestamps protowire.Number = 4
)

// eventText is e's strings in DeliverRequest.text order.
func eventText(e *Event) [textFields]string {
	return [textFields]string{e.MessageID, e.Name, e.UserID, e.AnonymousID}
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// blockSizes are the lengths of the four fields' contents, in field order.
type blockSizes [4]int

func (b batchRequest) blockSizes() blockSizes {
	var s blockSizes
	for i := range b {
		e := &b[i]
		s[0] += len(e.JSON)
		s[2] += protowire.SizeVarint(uint64(len(e.JSON)))
		for _, t := range eventText(e) {
			s[1] += len(t)
			s[2] += protowire.SizeVarint(uint64(len(t)))
		}
		s[3] += protowire.SizeVarint(uint64(unixNano(e.Timestamp)))
	}
	return s
}

// encodedSize is the length of the encoding of a batch with these blocks.
func (s blockSizes) encodedSize() int {
	n := 0
	for i, l := range s {
		if l > 0 {
			n += protowire.SizeTag(fieldJSON+protowire.Number(i)) + protowire.SizeBytes(l)
		}
	}
	return n
}

// appendTo appends b's encoding, as proto.Marshal would encode the
// DeliverRequest of the same events; s is b.blockSizes().
func (b batchRequest) appendTo(buf []byte, s blockSizes) []byte {
	field := func(num protowire.Number, each func(e *Event)) {
		size := s[num-fieldJSON]
		if size == 0 {
			return
		}
		buf = protowire.AppendTag(buf, num, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(size))
		for i := range b {
			each(&b[i])
		}
	}
	field(fieldJSON, func(e *Event) { buf = append(buf, e.JSON...) })
	field(fieldText, func(e *Event) {
		for _, t := range eventText(e) {
			buf = append(buf, t...)
		}
	})
	field(fieldLengths, func(e *Event) {
		buf = protowire.AppendVarint(buf, uint64(len(e.JSON)))
		for _, t := range eventText(e) {
			buf = protowire.AppendVarint(buf, uint64(len(t)))
		}
	})
	field(fieldTimestamps, func(e *Event) {
		buf = protowire.AppendVarint(buf, uint64(unixNano(e.Timestamp)))
	})
	return buf
}

// errMalformedBatch is what decodeBatch says of lengths that do not add up.
var errMalformedBatch = errors.New("malformed batch: the lengths do not match the blocks")

// decodeBatch is the inverse of encodeBatch. Each event's JSON is a slice of
// the request's block, capped so that appending to it cannot overwrite the
// next event; its strings are slices of one string made from the text block.
func decodeBatch(req *destinationpb.DeliverRequest) ([]Event, error) {
	n := len(req.GetTimestampsUnixNano())
	lengths := req.GetLengths()
	if len(lengths) != lengthsPerEvent*n {
		return nil, errMalformedBatch
	}
	js, text := req.GetJson(), string(req.GetText())
	batch := make([]Event, n)
	var j, t int
	for i := range batch {
		l := lengths[lengthsPerEvent*i : lengthsPerEvent*(i+1)]
		e := &batch[i]
		end := j + int(l[0])
		if end > len(js) {
			return nil, errMalformedBatch
		}
		e.JSON = js[j:end:end]
		j = end
		for k, s := range [textFields]*string{&e.MessageID, &e.Name, &e.UserID, &e.AnonymousID} {
			end := t + int(l[1+k])
			if end > len(text) {
				return nil, errMalformedBatch
			}
			*s = text[t:end]
			t = end
		}
		if ts := req.TimestampsUnixNano[i]; ts != 0 {
			e.Timestamp = time.Unix(0, ts).UTC()
		}
	}
	if j != len(js) || t != len(text) {
		return nil, errMalformedBatch
	}
	return batch, nil
}

// encodeResults packs one status per result, with a detail only for those
// that carry a reason or a retry time.
func encodeResults(results []Result) (*destinationpb.DeliverResponse, error) {
	resp := &destinationpb.DeliverResponse{Statuses: make([]destinationpb.Status, len(results))}
	for i, r := range results {
		switch r.Status {
		case StatusOK:
			resp.Statuses[i] = destinationpb.Status_STATUS_OK
		case StatusRetry:
			resp.Statuses[i] = destinationpb.Status_STATUS_RETRY
		case StatusDrop:
			resp.Statuses[i] = destinationpb.Status_STATUS_DROP
		default:
			return nil, fmt.Errorf("result %d: invalid status %v; use sdk.OK, sdk.Retry or sdk.Drop", i, r.Status)
		}
		if ms := r.RetryAfter.Milliseconds(); r.Reason != "" || ms != 0 {
			resp.Details = append(resp.Details, &destinationpb.Detail{Index: uint32(i), Reason: r.Reason, RetryAfterMs: ms})
		}
	}
	return resp, nil
}

// decodeResults is the inverse of encodeResults, for a batch of n events.
func decodeResults(resp *destinationpb.DeliverResponse, n int) ([]Result, error) {
	if len(resp.GetStatuses()) != n {
		return nil, fmt.Errorf("got %d results for %d events", len(resp.GetStatuses()), n)
	}
	results := make([]Result, n)
	for i, st := range resp.GetStatuses() {
		switch st {
		case destinationpb.Status_STATUS_OK:
			results[i].Status = StatusOK
		case destinationpb.Status_STATUS_RETRY:
			results[i].Status = StatusRetry
		case destinationpb.Status_STATUS_DROP:
			results[i].Status = StatusDrop
		default:
			return nil, fmt.Errorf("result %d: invalid status %v", i, st)
		}
	}
	for _, d := range resp.GetDetails() {
		if int64(d.GetIndex()) >= int64(n) {
			return nil, fmt.Errorf("a result detail is for event %d of %d", d.GetIndex(), n)
		}
		r := &results[d.GetIndex()]
		r.Reason, r.RetryAfter = d.GetReason(), time.Duration(d.GetRetryAfterMs())*time.Millisecond
	}
	return results, nil
}

// bufferPool holds gRPC's message buffers on both sides, in every power of
// two from 256 B to maxMessageSize. gRPC's own pools round any message between
// 32 KiB and 1 MiB up to a 1 MiB buffer, and zero a buffer each time they hand
// it out again; gRPC writes every byte of a buffer before reading it, so this
// one does not (zeroing was 14% of a no-op plugin's CPU).
var bufferPool = &tieredPool{}

const (
	minPoolExp = 8
	maxPoolExp = 26 // 64 MiB, maxMessageSize
)

type tieredPool struct {
	tiers [maxPoolExp + 1]sync.Pool
}

// Get returns a buffer of length n from the smallest tier that holds it.
func (p *tieredPool) Get(n int) *[]byte {
	e := max(bits.Len(uint(max(n, 1)-1)), minPoolExp)
	if e > maxPoolExp {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.tiers[e].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<e)
	return &b
}

// Put keeps b for reuse if it came from a tier.
func (p *tieredPool) Put(b *[]byte) {
	c := cap(*b)
	e := bits.Len(uint(c)) - 1
	if c != 1<<e || e < minPoolExp || e > maxPoolExp {
		return
	}
	p.tiers[e].Put(b)
}

// codec is gRPC's protobuf codec, on both sides, but with its buffers from
// bufferPool (gRPC's own codec takes them from its default pool, which zeroes
// each), and encoding a batchRequest itself.
type codec struct{}

func (codec) Name() string { return "proto" }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	var size int
	var appendTo func([]byte) ([]byte, error)
	switch m := v.(type) {
	case batchRequest:
		// The batch is walked once for the sizes, once to copy it.
		sizes := m.blockSizes()
		size = sizes.encodedSize()
		appendTo = func(b []byte) ([]byte, error) { return m.appendTo(b, sizes), nil }
	case proto.Message:
		size = proto.Size(m)
		appendTo = func(b []byte) ([]byte, error) { return proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, m) }
	default:
		return nil, fmt.Errorf("codec: cannot marshal %T", v)
	}
	buf := bufferPool.Get(size)
	b, err := appendTo((*buf)[:0])
	if err != nil {
		bufferPool.Put(buf)
		return nil, err
	}
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, bufferPool)}, nil
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("codec: cannot unmarshal into %T", v)
	}
	buf := data.MaterializeToBuffer(bufferPool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}
