// Package host is the daemon's side of the plugin boundary: it starts a
// destination plugin binary, hands it its settings and batches, and stops
// it. Plugin authors do not need it; package sdk is theirs.
package host

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/destinationpb"
	"trackd.dev/trackd/sdk/internal/protocol"
)

// Client is the host's handle on a running plugin process. Its methods are
// safe for concurrent use. go-plugin does not restart a plugin that dies:
// when a call fails and Exited reports true, Kill the client and Start a new
// one.
type Client struct {
	plugin  *plugin.Client
	rpc     destinationpb.DestinationClient
	conn    *grpc.ClientConn // for Deliver, whose request the codec encodes from the batch
	secrets []string
}

// hostPlugin connects to a Destination over go-plugin's gRPC transport on
// the host's side.
type hostPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

var _ plugin.GRPCPlugin = hostPlugin{}

func (hostPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("the host serves no destination")
}

func (hostPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return c, nil
}

// describeTimeout bounds the Describe call Start makes.
const describeTimeout = 10 * time.Second

// An Option changes how Start runs a plugin.
type Option func(*plugin.ClientConfig)

// WithChecksum makes Start refuse to run the binary unless its SHA-256 is
// sum (go-plugin's SecureConfig): a binary replaced since it was pinned does
// not run.
func WithChecksum(sum []byte) Option {
	return func(c *plugin.ClientConfig) {
		c.SecureConfig = &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	}
}

