package protocol

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"trackd.dev/trackd/sdk/destinationpb"
)

// How a batch crosses the plugin boundary: a few blocks per call, so that
// neither side allocates or parses per event. The Go interface on both sides
// stays []sdk.Event and []sdk.Result; this package sees an event only as its
// Fields, so that it need not import sdk.

// NumText is how many strings an event has in DeliverRequest.text.
const NumText = 7

// lengthsPerEvent is how many numbers an event has in DeliverRequest.lengths.
const lengthsPerEvent = 1 + NumText

// Fields are one event as it crosses: its JSON, its strings in the order of
// DeliverRequest.text (messageId, type, name, userId, anonymousId, groupId,
// previousId), and its timestamp in Unix nanoseconds, 0 when unknown.
type Fields struct {
	JSON     []byte
	Text     [NumText]string
	UnixNano int64
}

// Batch is a batch on its way to a plugin. Codec encodes it as a
// DeliverRequest straight from the host's events, without building one first.
type Batch struct {
	Len int
	At  func(i int, f *Fields) // fills f with event i's fields
}

// The DeliverRequest fields, as numbered in destination.proto.
const (
	fieldJSON       protowire.Number = 1
	fieldText       protowire.Number = 2
	fieldLengths    protowire.Number = 3
	fieldTimestamps protowire.Number = 4
)

// blockSizes are the lengths of the four fields' contents, in field order.
type blockSizes [4]int

func (b Batch) blockSizes() blockSizes {
	var s blockSizes
	var f Fields
	for i := range b.Len {
		b.At(i, &f)
		s[0] += len(f.JSON)
		s[2] += protowire.SizeVarint(uint64(len(f.JSON)))
		for _, t := range f.Text {
			s[1] += len(t)
			s[2] += protowire.SizeVarint(uint64(len(t)))
		}
		s[3] += protowire.SizeVarint(uint64(f.UnixNano))
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
func (b Batch) appendTo(buf []byte, s blockSizes) []byte {
	var f Fields
	field := func(num protowire.Number, each func()) {
		size := s[num-fieldJSON]
		if size == 0 {
			return
		}
		buf = protowire.AppendTag(buf, num, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(size))
		for i := range b.Len {
			b.At(i, &f)
			each()
		}
	}
	field(fieldJSON, func() { buf = append(buf, f.JSON...) })
	field(fieldText, func() {
		for _, t := range f.Text {
			buf = append(buf, t...)
		}
	})
	field(fieldLengths, func() {
		buf = protowire.AppendVarint(buf, uint64(len(f.JSON)))
		for _, t := range f.Text {
			buf = protowire.AppendVarint(buf, uint64(len(t)))
		}
	})
	field(fieldTimestamps, func() { buf = protowire.AppendVarint(buf, uint64(f.UnixNano)) })
	return buf
}

// errMalformedBatch is what DecodeBatch says of lengths that do not add up.
var errMalformedBatch = errors.New("malformed batch: the lengths do not match the blocks")

// BatchLen is how many events req holds.
func BatchLen(req *destinationpb.DeliverRequest) int { return len(req.GetTimestampsUnixNano()) }

// DecodeBatch is the inverse of Batch's encoding: it calls each with every
// event's fields in turn (f is reused). Each JSON is a slice of the request's
// block, capped so that appending to it cannot overwrite the next event; the
// strings are slices of one string made from the text block.
func DecodeBatch(req *destinationpb.DeliverRequest, each func(i int, f *Fields)) error {
	n := BatchLen(req)
	lengths := req.GetLengths()
	if len(lengths) != lengthsPerEvent*n {
		return errMalformedBatch
	}
	js, text := req.GetJson(), string(req.GetText())
	var f Fields
	var j, t int
	for i := range n {
		l := lengths[lengthsPerEvent*i : lengthsPerEvent*(i+1)]
		end := j + int(l[0])
		if end > len(js) {
			return errMalformedBatch
		}
		f.JSON = js[j:end:end]
		j = end
		for k := range f.Text {
			end := t + int(l[1+k])
			if end > len(text) {
				return errMalformedBatch
			}
			f.Text[k] = text[t:end]
			t = end
		}
		f.UnixNano = req.TimestampsUnixNano[i]
		each(i, &f)
	}
	if j != len(js) || t != len(text) {
		return errMalformedBatch
	}
	return nil
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

// Codec is gRPC's protobuf codec, on both sides, but with its buffers from
// bufferPool (gRPC's own codec takes them from its default pool, which zeroes
// each), and encoding a Batch itself.
type Codec struct{}

func (Codec) Name() string { return "proto" }

func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	var size int
	var appendTo func([]byte) ([]byte, error)
	switch m := v.(type) {
	case Batch:
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

func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("codec: cannot unmarshal into %T", v)
	}
	buf := data.MaterializeToBuffer(bufferPool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}
