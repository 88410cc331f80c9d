package graphsim

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestAppendObjectMatchesMarshal(t *testing.T) {
	ids := []string{
		siteA,
		strings.ToUpper(siteA),
		"Contoso.SharePoint.com,DA60E844-ba1d-49bc-B4D4-d5e36bae9019,AAAAAAAA-90A1-49E3-9B48-BFA80BEE8740",
		"a,00000000-0000-0000-0000-000000000000,ffffffff-ffff-ffff-ffff-ffffffffffff",
		"x-1.y-2.EXAMPLE.org,0123abcd-4567-89ef-ABCD-0123456789ab,89ABCDEF-0123-4567-89ab-cdef01234567",
	}
	for _, id := range ids {
		for _, upper := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/upper=%v", id, upper), func(t *testing.T) {
				checkAppendObject(t, id, upper)
			})
		}
	}
}

func FuzzAppendObject(f *testing.F) {
	f.Add("contoso.sharepoint.com", uint64(0xda60e844ba1d49bc), uint64(0xb4d4d5e36bae9019), uint64(0x712a596e90a149e3), uint64(0x9b48bfa80bee8740), uint64(0), true)
	f.Add("A.b-C", uint64(0), uint64(0), ^uint64(0), ^uint64(0), ^uint64(0), false)
	f.Fuzz(func(t *testing.T, host string, s1, s2, w1, w2, caseMask uint64, upper bool) {
		// GUIDs from the numbers, each hex letter upper-cased where its bit in
		// caseMask is set, so that most inputs are well-formed ids.
		guid := func(hi, lo uint64, shift int) string {
			var b [16]byte
			for i := range 8 {
				b[i], b[8+i] = byte(hi>>(56-8*i)), byte(lo>>(56-8*i))
			}
			g := []byte(formatGUID(b[:]))
			for i, c := range g {
				if c >= 'a' && c <= 'f' && caseMask>>((i+shift)%64)&1 == 1 {
					g[i] = c - 'a' + 'A'
				}
			}
			return string(g)
		}
		id := host + "," + guid(s1, s2, 0) + "," + guid(w1, w2, 36)
		if _, err := parseSiteID(id); err != nil {
			t.Skip()
		}
		checkAppendObject(t, id, upper)
	})
}

func checkAppendObject(t *testing.T, id string, upper bool) {
	t.Helper()
	site, err := parseSiteID(id)
	if err != nil {
		t.Fatalf("parseSiteID(%q): %v", id, err)
	}
	want, err := json.Marshal(site.object(upper))
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	if got := site.appendObject(nil, upper); string(got) != string(want) {
		t.Errorf("appendObject(%q, %v):\ngot  %s\nwant %s", id, upper, got, want)
	}
	info := &siteInfo{site: site}
	if got := info.object(upper); string(got) != string(want) {
		t.Errorf("siteInfo.object(%v):\ngot  %s\nwant %s", upper, got, want)
	}
}

func TestFormatGUID(t *testing.T) {
	for _, b := range [][]byte{
		make([]byte, 16),
		[]byte("\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"),
		[]byte("\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4\xf3\xf2\xf1\xf0"),
	} {
		want := fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
		if got := formatGUID(b); got != want {
			t.Errorf("formatGUID(%x): got %q, want %q", b, got, want)
		}
	}
	if g := newGUID(); !validGUID(g) || g[14] != '4' || !strings.ContainsRune("89ab", rune(g[19])) {
		t.Errorf("newGUID: got %q, want a version-4 GUID", g)
	}
}

func TestParseSiteID(t *testing.T) {
	tests := []struct {
		id      string
		wantErr string // "" for a valid id
		want    siteID
	}{
		{id: siteA, want: siteID{host: "contoso.sharepoint.com", site: "da60e844-ba1d-49bc-b4d4-d5e36bae9019", web: "712a596e-90a1-49e3-9b48-bfa80bee8740"}},
		{id: strings.ToUpper(siteA), want: siteID{host: "CONTOSO.SHAREPOINT.COM", site: "da60e844-ba1d-49bc-b4d4-d5e36bae9019", web: "712a596e-90a1-49e3-9b48-bfa80bee8740"}},
		{id: "", wantErr: "got 1"},
		{id: "a,b", wantErr: "got 2"},
		{id: siteA + ",x", wantErr: "got 4"},
		{id: ",,", wantErr: "bad hostname"},
		{id: "h\u00e9st,da60e844-ba1d-49bc-b4d4-d5e36bae9019,712a596e-90a1-49e3-9b48-bfa80bee8740", wantErr: "bad hostname"},
		{id: "host,da60e844-ba1d-49bc-b4d4-d5e36bae901,712a596e-90a1-49e3-9b48-bfa80bee8740", wantErr: `bad guid "da60e844-ba1d-49bc-b4d4-d5e36bae901"`},
		{id: "host,da60e844-ba1d-49bc-b4d4-d5e36bae9019,712a596e_90a1-49e3-9b48-bfa80bee8740", wantErr: `bad guid "712a596e_90a1`},
	}
	for _, tc := range tests {
		got, err := parseSiteID(tc.id)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("parseSiteID(%q): %v", tc.id, err)
		case tc.wantErr == "" && got != tc.want:
			t.Errorf("parseSiteID(%q): got %+v, want %+v", tc.id, got, tc.want)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("parseSiteID(%q): got error %v, want one containing %q", tc.id, err, tc.wantErr)
		}
	}
}

