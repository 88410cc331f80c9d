package dlq

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/sitefollow/sitefollow/internal/event"
)

// CodeOther is the subject token and metric label every code outside
// knownCodes folds into: Graph may send any code, and subjects and metric
// series must not grow with them. The full code stays in the body.
const CodeOther = "other"

// knownCodes are the codes that keep a subject and a metric label of their
// own, by lower-case spelling: the consumer's own, graphclient's, and those
// Microsoft documents for Graph and SharePoint errors.
var knownCodes = func() map[string]string {
	codes := []string{
		// The consumer's own (internal/event).
		event.CodeInvalidEvent, event.CodeRetriesExhausted, event.CodeUserNotFound, event.CodeUnspecified, event.CodeSiteNotFound,
		// internal/graphclient's verdicts Graph did not name.
		"throttled", "serviceUnavailable", "gatewayTimeout", "networkError", "timeout", "canceled",
		"unauthenticated", "tokenUnavailable", "unconfirmed", "invalidResponse", "invalidOperation",
		"invalidUserId", "notPermitted", "invalidSiteUrl",
		// Graph's documented error codes.
		"accessDenied", "activityLimitReached", "generalException", "invalidRange", "invalidRequest",
		"itemNotFound", "malwareDetected", "nameAlreadyExists", "notAllowed", "notSupported",
		"resourceModified", "resyncRequired", "serviceNotAvailable", "quotaLimitReached",
		"throttledRequest", "Request_ResourceNotFound", "Request_BadRequest", "Authorization_RequestDenied",
		"Authorization_IdentityNotFound", "BadRequest", "Forbidden", "NotFound", "ResourceNotFound",
		"InvalidAuthenticationToken", "TooManyRequests", "UnknownError", "InternalServerError",
		"ServiceUnavailable", "ErrorAccessDenied", "ErrorItemNotFound", "ErrorInvalidUser",
	}
	m := make(map[string]string, len(codes))
	for _, c := range codes {
		m[strings.ToLower(c)] = c
	}
	return m
}()

// Label is the bounded form of code for subjects and metric labels: a known
// code in its canonical spelling, otherwise CodeOther.
func Label(code string) string {
	if c, ok := knownCodes[strings.ToLower(code)]; ok {
		return c
	}
	return CodeOther
}

// Subject returns the subject a dead letter with code goes to:
// <prefix>.<Label(code)>. A code is never trusted to be a subject token nor
// to be short: an unknown one goes to <prefix>.other.
func Subject(prefix, code string) string {
	return prefix + "." + Label(code)
}

// maxHeaderBytes bounds every header value built from outside data.
const maxHeaderBytes = 256

// HeaderValue is s made safe for a NATS header: control characters (CR and
// LF would end the header), bidirectional controls, line separators and
// invalid UTF-8 (and U+FFFD, its stand-in) become '_', and the result is at most maxHeaderBytes. The
// full value, bounded, stays in the body.
func HeaderValue(s string) string { return Printable(s, maxHeaderBytes) }

// Printable is s cut to at most n bytes (event.Truncate) with every
// character that could disturb a header or a terminal (controls,
// bidirectional controls, line separators, invalid UTF-8) replaced by '_':
// for showing outside data to people.
func Printable(s string, n int) string {
	s = event.Truncate(s, n)
	if clean(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unsafeRune(r) {
			b.WriteByte('_')
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func clean(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) ||
		unicode.In(r, unicode.Zl, unicode.Zp) || r == '\u200b' || r == '\ufeff'
}
