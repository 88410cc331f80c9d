package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"unicode"
)

// RootCAs returns the system roots plus the certificates in CAFile, for
// TLS to Graph and the authority host. It returns nil, meaning the system
// roots alone, when CAFile is empty.
func (c Config) RootCAs() (*x509.CertPool, error) {
	if c.CAFile == "" {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		return nil, fmt.Errorf("load system roots: %w", err)
	}
	if err := appendPEMFile(pool, c.CAFile); err != nil {
		return nil, err
	}
	return pool, nil
}

func appendPEMFile(pool *x509.CertPool, path string) error {
	pem, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read CA file: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return errors.New("contains no PEM certificate")
	}
	return nil
}

func checkCAFile(path string) error {
	if path == "" {
		return nil
	}
	return appendPEMFile(x509.NewCertPool(), path)
}

func checkOptionalFile(path string) error {
	if path == "" {
		return nil
	}
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return errors.New("is not a regular file")
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// checkContextName accepts what can name a nats CLI context file: no path
// separators, so the name cannot reach outside the context directory.
func checkContextName(v string) error {
	switch {
	case v == "":
		return nil
	case v == "." || v == ".." || strings.ContainsAny(v, `/\`):
		return errors.New("must be a context name, not a path")
	case strings.ContainsFunc(v, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return errors.New("must not contain spaces or control characters")
	}
	return nil
}

func checkNoControl(v string) error {
	if strings.ContainsFunc(v, unicode.IsControl) {
		return errors.New("must not contain control characters")
	}
	return nil
}

// checkNATSURLs avoids echoing url.Parse errors, which quote the URL and so
// any password in it.
func checkNATSURLs(v string) error {
	for part := range strings.SplitSeq(v, ",") {
		u, err := url.Parse(strings.TrimSpace(part))
		if err != nil || !isNATSScheme(u.Scheme) || u.Host == "" {
			return errors.New("must be nats://, tls://, ws:// or wss:// URLs with a host, separated by commas")
		}
	}
	return nil
}

func isNATSScheme(s string) bool {
	switch s {
	case "nats", "tls", "ws", "wss":
		return true
	}
	return false
}

// redactURLs hides the user part of URLs (NATS URLs, comma-separated, or a
// refused Graph or authority URL): it holds a password or, on its own, an
// auth token.
func redactURLs(v string) string {
	parts := strings.Split(v, ",")
	for i, part := range parts {
		u, err := url.Parse(strings.TrimSpace(part))
		switch {
		case err != nil && strings.Contains(part, "@"):
			parts[i] = "[unparsable URL]"
		case err == nil && u.User != nil:
			u.User = url.User("redacted")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

func checkGraphURL(v string) error {
	u, err := url.Parse(v)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return errors.New("must be an absolute URL such as https://graph.microsoft.com")
	}
	if u.User != nil {
		return errors.New("must not contain credentials")
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return errors.New("must have no path, query or fragment")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return errors.New("http is allowed only for loopback hosts; use https")
	}
	return errors.New("must use https")
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkAuthority(v string) error {
	u, err := url.Parse(v)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return errors.New("must be an absolute URL such as https://login.microsoftonline.com/")
	}
	if u.Scheme != "https" {
		return errors.New("must use https")
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return errors.New("must have no credentials, query or fragment")
	}
	return nil
}

func trimSlash(v string) string { return strings.TrimSuffix(v, "/") }

func addSlash(v string) string {
	if v == "" || strings.HasSuffix(v, "/") {
		return v
	}
	return v + "/"
}

func checkOrg(v string) error {
	switch {
	case strings.TrimSpace(v) == "":
		return errors.New("must not be empty")
	case strings.Contains(v, "|"):
		return errors.New("must not contain |, which separates User-Agent fields")
	case strings.ContainsFunc(v, unicode.IsControl):
		return errors.New("must not contain control characters")
	}
	return nil
}

// checkTenant accepts a GUID or a domain, which is what azidentity accepts
// and what can sit safely in the token endpoint's path.
func checkTenant(v string) error {
	for _, r := range v {
		if !(r == '-' || r == '.' || r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r))) {
			return errors.New("must be a tenant ID or domain: letters, digits, '.' and '-'")
		}
	}
	return nil
}

func checkClientID(v string) error {
	if strings.ContainsFunc(v, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return errors.New("must not contain spaces or control characters")
	}
	return nil
}

func checkSecret(string) error { return nil }

func checkHostPort(v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("must be host:port: %w", err)
	}
	if strings.ContainsFunc(host, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return errors.New("host must not contain spaces or control characters")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("port must be a number from 0 to 65535")
	}
	return nil
}

// checkName checks a JetStream stream or consumer name.
func checkName(v string) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	if strings.ContainsFunc(v, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(".*>/\\", r)
	}) {
		return errors.New(`must not contain spaces, control characters, or any of . * > / \`)
	}
	return nil
}

// checkBucket checks a key-value bucket name, which JetStream restricts to
// letters, digits, '-' and '_'.
func checkBucket(v string) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	for _, r := range v {
		if !(r == '-' || r == '_' || r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r))) {
			return errors.New("must hold only letters, digits, '-' and '_'")
		}
	}
	return nil
}

// checkSubject checks a NATS subject, or with wildcards a subject filter.
func checkSubject(wildcards bool) func(string) error {
	return func(v string) error {
		if v == "" {
			return errors.New("must not be empty")
		}
		tokens := strings.Split(v, ".")
		for i, t := range tokens {
			switch {
			case t == "":
				return errors.New("must not have empty tokens")
			case strings.ContainsFunc(t, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
				return errors.New("must not contain spaces or control characters")
			case !wildcards && strings.ContainsAny(t, "*>"):
				return errors.New("must not contain wildcards")
			case t == ">" && i != len(tokens)-1:
				return errors.New("> must be the last token")
			case t != "*" && t != ">" && strings.ContainsAny(t, "*>"):
				return errors.New("wildcards must be whole tokens")
			}
		}
		return nil
	}
}

// subjectsOverlap reports whether some subject matches both filters, which
// JetStream refuses across streams.
func subjectsOverlap(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(at) && i < len(bt); i++ {
		switch {
		case at[i] == ">" || bt[i] == ">":
			return true
		case at[i] == "*" || bt[i] == "*" || at[i] == bt[i]:
		default:
			return false
		}
	}
	return len(at) == len(bt)
}