// scanIDsCases are bodies scanIDs must read itself (ok) or leave to
// encoding/json; FuzzScanIDs starts from them too.
var scanIDsCases = []struct {
	body string
	ok   bool
}{
	{body: `{"value":[{"id":"a"}]}`, ok: true},
	{body: " \t\r\n{ \"value\" : [ { \"id\" : \"" + siteA + "\" } , {\"id\":\"b\"}\n] }\n", ok: true},
	{body: `{"value":[{"id":"a"},{"id":"a"}]}`, ok: true},
	{body: `{"value":[{"id":"0123456789abcdef0123456789~!@#$%^&*()_+{}[]:;',./?"}]}`, ok: true},
	{body: `{"value":[]}`},
	{body: `{"value":[{"id":""}]}`},
	{body: `{"value":[{"id":"a\u0062"}]}`},
	{body: `{"value":[{"id":"a\"b"}]}`},
	{body: "{\"value\":[{\"id\":\"a\tb\"}]}"},
	{body: "{\"value\":[{\"id\":\"\xff\"}]}"},
	{body: "{\"value\":[{\"id\":\"caf\u00e9\"}]}"},
	{body: `{"value":[{"ID":"a"}]}`},
	{body: `{"Value":[{"id":"a"}]}`},
	{body: `{"value":[{"id":"a","id":"b"}]}`},
	{body: `{"value":[{"id":"a"}],"value":[{"id":"b"}]}`},
	{body: `{"value":[{"id":"a","x":1}]}`},
	{body: `{"value":[{"id":"a"}]} {}`},
	{body: `{"value":[{"id":"a"}]`},
	{body: `{"value":[{"id":"a"},]}`},
	{body: `{"value":[{"id":"a"}}`},
	{body: `{"value":[{"id":5}]}`},
	{body: `{"value":[{"id":null}]}`},
	{body: `{"value":null}`},
	{body: `[{"id":"a"}]`},
	{body: ``},
}

func TestScanIDs(t *testing.T) {
	for _, tc := range scanIDsCases {
		got, ok := scanIDs(tc.body)
		if ok != tc.ok {
			t.Errorf("scanIDs(%q): ok = %v, want %v", tc.body, ok, tc.ok)
		}
		checkScanIDs(t, tc.body, got, ok)
	}
}

func FuzzScanIDs(f *testing.F) {
	for _, tc := range scanIDsCases {
		f.Add(tc.body)
	}
	f.Fuzz(func(t *testing.T, body string) {
		got, ok := scanIDs(body)
		checkScanIDs(t, body, got, ok)
	})
}

// checkScanIDs holds scanIDs to encoding/json: what it accepts, decodeBodyJSON
// decodes without error into the same ids.
func checkScanIDs(t *testing.T, body string, got []string, ok bool) {
	t.Helper()
	if !ok {
		return
	}
	want, err := decodeBodyJSON([]byte(body))
	if err != nil {
		t.Fatalf("scanIDs accepted %q, which encoding/json refuses: %v", body, err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("scanIDs(%q): got %q, want %q", body, got, want)
	}
}

func TestKeySet(t *testing.T) {
	for _, n := range []int{0, 1, 31, 32, 33, 100} {
		var ks keySet
		for round := range 2 {
			for i := range n {
				k := fmt.Sprint("key-", i)
				if got, want := ks.add(k), round == 0; got != want {
					t.Fatalf("n=%d round %d: add(%q) = %v, want %v", n, round, k, got, want)
				}
			}
		}
	}
}

func TestPlainASCII(t *testing.T) {
	for c := range 256 {
		want := c >= 0x20 && c < 0x80 && c != '"' && c != '\\'
		for pos := range 8 {
			word := []byte("abcdefgh")
			word[pos] = byte(c)
			if got := plainASCII(load64(string(word), 0)); got != want {
				t.Errorf("plainASCII with %#x at %d: got %v, want %v", c, pos, got, want)
			}
		}
	}
}

func TestSiteInfoCacheBounded(t *testing.T) {
	s := newSim(t, Options{Sites: []string{siteA}})
	s.mu.Lock()
	defer s.mu.Unlock()
	for n := range 2*maxCachedIDs + 10 {
		id := fmt.Sprintf("host-%d.example.com,da60e844-ba1d-49bc-b4d4-d5e36bae9019,712a596e-90a1-49e3-9b48-bfa80bee8740", n)
		in := s.infoLocked(id)
		if in == nil || in.key != strings.ToLower(id) {
			t.Fatalf("infoLocked(%q): got %+v", id, in)
		}
		if len(s.ids) > maxCachedIDs {
			t.Fatalf("cache holds %d ids, want at most %d", len(s.ids), maxCachedIDs)
		}
	}
	if in := s.infoLocked("not,a,site"); in != nil {
		t.Errorf("infoLocked(malformed): got %+v, want nil", in)
	}
	upper := strings.ToUpper(siteA)
	if in := s.infoLocked(upper); in == nil || in.key != siteA || !s.knownInfoLocked(in) || in.site.host != "CONTOSO.SHAREPOINT.COM" {
		t.Errorf("infoLocked(%q): got %+v, want known site %s keeping the host's case", upper, in, siteA)
	}
}
