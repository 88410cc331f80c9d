package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// StartNATSServer starts an embedded server on a free port of 127.0.0.1,
// with JetStream stored in t.TempDir(), after edit has changed its options
// (to require credentials or TLS, or to turn JetStream off); it is shut
// down when the test ends. For servers that must require something
// StartNATS does not offer.
func StartNATSServer(t testing.TB, edit func(*server.Options)) *server.Server {
	t.Helper()
	opts := &server.Options{
		ServerName: "sitefollow-test", Host: "127.0.0.1", Port: server.RANDOM_PORT,
		JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		JetStreamMaxMemory: 64 << 20, JetStreamMaxStore: 1 << 30,
	}
	if edit != nil {
		edit(opts)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(30 * time.Second) {
		t.Fatalf("nats server not ready after 30s")
	}
	return ns
}

// ServerAddr is the host:port the server listens on for clients.
func ServerAddr(ns *server.Server) string { return ns.Addr().String() }

// CA is a certificate authority made for one test, writing its PEM files
// to a temporary directory.
type CA struct {
	// File is the CA certificate's PEM file.
	File string
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA makes a self-signed CA named commonName.
func NewCA(t testing.TB, commonName string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: commonName, Organization: []string{"sitefollow tests"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("create CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse CA: %v", err)
	}
	ca := &CA{dir: t.TempDir(), cert: cert, key: key}
	ca.File = ca.write(t, "ca.pem", "CERTIFICATE", der)
	return ca
}

// Issue makes a certificate for commonName signed by the CA, valid for
// 127.0.0.1 and localhost as a server and usable as a client, and returns
// its certificate and key PEM files.
func (ca *CA) Issue(t testing.TB, commonName string) (certFile, keyFile string) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: commonName, Organization: []string{"sitefollow tests"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("issue %s: %v", commonName, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("marshal key: %v", err)
	}
	return ca.write(t, commonName+".pem", "CERTIFICATE", der), ca.write(t, commonName+"-key.pem", "PRIVATE KEY", keyDER)
}

// ServerTLS makes TLS options for a server presenting a certificate for
// commonName; with verify it requires clients to present one signed by
// the CA.
func (ca *CA) ServerTLS(t testing.TB, commonName string, verify bool) func(*server.Options) {
	t.Helper()
	cert, key := ca.Issue(t, commonName)
	tc := &server.TLSConfigOpts{CertFile: cert, KeyFile: key, CaFile: ca.File, Verify: verify}
	cfg, err := server.GenTLSConfig(tc)
	if err != nil {
		t.Fatalf("server TLS: %v", err)
	}
	return func(o *server.Options) {
		o.TLSConfig, o.TLSVerify, o.TLSTimeout = cfg, verify, 5
	}
}

func (ca *CA) write(t testing.TB, name, kind string, der []byte) string {
	t.Helper()
	path := filepath.Join(ca.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatalf("write %s: %v", name, err)
	}
	return path
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatalf("serial: %v", err)
	}
	return n
}

// NkeyUser makes a user nkey, writes its seed to a file and returns the
// file with the server option that admits only that user.
func NkeyUser(t testing.TB) (seedFile string, require func(*server.Options)) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatalf("nkey: %v", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatalf("nkey seed: %v", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatalf("nkey public key: %v", err)
	}
	seedFile = filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatalf("write seed: %v", err)
	}
	return seedFile, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} }
}

// OperatorUser sets up decentralised (operator/JWT) authentication: an
// operator, an account with JetStream and a user of it. It returns the
// user's .creds file and the server option trusting the operator, with the
// account in an in-memory resolver.
func OperatorUser(t testing.TB) (credsFile string, require func(*server.Options)) {
	t.Helper()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("operator setup, %s: %v", what, err)
		}
	}
	okp, err := nkeys.CreateOperator()
	must("operator key", err)
	opub, err := okp.PublicKey()
	must("operator public key", err)
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "sitefollow-test"
	ojwt, err := oc.Encode(okp)
	must("operator jwt", err)
	opClaims, err := jwt.DecodeOperatorClaims(ojwt)
	must("decode operator", err)

	sysKP, err := nkeys.CreateAccount()
	must("system account key", err)
	sysPub, err := sysKP.PublicKey()
	must("system account public key", err)
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	sysJWT, err := sc.Encode(okp)
	must("system account jwt", err)

	akp, err := nkeys.CreateAccount()
	must("account key", err)
	apub, err := akp.PublicKey()
	must("account public key", err)
	ac := jwt.NewAccountClaims(apub)
	ac.Name = "APP"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	ajwt, err := ac.Encode(okp)
	must("account jwt", err)

	ukp, err := nkeys.CreateUser()
	must("user key", err)
	upub, err := ukp.PublicKey()
	must("user public key", err)
	uc := jwt.NewUserClaims(upub)
	uc.Name = "app"
	ujwt, err := uc.Encode(akp)
	must("user jwt", err)
	useed, err := ukp.Seed()
	must("user seed", err)
	creds, err := jwt.FormatUserConfig(ujwt, useed)
	must("format creds", err)
	credsFile = filepath.Join(t.TempDir(), "user.creds")
	must("write creds", os.WriteFile(credsFile, creds, 0o600))

	return credsFile, func(o *server.Options) {
		resolver := &server.MemAccResolver{}
		must("store system account", resolver.Store(sysPub, sysJWT))
		must("store account", resolver.Store(apub, ajwt))
		o.TrustedOperators = []*jwt.OperatorClaims{opClaims}
		o.AccountResolver = resolver
		o.SystemAccount = sysPub
	}
}

// WriteNATSContext saves a nats CLI context named name under configDir
// (as $XDG_CONFIG_HOME would be), with the given fields of the context
// file (url, user, password, creds, nkey, ca, cert, key, token), and with
// selected marks it as the nats CLI's selected context.
func WriteNATSContext(t testing.TB, configDir, name string, fields map[string]string, selected bool) {
	t.Helper()
	dir := filepath.Join(configDir, "nats", "context")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatalf("context dir: %v", err)
	}
	body, err := json.Marshal(fields)
	if err != nil {
		t.Fatalf("encode context: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".json"), body, 0o600); err != nil {
		t.Fatalf("write context: %v", err)
	}
	if selected {
		if err := os.WriteFile(filepath.Join(configDir, "nats", "context.txt"), []byte(name), 0o600); err != nil {
			t.Fatalf("select context: %v", err)
		}
	}
}
