package ledger

import (
	"cmp"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
)

// siteSeqs maps a site's hash (siteHash) to a request sequence while a
// record is read, changed and written. The record in the bucket names each
// site by its text form (siteName), for operators.
type siteSeqs map[uint64]uint64

// seqList is how a lease keeps a record between batches: the entries of a
// siteSeqs sorted by hash, 16 bytes each. A replica keeps two per kept
// lease, for every user it serves (10,000 users with 40 sites each are 6
// MB this way, two to three times that as maps with text names).
type seqList []seqEntry

type seqEntry struct{ site, seq uint64 }

// get returns the sequence of site (a hash), 0 when there is none.
func (l seqList) get(site uint64) uint64 {
	i, ok := slices.BinarySearchFunc(l, site, func(e seqEntry, site uint64) int { return cmp.Compare(e.site, site) })
	if !ok {
		return 0
	}
	return l[i].seq
}

// open returns the entries as a siteSeqs, with room for extra more, to be
// changed; it never returns nil.
func (l seqList) open(extra int) siteSeqs {
	out := make(siteSeqs, len(l)+extra)
	for _, e := range l {
		out[e.site] = e.seq
	}
	return out
}

// list is s as a seqList; nil when s holds nothing (most leases' records
// are empty).
func (s siteSeqs) list() seqList {
	if len(s) == 0 {
		return nil
	}
	out := make(seqList, 0, len(s))
	for site, seq := range s {
		out = append(out, seqEntry{site, seq})
	}
	slices.SortFunc(out, func(a, b seqEntry) int { return cmp.Compare(a.site, b.site) })
	return out
}

// siteHash is the 64-bit FNV-1a hash of a site's canonical key. Two of one
// user's sites sharing a hash is as likely as 2^-64 per pair.
func siteHash(site string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(site)) // a hash.Hash never fails to write
	return h.Sum64()
}

// siteName is the name a record gives a site: base64url of its hash, big
// endian. A site id is about 90 bytes and a busy user's record is
// rewritten twice per batch, so names are kept to 11 bytes.
func siteName(hash uint64) string {
	return base64.RawURLEncoding.EncodeToString(binary.BigEndian.AppendUint64(nil, hash))
}

// MarshalJSON writes the record's form: site name → sequence.
func (s siteSeqs) MarshalJSON() ([]byte, error) {
	if s == nil {
		return []byte("null"), nil
	}
	named := make(map[string]uint64, len(s))
	for h, seq := range s {
		named[siteName(h)] = seq
	}
	return json.Marshal(named)
}

// UnmarshalJSON reads the record's form; a name that is not a site hash
// makes the record unreadable.
func (s *siteSeqs) UnmarshalJSON(b []byte) error {
	var named map[string]uint64
	if err := json.Unmarshal(b, &named); err != nil {
		return err
	}
	out := make(siteSeqs, len(named))
	for name, seq := range named {
		raw, err := base64.RawURLEncoding.DecodeString(name)
		if err != nil || len(raw) != 8 {
			return fmt.Errorf("ledger: record names site %q, not a site hash", name)
		}
		out[binary.BigEndian.Uint64(raw)] = seq
	}
	*s = out
	return nil
}

// nonEmpty is s, or nil when s holds nothing, so that an empty record
// reads as before.
func (s siteSeqs) nonEmpty() siteSeqs {
	if len(s) == 0 {
		return nil
	}
	return s
}

// prune drops entries below floor: every request at or below such an entry
// has left the stream, so none can come back to be compared with it. Past
// maxRecordSites the oldest go too.
func (s siteSeqs) prune(floor uint64) {
	maps.DeleteFunc(s, func(_ uint64, seq uint64) bool { return seq < floor })
	if len(s) <= maxRecordSites {
		return
	}
	seqs := slices.Sorted(maps.Values(s))
	cut := seqs[len(seqs)-maxRecordSites]
	maps.DeleteFunc(s, func(_ uint64, seq uint64) bool { return seq < cut })
}
