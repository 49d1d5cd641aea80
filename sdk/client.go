package sdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/status"

	"trackd.dev/trackd/sdk/destinationpb"
)

// Client is the host's handle on a running plugin process. Its methods are
// safe for concurrent use. go-plugin does not restart a plugin that dies:
// when a call fails and Exited reports true, Kill the client and Start a new
// one.
type Client struct {
	plugin *plugin.Client
	rpc    rpcClient
}

// rpcClient is what the host holds of the plugin's gRPC connection: the
// generated client, and the connection itself for Deliver, whose request
// codec encodes from the batch (see batchRequest).
type rpcClient struct {
	destinationpb.DestinationClient
	conn *grpc.ClientConn
}

// Start launches the plugin binary cmd (whose Stdout and Stderr must be nil),
// performs the handshake and returns a client for it. The caller must Kill
// it.
//
// Everything the plugin writes to its stderr or stdout reaches stderr, one
// complete line per Write and never two Writes at once, so stderr may log each
// Write as a line. go-plugin's own warnings and errors are written there too,
// prefixed "go-plugin:"; its debug chatter is not. A nil stderr discards it
// all.
func Start(cmd *exec.Cmd, stderr io.Writer) (*Client, error) {
	if stderr == nil {
		stderr = io.Discard
	}
	out := &lockedWriter{w: stderr}
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: pluginSet(nil),
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		// Stderr is the process's stderr, where panics and the log package
		// write; SyncStdout and SyncStderr carry what the plugin writes to
		// os.Stdout and os.Stderr, which go-plugin redirects over gRPC.
		Stderr:     &lineWriter{out: out},
		SyncStderr: &lineWriter{out: out},
		SyncStdout: &lineWriter{out: out},
		Logger:     hostLogger{quietLogger(&lineWriter{out: out})},
		GRPCDialOptions: []grpc.DialOption{
			grpc.WithDefaultCallOptions(
				grpc.MaxCallRecvMsgSize(maxMessageSize),
				grpc.MaxCallSendMsgSize(maxMessageSize),
				grpc.ForceCodecV2(codec{}),
			),
			grpc.WithInitialWindowSize(flowWindow),
			grpc.WithInitialConnWindowSize(flowWindow),
			experimental.WithBufferPool(bufferPool),
			grpc.WithWriteBufferSize(ioBuffer),
			grpc.WithReadBufferSize(ioBuffer),
		},
	})
	rpc, err := pc.Client()
	if err == nil {
		var raw any
		if raw, err = rpc.Dispense(pluginName); err == nil {
			return &Client{plugin: pc, rpc: raw.(rpcClient)}, nil
		}
	}
	pc.Kill()
	return nil, fmt.Errorf("start plugin %s: %s", cmd.Path, handshakeError(err))
}

// handshakeError shortens go-plugin's diagnosis of a program that did not
// answer the handshake, a dozen lines mostly about file modes, to one line.
func handshakeError(err error) string {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	if strings.HasPrefix(msg, "incompatible API version with plugin") {
		return fmt.Sprintf("it speaks another plugin protocol than this trackd (%d); rebuild it with this trackd's SDK (%s)", ProtocolVersion, msg)
	}
	line, ok := strings.CutPrefix(msg, "Unrecognized remote plugin message: ")
	switch {
	case !ok:
		return msg
	case line == "":
		return "it exited or closed stdout without the handshake; is it a trackd plugin? Its stderr may say why"
	default:
		return fmt.Sprintf("it printed %q instead of the handshake; is it a trackd plugin?", line)
	}
}

// Configure hands the plugin its settings. An error the plugin's Configure
// returned comes back with its message as it was; any other error is a
// failure to reach the plugin.
func (c *Client) Configure(ctx context.Context, s Settings) error {
	_, err := c.rpc.Configure(ctx, &destinationpb.ConfigureRequest{SettingsToml: s.toml})
	if st, ok := status.FromError(err); ok && st.Code() == codes.InvalidArgument {
		return errors.New(st.Message())
	}
	if err != nil {
		return fmt.Errorf("configure plugin: %w", err)
	}
	return nil
}

// Deliver sends a batch and returns one result per event, in order. An
// error means that none of the batch has a result: the plugin could not be
// reached, died, or broke the protocol (for example by returning the wrong
// number of results).
func (c *Client) Deliver(ctx context.Context, batch []Event) ([]Result, error) {
	resp := new(destinationpb.DeliverResponse)
	err := c.rpc.conn.Invoke(ctx, destinationpb.Destination_Deliver_FullMethodName, batchRequest(batch), resp)
	if err != nil {
		return nil, fmt.Errorf("deliver to plugin: %w", err)
	}
	results, err := decodeResults(resp, len(batch))
	if err != nil {
		return nil, fmt.Errorf("deliver to plugin: %w", err)
	}
	return results, nil
}

// Exited reports whether the plugin process has exited.
func (c *Client) Exited() bool { return c.plugin.Exited() }

// Kill stops the plugin process, gracefully if it answers within two
// seconds, and waits for it to exit.
func (c *Client) Kill() { c.plugin.Kill() }

// hostLogger is the logger go-plugin uses on the host. go-plugin echoes each
// line of the plugin's stderr to a named sub-logger as well as to
// ClientConfig.Stderr; the echo would print every warning and panic line
// twice, so named loggers are switched off.
type hostLogger struct {
	hclog.Logger
}

func (hostLogger) Named(string) hclog.Logger {
	// Off, rather than hclog.NewNullLogger, also spares go-plugin parsing
	// every line to find its level.
	return hclog.New(&hclog.LoggerOptions{Level: hclog.Off, Output: io.Discard})
}

// lockedWriter serializes Writes from the writers of one Client.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) write(p []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.w.Write(p)
}

// maxLine bounds a line held back waiting for its newline.
const maxLine = 64 << 10

// lineWriter passes what is written to it on to out one complete line at a
// time; go-plugin writes a line and its newline separately, and the gRPC stdio
// stream in chunks of any size.
type lineWriter struct {
	mu  sync.Mutex
	out *lockedWriter
	buf []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 && len(l.buf) < maxLine {
			break
		}
		if i < 0 {
			l.out.write(append(l.buf, '\n'))
			l.buf = l.buf[:0]
			break
		}
		l.out.write(l.buf[:i+1])
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) == 0 {
		l.buf = nil
	}
	return len(p), nil
}
