package sdk

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/status"

	"trackd.dev/trackd/sdk/destinationpb"
)

// ProtocolVersion is the version of the plugin protocol this package speaks.
// It changes only when destinationpb changes incompatibly: a plugin built
// with another version is refused at start, with a message saying to rebuild
// it. Version 2 sends a batch as a few blocks instead of a message per event.
const ProtocolVersion = 2

// Handshake is the go-plugin handshake shared by the daemon and its plugins.
// The cookie is not a secret: it only stops a plugin binary from running as
// if it had been started by trackd.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "TRACKD_PLUGIN",
	MagicCookieValue: "destination-6b2f0e1c9d4a",
}

// pluginName is the name a plugin's Destination is dispensed under.
const pluginName = "destination"

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

// pluginSet is the go-plugin wiring for both sides: impl is nil on the host.
func pluginSet(impl Destination) map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{
		ProtocolVersion: {pluginName: &destinationPlugin{impl: impl}},
	}
}

// destinationPlugin connects a Destination to go-plugin's gRPC transport.
type destinationPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl Destination
}

var _ plugin.GRPCPlugin = (*destinationPlugin)(nil)

func (p *destinationPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	destinationpb.RegisterDestinationServer(s, &grpcServer{impl: p.impl})
	return nil
}

func (p *destinationPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return rpcClient{DestinationClient: destinationpb.NewDestinationClient(c), conn: c}, nil
}

// grpcServer runs in the plugin process and calls the plugin's Destination.
type grpcServer struct {
	destinationpb.UnimplementedDestinationServer
	impl Destination
}

var _ destinationpb.DestinationServer = (*grpcServer)(nil)

func (s *grpcServer) Configure(ctx context.Context, req *destinationpb.ConfigureRequest) (*destinationpb.ConfigureResponse, error) {
	if err := s.impl.Configure(ctx, Settings{toml: req.GetSettingsToml()}); err != nil {
		// InvalidArgument tells the host that this is the plugin's own
		// answer, so it can hand the message back unwrapped.
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &destinationpb.ConfigureResponse{}, nil
}

func (s *grpcServer) Deliver(ctx context.Context, req *destinationpb.DeliverRequest) (*destinationpb.DeliverResponse, error) {
	batch, err := decodeBatch(req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	results := s.impl.Deliver(ctx, batch)
	if len(results) != len(batch) {
		return nil, status.Errorf(codes.Internal, "plugin returned %d results for %d events", len(results), len(batch))
	}
	resp, err := encodeResults(results)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "plugin %v", err)
	}
	return resp, nil
}

// Serve runs a plugin binary; call it from main. It returns when the host
// closes the plugin.
//
// Run by hand, the binary prints sampleConfig with --sample-config and a
// short usage with --help; either way it exits without serving.
func Serve(d Destination, sampleConfig string) {
	name := filepath.Base(os.Args[0])
	switch args := os.Args[1:]; {
	case len(args) == 0:
	case len(args) == 1 && (args[0] == "--sample-config" || args[0] == "-sample-config"):
		fmt.Print(sampleConfig)
		os.Exit(0)
	case len(args) == 1 && (args[0] == "--help" || args[0] == "-help" || args[0] == "-h"):
		fmt.Printf("Usage: %s [--sample-config]\n\n"+
			"%s is a trackd destination plugin; the trackd daemon starts it.\n"+
			"Its settings go under [destinations.<id>.settings] in trackd's config file.\n\n"+
			"  --sample-config  print the settings, with comments, and exit\n", name, name)
		os.Exit(0)
	default:
		fmt.Fprintf(os.Stderr, "%s: unexpected arguments %q; run %s --help\n", name, args, name)
		os.Exit(2)
	}
	if os.Getenv(Handshake.MagicCookieKey) != Handshake.MagicCookieValue {
		fmt.Fprintf(os.Stderr, "%s is a trackd destination plugin; the trackd daemon starts it. "+
			"Run %s --sample-config to see its settings.\n", name, name)
		os.Exit(1)
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: pluginSet(d),
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts,
				grpc.MaxRecvMsgSize(maxMessageSize),
				grpc.MaxSendMsgSize(maxMessageSize),
				grpc.InitialWindowSize(flowWindow),
				grpc.InitialConnWindowSize(flowWindow),
				experimental.BufferPool(bufferPool),
				grpc.ForceServerCodecV2(codec{}),
				grpc.WriteBufferSize(ioBuffer),
				grpc.ReadBufferSize(ioBuffer))...)
		},
		// go-plugin's own messages go to stderr, which the host logs line
		// by line; below Warn they are noise.
		Logger: quietLogger(os.Stderr),
	})
}

// quietLogger is an hclog logger for go-plugin that keeps warnings and errors,
// without timestamps, since whoever reads w adds their own.
func quietLogger(w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:        "go-plugin",
		Level:       hclog.Warn,
		Output:      w,
		DisableTime: true,
	})
}
