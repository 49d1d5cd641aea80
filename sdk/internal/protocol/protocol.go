// Package protocol is what the two sides of the plugin boundary share: the
// go-plugin handshake, the gRPC options, the codec and the batch's wire form.
// Package sdk builds the plugin side on it and package sdk/host the daemon's.
package protocol

import (
	"io"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
)

// Version is the plugin protocol's version. It changes only when
// destinationpb changes incompatibly: a plugin built with another version is
// refused at start, with a message saying to rebuild it. Version 2 sent a
// batch as a few blocks instead of a message per event; version 3 added the
// call types, Describe and Close.
const Version = 3

// Handshake is the go-plugin handshake shared by the daemon and its plugins.
// The cookie is not a secret: it only stops a plugin binary from running as
// if it had been started by trackd.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  Version,
	MagicCookieKey:   "TRACKD_PLUGIN",
	MagicCookieValue: "destination-6b2f0e1c9d4a",
}

// PluginName is the name a plugin's Destination is dispensed under.
const PluginName = "destination"

// maxMessageSize bounds a Deliver request or response on both sides; gRPC's
// default of 4 MiB is too small for large batches.
const maxMessageSize = 64 << 20

// flowWindow is gRPC's flow-control window, per call and per connection,
// on both sides. The default (64 KiB, grown by probing) makes a batch of a
// hundred 1 KB events wait for window updates from the other process
// mid-call; host and plugin share one machine, so a batch may go in one go.
const flowWindow = 16 << 20

// ioBuffer is the size of gRPC's read and write buffers on both sides
// (default 32 KiB): a batch then takes one or two system calls each way
// rather than one per 32 KiB, which on a machine where a system call is dear
// took 5-9% off a batch's CPU time.
const ioBuffer = 1 << 20

// ServerOptions are the plugin's gRPC server options.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxMessageSize),
		grpc.MaxSendMsgSize(maxMessageSize),
		grpc.InitialWindowSize(flowWindow),
		grpc.InitialConnWindowSize(flowWindow),
		experimental.BufferPool(bufferPool),
		grpc.ForceServerCodecV2(Codec{}),
		grpc.WriteBufferSize(ioBuffer),
		grpc.ReadBufferSize(ioBuffer),
	}
}

// DialOptions are the host's gRPC client options.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(maxMessageSize),
			grpc.MaxCallSendMsgSize(maxMessageSize),
			grpc.ForceCodecV2(Codec{}),
		),
		grpc.WithInitialWindowSize(flowWindow),
		grpc.WithInitialConnWindowSize(flowWindow),
		experimental.WithBufferPool(bufferPool),
		grpc.WithWriteBufferSize(ioBuffer),
		grpc.WithReadBufferSize(ioBuffer),
	}
}

// QuietLogger is an hclog logger for go-plugin that keeps warnings and
// errors, without timestamps, since whoever reads w adds their own.
func QuietLogger(w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:        "go-plugin",
		Level:       hclog.Warn,
		Output:      w,
		DisableTime: true,
	})
}
