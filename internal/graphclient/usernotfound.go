package graphclient

import (
	"net/http"
	"strconv"
	"strings"
)

// CodeUserNotFound is the code of a SiteError (Outcome Rejected) when Graph
// answered a whole call as if the user did not exist yet: any whole-call
// 404, or an error whose code or detailed code is resourceBeingProvisioned,
// or whose message says the user's mysite is not found. Newly created users
// answer so until their OneDrive and profile are provisioned, so a caller
// may try again later rather than give up. The SiteError's Message keeps
// what Graph said: its status, code, detailed codes and message.
const CodeUserNotFound = "userNotFound"

// provisioningCode is the detailed code Graph gives while a new user's
// resources are being made.
const provisioningCode = "resourcebeingprovisioned"

// mysiteNotFound is the message Graph gives a user whose OneDrive is not
// provisioned yet ("User's mysite not found"), matched in lower case. Only
// the fallback: codes are matched first.
const mysiteNotFound = "mysite not found"

// userNotVisible returns the CodeUserNotFound error for an answer that says
// the user is not visible yet, or nil. A 401 is about the app's token, never
// the user, and a transient status (a throttle, an outage) is retried as
// such: its body is not read here, so a storm of 429s is decoded once each.
func (p *response) userNotVisible() *SiteError {
	if p.status < 400 || p.status == http.StatusUnauthorized || transientStatus(p.status) {
		return nil
	}
	g := p.graphError()
	if p.status != http.StatusNotFound && !g.provisioning() {
		return nil
	}
	var said strings.Builder
	said.WriteString("graph answered " + strconv.Itoa(p.status))
	if g != nil {
		for code, in := g.Code, g.InnerError; code != "" || in != nil; {
			if code != "" {
				said.WriteString(" " + code)
			}
			if in == nil {
				break
			}
			code, in = in.Code, in.InnerError
		}
		if g.Message != "" {
			said.WriteString(": " + g.Message)
		}
	}
	e := p.wholeCallError(CodeUserNotFound)
	e.Code, e.Message = CodeUserNotFound, said.String()
	return e
}

// provisioning reports whether a whole-call error says the user's
// resources are still being made: resourceBeingProvisioned as its code or a
// detailed code, or else a message saying the mysite is not found.
func (g *graphError) provisioning() bool {
	if g == nil {
		return false
	}
	if strings.EqualFold(g.Code, provisioningCode) {
		return true
	}
	for in := g.InnerError; in != nil; in = in.InnerError {
		if strings.EqualFold(in.Code, provisioningCode) {
			return true
		}
	}
	return strings.Contains(strings.ToLower(g.Message), mysiteNotFound)
}
