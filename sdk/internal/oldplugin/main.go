// Command oldplugin is a plugin built for an older plugin protocol (version
// 2, trackd's until protocol 3): it answers the handshake with that version,
// so that tests can check what the host says of it.
package main

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"trackd.dev/trackd/sdk/internal/protocol"
)

type destination struct{ plugin.NetRPCUnsupportedPlugin }

func (destination) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }

func (destination) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, nil
}

func main() {
	handshake := protocol.Handshake
	handshake.ProtocolVersion = 2
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: handshake,
		Plugins:         plugin.PluginSet{"destination": destination{}},
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}
