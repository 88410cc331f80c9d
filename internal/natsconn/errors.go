package natsconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cause classifies a connection failure by what an operator must fix.
type Cause int

// The causes, from the most specific; CauseOther is anything else.
const (
	CauseOther Cause = iota
	// CauseUnreachable: nothing answered at the address (wrong host or
	// port, server down, network).
	CauseUnreachable
	// CauseTLS: the TLS handshake failed, usually because the server's
	// certificate is not trusted (NATS_CA) or the server wants a client
	// certificate (NATS_CERT, NATS_KEY).
	CauseTLS
	// CauseAuthorization: the server refused the credentials.
	CauseAuthorization
	// CauseNoJetStream: connected, but JetStream is not enabled on the
	// server or for the account.
	CauseNoJetStream
)

// String names the cause for log fields.
func (c Cause) String() string {
	switch c {
	case CauseUnreachable:
		return "unreachable"
	case CauseTLS:
		return "tls"
	case CauseAuthorization:
		return "authorization"
	case CauseNoJetStream:
		return "no JetStream"
	}
	return "other"
}

// Error is a classified connection failure naming the server.
type Error struct {
	// Server is the server or servers tried, as host:port without
	// credentials.
	Server string
	Cause  Cause
	// Subject is the subject of the certificate the server presented,
	// when TLS verification of it failed.
	Subject string
	Err     error
}

func (e *Error) Error() string {
	switch e.Cause {
	case CauseUnreachable:
		return fmt.Sprintf("nats server %s unreachable: %v", e.Server, e.Err)
	case CauseTLS:
		if e.Subject != "" {
			return fmt.Sprintf("nats server %s: TLS verification of the server certificate %q failed: %v", e.Server, e.Subject, e.Err)
		}
		return fmt.Sprintf("nats server %s: TLS handshake failed: %v", e.Server, e.Err)
	case CauseAuthorization:
		return fmt.Sprintf("nats server %s: authorization violation: the server refused the credentials (user and password, token, creds, nkey or client certificate): %v", e.Server, e.Err)
	case CauseNoJetStream:
		where := "on the server"
		if errors.Is(e.Err, jetstream.ErrJetStreamNotEnabledForAccount) {
			where = "for this account"
		}
		return fmt.Sprintf("nats server %s: JetStream is not enabled %s: %v", e.Server, where, e.Err)
	}
	return fmt.Sprintf("nats server %s: %v", e.Server, e.Err)
}

// Unwrap returns the client's error.
func (e *Error) Unwrap() error { return e.Err }

// Classify wraps err, a failure to connect to or use servers, in an *Error
// with its cause. An err that already is one is returned as it is; nil
// stays nil.
func Classify(servers string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	cause := causeOf(err)
	out := &Error{Server: servers, Cause: cause, Err: err}
	if cause == CauseTLS {
		out.Subject = certSubject(err)
	}
	return out
}

func causeOf(err error) Cause {
	var (
		opErr  *net.OpError
		dnsErr *net.DNSError
	)
	switch {
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return CauseNoJetStream
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired),
		errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrAccountAuthExpired):
		return CauseAuthorization
	case errors.Is(err, nats.ErrTLS), errors.Is(err, nats.ErrSecureConnRequired), errors.Is(err, nats.ErrSecureConnWanted),
		certSubject(err) != "", isTLSError(err):
		return CauseTLS
	case errors.Is(err, nats.ErrNoServers), errors.Is(err, nats.ErrTimeout), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &opErr), errors.As(err, &dnsErr), errors.Is(err, io.EOF):
		return CauseUnreachable
	}
	return CauseOther
}

func isTLSError(err error) bool {
	var (
		rec   tls.RecordHeaderError
		alert tls.AlertError
	)
	return errors.As(err, &rec) || errors.As(err, &alert)
}

// certSubject finds the server certificate whose verification failed.
func certSubject(err error) string {
	var (
		verify    *tls.CertificateVerificationError
		authority x509.UnknownAuthorityError
		host      x509.HostnameError
		invalid   x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &verify) && len(verify.UnverifiedCertificates) > 0:
		return verify.UnverifiedCertificates[0].Subject.String()
	case errors.As(err, &authority) && authority.Cert != nil:
		return authority.Cert.Subject.String()
	case errors.As(err, &host) && host.Certificate != nil:
		return host.Certificate.Subject.String()
	case errors.As(err, &invalid) && invalid.Cert != nil:
		return invalid.Cert.Subject.String()
	}
	return ""
}
