package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"trackd.dev/trackd/sdk/destinationtest"
)

// writeCert writes a new self-signed certificate for 127.0.0.1, named name,
// and its key, to certFile and keyFile, and returns it.
func writeCert(t *testing.T, name, certFile, keyFile string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// The tracking API serves https with [http.tls], and reads its files again
// on SIGHUP: a rotated certificate is served with no restart.
func TestTrackingAPIOverTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "api.pem"), filepath.Join(dir, "api.key")
	first := writeCert(t, "first", certFile, keyFile)
	h := newHook(t)
	d := newDaemon(t, destinationtest.Build(t, "trackd.dev/trackd/daemon"), fmt.Sprintf(
		"[destinations.hook]\nplugin = %q\n[destinations.hook.settings]\nurl = %q\n",
		destinationtest.Build(t, "trackd.dev/trackd/plugins/webhook"), h.URL))
	d.serveHTTP(t)
	d.header += fmt.Sprintf("[http.tls]\ncert_file = %q\nkey_file = %q\n", certFile, keyFile)
	d.writeConfig(t, d.dests)
	d.start(t, "/readyz")
	api := strings.Replace(d.apiURL, "http://", "https://", 1)

	// send posts one track call trusting only cert, and returns the
	// certificate the API presented.
	send := func(cert *x509.Certificate, id string) (*x509.Certificate, error) {
		pool := x509.NewCertPool()
		pool.AddCert(cert)
		// The limit covers the TLS handshake and the JetStream ack behind
		// the answer, on a slow machine under the race detector.
		client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		defer client.CloseIdleConnections()
		req, err := http.NewRequest(http.MethodPost, api+"/v1/track",
			bytes.NewReader(fmt.Appendf(nil, `{"event":"E","userId":"u","messageId":%q}`, id)))
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(testWriteKey, "")
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("answered %s", resp.Status)
		}
		return resp.TLS.PeerCertificates[0], nil
	}

	if got, err := send(first, "tls-1"); err != nil || got.Subject.CommonName != "first" {
		t.Fatalf("over https with the first certificate: %v, %v", got, err)
	}
	if resp, err := http.Post(strings.Replace(api, "https://", "http://", 1)+"/v1/track", "application/json", strings.NewReader("{}")); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain http to the https API answered %s, want net/http's 400 for http to an https server", resp.Status)
		}
	}

	second := writeCert(t, "second", certFile, keyFile)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the certificate read again", func() bool {
		return strings.Contains(d.logs.String(), "the tracking API's certificate was read again")
	})
	if got, err := send(second, "tls-2"); err != nil || got.Subject.CommonName != "second" {
		t.Fatalf("after the rotation: %v, %v; want the second certificate served", got, err)
	}
	if _, err := send(first, "tls-3"); err == nil {
		t.Error("after the rotation a client trusting only the first certificate still got through")
	}
	waitFor(t, "both calls delivered", func() bool { return h.event("tls-1") != nil && h.event("tls-2") != nil })
}