// Start launches the plugin binary cmd (whose Stdout and Stderr must be nil),
// performs the handshake, asks the plugin which settings are secret, and
// returns a client for it. The caller must Kill it.
//
// Everything the plugin writes to its stderr or stdout reaches stderr, one
// complete line per Write and never two Writes at once, so stderr may log each
// Write as a line. go-plugin's own warnings and errors are written there too,
// prefixed "go-plugin:"; its debug chatter is not. A nil stderr discards it
// all.
func Start(cmd *exec.Cmd, stderr io.Writer, opts ...Option) (*Client, error) {
	if stderr == nil {
		stderr = io.Discard
	}
	out := &lockedWriter{w: stderr}
	cfg := &plugin.ClientConfig{
		HandshakeConfig:  protocol.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{protocol.Version: {protocol.PluginName: hostPlugin{}}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		// Stderr is the process's stderr, where panics and the log package
		// write; SyncStdout and SyncStderr carry what the plugin writes to
		// os.Stdout and os.Stderr, which go-plugin redirects over gRPC.
		Stderr:          &lineWriter{out: out},
		SyncStderr:      &lineWriter{out: out},
		SyncStdout:      &lineWriter{out: out},
		Logger:          hostLogger{protocol.QuietLogger(&lineWriter{out: out})},
		GRPCDialOptions: protocol.DialOptions(),
	}
	for _, o := range opts {
		o(cfg)
	}
	pc := plugin.NewClient(cfg)
	rpc, err := pc.Client()
	if err == nil {
		var raw any
		if raw, err = rpc.Dispense(protocol.PluginName); err == nil {
			conn := raw.(*grpc.ClientConn)
			c := &Client{plugin: pc, rpc: destinationpb.NewDestinationClient(conn), conn: conn}
			ctx, cancel := context.WithTimeout(context.Background(), describeTimeout)
			defer cancel()
			var d *destinationpb.DescribeResponse
			if d, err = c.rpc.Describe(ctx, &destinationpb.DescribeRequest{}); err == nil {
				c.secrets = d.GetSecretSettings()
				return c, nil
			}
			err = fmt.Errorf("describe: %w", err)
		}
	}
	pc.Kill()
	if errors.Is(err, plugin.ErrChecksumsDoNotMatch) {
		return nil, fmt.Errorf("start plugin %s: %w", cmd.Path, ErrChecksum)
	}
	return nil, fmt.Errorf("start plugin %s: %s", cmd.Path, handshakeError(err))
}

// ErrChecksum is what Start says of a binary whose SHA-256 is not the one
// WithChecksum gave; it did not run.
var ErrChecksum = errors.New("its SHA-256 is not the pinned checksum, so it was not run")

// handshakeError shortens go-plugin's diagnosis of a program that did not
// answer the handshake, a dozen lines mostly about file modes, to one line.
func handshakeError(err error) string {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	if strings.HasPrefix(msg, "incompatible API version with plugin") {
		return fmt.Sprintf("it speaks another plugin protocol than this trackd (%d); rebuild it with this trackd's SDK (%s)", protocol.Version, msg)
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

// Secrets are the settings the plugin declared secret (sdk.ServeOptions):
// keys of the settings table or dotted paths into it.
func (c *Client) Secrets() []string { return c.secrets }

// Configure hands the plugin its settings table, as decoded from the daemon's
// config file, and returns the call types the plugin takes. An error the
// plugin's Configure returned comes back with its message as it was; any
// other error is a failure to reach the plugin.
func (c *Client) Configure(ctx context.Context, settings map[string]any) (types []string, err error) {
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(settings); err != nil {
		return nil, fmt.Errorf("encode settings: %w", err)
	}
	resp, err := c.rpc.Configure(ctx, &destinationpb.ConfigureRequest{SettingsToml: buf.Bytes()})
	if st, ok := status.FromError(err); ok && st.Code() == codes.InvalidArgument {
		return nil, errors.New(st.Message())
	}
	if err != nil {
		return nil, fmt.Errorf("configure plugin: %w", err)
	}
	if len(resp.GetTypes()) == 0 {
		return nil, errors.New("configure plugin: it named no call type it takes")
	}
	return resp.GetTypes(), nil
}

// Deliver sends a batch and returns one result per event, in order. An
// error means that none of the batch has a result: the plugin could not be
// reached, died, or broke the protocol.
func (c *Client) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	req := protocol.Batch{Len: len(batch), At: func(i int, f *protocol.Fields) {
		e := &batch[i]
		f.JSON = e.JSON
		f.Text = [protocol.NumText]string{e.MessageID, e.Type, e.Name, e.UserID, e.AnonymousID, e.GroupID, e.PreviousID}
		f.UnixNano = 0
		if !e.Timestamp.IsZero() {
			f.UnixNano = e.Timestamp.UnixNano()
		}
	}}
	resp := new(destinationpb.DeliverResponse)
	if err := c.conn.Invoke(ctx, destinationpb.Destination_Deliver_FullMethodName, req, resp); err != nil {
		return nil, fmt.Errorf("deliver to plugin: %w", err)
	}
	results, err := decodeResults(resp, len(batch))
	if err != nil {
		return nil, fmt.Errorf("deliver to plugin: %w", err)
	}
	return results, nil
}

// decodeResults reads the statuses and details of a batch of n events.
func decodeResults(resp *destinationpb.DeliverResponse, n int) ([]sdk.Result, error) {
	if len(resp.GetStatuses()) != n {
		return nil, fmt.Errorf("got %d results for %d events", len(resp.GetStatuses()), n)
	}
	results := make([]sdk.Result, n)
	for i, st := range resp.GetStatuses() {
		switch st {
		case destinationpb.Status_STATUS_OK:
			results[i].Status = sdk.StatusOK
		case destinationpb.Status_STATUS_RETRY:
			results[i].Status = sdk.StatusRetry
		case destinationpb.Status_STATUS_DROP:
			results[i].Status = sdk.StatusDrop
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

// Close asks the plugin to finish what it holds (sdk.Closer), once no
// Deliver is under way, and waits for its answer or for ctx. It does not
// stop the process: Kill does.
func (c *Client) Close(ctx context.Context) error {
	if _, err := c.rpc.Close(ctx, &destinationpb.CloseRequest{}); err != nil {
		if st, ok := status.FromError(err); ok && st.Code() == codes.Internal {
			return errors.New(st.Message())
		}
		return fmt.Errorf("close plugin: %w", err)
	}
	return nil
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
