package graphsim

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Site ids from the documentation's examples.
const (
	siteA       = "contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019,712a596e-90a1-49e3-9b48-bfa80bee8740"
	siteB       = "contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019,0271110f-634f-4300-a841-3a8a2e851851"
	siteUnknown = "contoso.sharepoint.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019,512a596e-90a1-49e3-9b48-bfa80bee8740"
)

// newSim starts a Server closed at the end of the test.
func newSim(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		s.Close()
		if err := s.Err(); err != nil {
			t.Errorf("Err after Close: %v", err)
		}
	})
	return s
}

// fetchToken runs the client credentials grant with a plain form POST.
func fetchToken(t testing.TB, s *Server) string {
	t.Helper()
	form := url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {s.ClientID()},
		"client_secret": {s.ClientSecret()},
		"scope":         {"https://graph.microsoft.com/.default"},
	}
	resp, err := s.HTTPClient().PostForm(s.AuthorityURL()+s.TenantID()+"/oauth2/v2.0/token", form)
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	defer closeBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token status: got %d, want 200", resp.StatusCode)
	}
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("decode token: %v", err)
	}
	return out.AccessToken
}

// result is a Graph answer read in full.
type result struct {
	status int
	header http.Header
	body   []byte
}

// call is one raw Graph request.
type call struct {
	method      string // default POST
	path        string // full escaped path; default built from op and user
	op          string
	user        string // escaped with url.PathEscape unless path is set
	body        string // default built from ids
	ids         []string
	token       string // "" sends no Authorization header
	header      map[string]string
	contentType string
}

func (c call) do(t *testing.T, s *Server) result {
	t.Helper()
	method := c.method
	if method == "" {
		method = http.MethodPost
	}
	path := c.path
	if path == "" {
		path = "/v1.0/users/" + url.PathEscape(c.user) + "/followedSites/" + c.op
	}
	body := c.body
	if body == "" && c.ids != nil {
		body = idsBody(t, c.ids...)
	}
	req, err := http.NewRequest(method, s.GraphURL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	resp, err := s.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer closeBody(t, resp)
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return result{status: resp.StatusCode, header: resp.Header, body: b}
}

func idsBody(t testing.TB, ids ...string) string {
	t.Helper()
	type entry struct {
		ID string `json:"id"`
	}
	in := struct {
		Value []entry `json:"value"`
	}{}
	for _, id := range ids {
		in.Value = append(in.Value, entry{ID: id})
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatalf("marshal body: %v", err)
	}
	return string(b)
}

func closeBody(t testing.TB, resp *http.Response) {
	t.Helper()
	if err := resp.Body.Close(); err != nil {
		t.Errorf("close body: %v", err)
	}
}

// entry is one element of a 200/207 "value" array, as a client reads it.
type entry struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Error *struct {
		ODataType  string `json:"@odata.type"`
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError struct {
			Code      string `json:"code"`
			ErrorType string `json:"errorType"`
		} `json:"innerError"`
	} `json:"error"`
}

func (r result) entries(t *testing.T) []entry {
	t.Helper()
	var out struct {
		Value []entry `json:"value"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("decode value body %q: %v", r.body, err)
	}
	return out.Value
}

// wholeError is a whole-call Graph error body.
type wholeError struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError struct {
			Code            string `json:"code"`
			Date            string `json:"date"`
			RequestID       string `json:"request-id"`
			ClientRequestID string `json:"client-request-id"`
		} `json:"innerError"`
	} `json:"error"`
}

func (r result) wholeError(t *testing.T) wholeError {
	t.Helper()
	var out wholeError
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("decode error body %q: %v", r.body, err)
	}
	return out
}

// checkGolden compares body with testdata/name after normalising both as
// indented JSON. GRAPHSIM_UPDATE_GOLDEN=1 rewrites the file.
func checkGolden(t *testing.T, name string, body []byte) {
	t.Helper()
	got := indentJSON(t, body)
	path := filepath.Join("testdata", name)
	if os.Getenv("GRAPHSIM_UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatalf("update golden: %v", err)
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden: %v", err)
	}
	if want := indentJSON(t, raw); !bytes.Equal(got, want) {
		t.Errorf("body differs from %s:\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func indentJSON(t *testing.T, b []byte) []byte {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("not JSON %q: %v", b, err)
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatalf("indent: %v", err)
	}
	return append(out, '\n')
}
