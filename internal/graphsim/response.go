package graphsim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// Content types as Graph sends them: OData parameters on success bodies,
// plain JSON on errors. Clients must compare media types, not strings.
const (
	contentTypeOData = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
	contentTypeJSON  = "application/json"
)

// reply is a decided answer to a Graph call.
type reply struct {
	code   int      // status for non-error answers
	value  [][]byte // entries of a {"value":[...]} body, each rendered JSON; nil: no body
	object []byte   // a whole JSON body (a site resource), when value is nil
	err    *graphError
	header http.Header

	retryAfter string        // Retry-After header value, verbatim
	wait       time.Duration // retryAfter as a duration
	until      time.Time     // retryAfter as an absolute time when it was a date
	announce   bool          // set the app-wide deadline once written
	throttled  bool          // refused for the app's rate (Call.Throttled)
}

func (r *reply) status() int {
	if r.err != nil {
		return r.err.status
	}
	return r.code
}

// graphError is a whole-call error.
type graphError struct {
	status    int
	code      string
	message   string
	innerCode string // optional detailed code inside innerError
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code       string      `json:"code"`
	Message    string      `json:"message"`
	InnerError innerDetail `json:"innerError"`
}

type innerDetail struct {
	Code            string `json:"code,omitempty"`
	Date            string `json:"date"`
	RequestID       string `json:"request-id"`
	ClientRequestID string `json:"client-request-id"`
}

// errorEntry is a failed site inside a 207, shaped like the documentation's
// example.
type errorEntry struct {
	ID    string    `json:"id"`
	Error siteError `json:"error"`
}

type siteError struct {
	ODataType  string         `json:"@odata.type"`
	Code       string         `json:"code"`
	Message    string         `json:"message"`
	InnerError siteInnerError `json:"innerError"`
}

type siteInnerError struct {
	Code       string `json:"code"`
	ErrorType  string `json:"errorType"`
	Message    string `json:"message"`
	StackTrace string `json:"stackTrace"`
	ThrowSite  string `json:"throwSite"`
}

func newErrorEntry(id, code string) errorEntry {
	msg := siteErrorMessage(code)
	errorType := "expected"
	if transientSiteCode(code) {
		errorType = "transient"
	}
	return errorEntry{ID: id, Error: siteError{
		ODataType:  "#oneDrive.error",
		Code:       code,
		Message:    msg,
		InnerError: siteInnerError{Code: code, ErrorType: errorType, Message: msg},
	}}
}

// errorEntryJSON renders newErrorEntry(id, code). Failed entries are rare
// enough for encoding/json.
func errorEntryJSON(id, code string) []byte {
	b, err := json.Marshal(newErrorEntry(id, code))
	if err != nil {
		// Only strings inside: Marshal cannot fail.
		panic("graphsim: encode error entry: " + err.Error())
	}
	return b
}

// errorEntryWithMessage is errorEntryJSON with message in place of the
// code's usual one, unless message is empty.
func errorEntryWithMessage(id, code, message string) []byte {
	if message == "" {
		return errorEntryJSON(id, code)
	}
	e := newErrorEntry(id, code)
	e.Error.Message, e.Error.InnerError.Message = message, message
	b, err := json.Marshal(e)
	if err != nil {
		panic("graphsim: encode error entry: " + err.Error())
	}
	return b
}

func transientSiteCode(code string) bool {
	switch code {
	case "activityLimitReached", "serviceNotAvailable", "generalException", "throttledRequest":
		return true
	}
	return false
}

func siteErrorMessage(code string) string {
	switch code {
	case "invalidRequest":
		return "The site Id information that is provided in the request is incorrect"
	case "accessDenied":
		return "Access denied. The operation is not supported under this site."
	case "activityLimitReached", "throttledRequest":
		return "The request has been throttled"
	case "serviceNotAvailable":
		return "The service is not available. Try the request again after a delay."
	case "generalException":
		return "An unspecified error has occurred."
	case "itemNotFound":
		return "The resource could not be found."
	}
	return fmt.Sprintf("The operation failed with %s.", code)
}

func throttledError() *graphError {
	return &graphError{
		status:    http.StatusTooManyRequests,
		code:      "TooManyRequests",
		innerCode: "throttledRequest",
		message:   "Too many requests. Please retry after the time given in Retry-After.",
	}
}

func unavailableError(status int) *graphError {
	switch status {
	case http.StatusServiceUnavailable:
		return &graphError{status: status, code: "serviceNotAvailable", message: "The service is temporarily unavailable."}
	case http.StatusGatewayTimeout:
		return &graphError{status: status, code: "gatewayTimeout", message: "The gateway timed out waiting for the backend."}
	}
	return &graphError{status: status, code: "generalException", message: "An unspecified error has occurred."}
}

// writeGraph sends rep with the headers every Graph answer carries. An error
// means the answer did not reach the client.
func (s *Server) writeGraph(w http.ResponseWriter, r *http.Request, rep *reply) error {
	requestID := newGUID()
	clientRequestID := r.Header.Get(headerClientRequestID)
	if clientRequestID == "" {
		clientRequestID = requestID
	}
	h := w.Header()
	for k, v := range rep.header {
		h[k] = v
	}
	// Keys in canonical form, as Set would write them.
	h["Request-Id"] = []string{requestID}
	h["Client-Request-Id"] = []string{clientRequestID}
	if rep.retryAfter != "" {
		h["Retry-After"] = []string{rep.retryAfter}
	}

	buf := s.buffer()
	defer s.bufs.Put(buf)
	contentType, err := encodeReply(buf, rep, requestID, clientRequestID)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return err
	}
	if contentType == "" {
		w.WriteHeader(rep.status())
		return nil
	}
	h["Content-Type"] = []string{contentType}
	// Sized up front, so that flushing it early (serveGraph) keeps it one
	// plain answer rather than a chunked one.
	h["Content-Length"] = []string{strconv.Itoa(buf.Len())}
	w.WriteHeader(rep.status())
	if _, err := w.Write(buf.Bytes()); err != nil {
		return fmt.Errorf("graphsim write answer: %w", err)
	}
	return nil
}

// encodeReply writes rep's body to buf and returns its content type, or ""
// for an answer without a body (a 204).
func encodeReply(buf *bytes.Buffer, rep *reply, requestID, clientRequestID string) (string, error) {
	switch {
	case rep.err != nil:
		b, err := json.Marshal(errorBody{Error: errorDetail{
			Code:    rep.err.code,
			Message: rep.err.message,
			InnerError: innerDetail{
				Code:            rep.err.innerCode,
				Date:            time.Now().UTC().Format("2006-01-02T15:04:05"),
				RequestID:       requestID,
				ClientRequestID: clientRequestID,
			},
		}})
		if err != nil {
			return "", fmt.Errorf("graphsim encode answer: %w", err)
		}
		buf.Write(b)
		return contentTypeJSON, nil
	case rep.object != nil:
		buf.Write(rep.object)
		return contentTypeOData, nil
	case rep.value != nil:
		// What json.Marshal writes for {"value":[...]} with these entries.
		buf.WriteString(`{"value":[`)
		for i, e := range rep.value {
			if i > 0 {
				buf.WriteByte(',')
			}
			buf.Write(e)
		}
		buf.WriteString(`]}`)
		return contentTypeOData, nil
	}
	return "", nil
}

// newGUID returns a random version-4 GUID, as Graph's request-id is.
func newGUID() string { return uuid.NewString() }
