package sdk

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"trackd.dev/trackd/sdk/destinationpb"
	"trackd.dev/trackd/sdk/internal/protocol"
)

// ProtocolVersion is the version of the plugin protocol this package speaks.
// A plugin built with another version is refused by the daemon at start,
// with a message saying to rebuild it; rebuilding is all it takes.
const ProtocolVersion = protocol.Version

// ServeOptions say what a plugin is besides its Destination.
type ServeOptions struct {
	// SampleConfig is the plugin's settings table with comments, printed by
	// `<plugin> --sample-config`; usually its embedded sample.toml.
	SampleConfig string
	// Secrets names the settings whose values are secret: a key of the
	// settings table ("api_key"), or a dotted path into one of its tables
	// ("headers" makes every string under headers secret). The host masks
	// their values in everything the plugin logs or gives as a reason,
	// besides the values of settings whose names say key, secret, token or
	// password.
	Secrets []string
}

// Serve runs a plugin binary; call it from main. It returns when the host
// closes the plugin.
//
// Run by hand, the binary prints opts.SampleConfig with --sample-config and
// a short usage with --help; either way it exits without serving.
func Serve(d Destination, opts ServeOptions) {
	name := filepath.Base(os.Args[0])
	switch args := os.Args[1:]; {
	case len(args) == 0:
	case len(args) == 1 && (args[0] == "--sample-config" || args[0] == "-sample-config"):
		fmt.Print(opts.SampleConfig)
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
	if os.Getenv(protocol.Handshake.MagicCookieKey) != protocol.Handshake.MagicCookieValue {
		fmt.Fprintf(os.Stderr, "%s is a trackd destination plugin; the trackd daemon starts it. "+
			"Run %s --sample-config to see its settings.\n", name, name)
		os.Exit(1)
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: protocol.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			protocol.Version: {protocol.PluginName: &servedPlugin{server: &grpcServer{impl: d, secrets: opts.Secrets}}},
		},
		GRPCServer: func(o []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(o, protocol.ServerOptions()...)...)
		},
		// go-plugin's own messages go to stderr, which the host logs line
		// by line; below Warn they are noise.
		Logger: protocol.QuietLogger(os.Stderr),
	})
}

// servedPlugin connects a Destination to go-plugin's gRPC transport on the
// plugin's side.
type servedPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	server *grpcServer
}

var _ plugin.GRPCPlugin = (*servedPlugin)(nil)

func (p *servedPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	destinationpb.RegisterDestinationServer(s, p.server)
	return nil
}

func (p *servedPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, fmt.Errorf("a plugin is not a host")
}

// grpcServer runs in the plugin process and calls the plugin's Destination.
type grpcServer struct {
	destinationpb.UnimplementedDestinationServer
	impl    Destination
	secrets []string
}

var _ destinationpb.DestinationServer = (*grpcServer)(nil)

func (s *grpcServer) Describe(context.Context, *destinationpb.DescribeRequest) (*destinationpb.DescribeResponse, error) {
	return &destinationpb.DescribeResponse{SecretSettings: s.secrets}, nil
}

func (s *grpcServer) Configure(ctx context.Context, req *destinationpb.ConfigureRequest) (*destinationpb.ConfigureResponse, error) {
	if err := s.impl.Configure(ctx, Settings{toml: req.GetSettingsToml()}); err != nil {
		// InvalidArgument tells the host that this is the plugin's own
		// answer, so it can hand the message back unwrapped.
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	types, err := typesOf(s.impl)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &destinationpb.ConfigureResponse{Types: types}, nil
}

// typesOf is what d's Types says, checked, or track alone.
func typesOf(d Destination) ([]string, error) {
	t, ok := d.(Typer)
	if !ok {
		return []string{TypeTrack}, nil
	}
	var types []string
	for _, typ := range t.Types() {
		if !slices.Contains(AllTypes(), typ) {
			return nil, fmt.Errorf("the plugin says it takes %q, which is not a call type (%s)", typ, strings.Join(AllTypes(), ", "))
		}
		if !slices.Contains(types, typ) {
			types = append(types, typ)
		}
	}
	if len(types) == 0 {
		return nil, fmt.Errorf("the plugin says it takes no call type; its Types must name at least one of %s", strings.Join(AllTypes(), ", "))
	}
	return types, nil
}

func (s *grpcServer) Deliver(ctx context.Context, req *destinationpb.DeliverRequest) (*destinationpb.DeliverResponse, error) {
	batch := make([]Event, protocol.BatchLen(req))
	err := protocol.DecodeBatch(req, func(i int, f *protocol.Fields) {
		e := &batch[i]
		e.JSON = f.JSON
		e.MessageID, e.Type, e.Name, e.UserID, e.AnonymousID, e.GroupID, e.PreviousID =
			f.Text[0], f.Text[1], f.Text[2], f.Text[3], f.Text[4], f.Text[5], f.Text[6]
		if f.UnixNano != 0 {
			e.Timestamp = time.Unix(0, f.UnixNano).UTC()
		}
	})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return encodeResults(s.deliver(ctx, batch)), nil
}

// deliver calls the plugin's Deliver, turning a panic, a wrong number of
// results or a result without a status into drops with a reason, so that a
// bug costs the events of one call, not the process and every call in it.
func (s *grpcServer) deliver(ctx context.Context, batch []Event) (results []Result) {
	defer func() {
		if v := recover(); v != nil {
			fmt.Fprintf(os.Stderr, "panic in Deliver: %v\n%s", v, debug.Stack())
			results = dropAll(len(batch), fmt.Sprintf("the plugin panicked: %v", v))
		}
	}()
	results = s.impl.Deliver(ctx, batch)
	if len(results) != len(batch) {
		return dropAll(len(batch), fmt.Sprintf("the plugin returned %d results for a batch of %d events", len(results), len(batch)))
	}
	for i, r := range results {
		if r.Status < StatusOK || r.Status > StatusDrop {
			results[i] = Drop(fmt.Sprintf("the plugin returned a result with no valid status (%v) for this event", r.Status))
		}
	}
	return results
}

func dropAll(n int, reason string) []Result {
	results := make([]Result, n)
	for i := range results {
		results[i] = Drop(reason)
	}
	return results
}

func (s *grpcServer) Close(ctx context.Context, _ *destinationpb.CloseRequest) (*destinationpb.CloseResponse, error) {
	if c, ok := s.impl.(Closer); ok {
		if err := c.Close(ctx); err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
	}
	return &destinationpb.CloseResponse{}, nil
}

var wireStatus = [...]destinationpb.Status{
	StatusOK:    destinationpb.Status_STATUS_OK,
	StatusRetry: destinationpb.Status_STATUS_RETRY,
	StatusDrop:  destinationpb.Status_STATUS_DROP,
}

// encodeResults packs one status per result, with a detail only for those
// that carry a reason or a retry time. Every status is valid (deliver sees
// to it).
func encodeResults(results []Result) *destinationpb.DeliverResponse {
	resp := &destinationpb.DeliverResponse{Statuses: make([]destinationpb.Status, len(results))}
	for i, r := range results {
		resp.Statuses[i] = wireStatus[r.Status]
		if ms := r.RetryAfter.Milliseconds(); r.Reason != "" || ms != 0 {
			resp.Details = append(resp.Details, &destinationpb.Detail{Index: uint32(i), Reason: r.Reason, RetryAfterMs: ms})
		}
	}
	return resp
}
