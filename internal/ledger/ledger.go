// Package ledger is the state that replicas of the consumer share so that,
// for every (user, site), Graph ends at the latest request however requests
// are spread over replicas, redeliveries and restarts. It lives in one
// JetStream key-value bucket and holds two kinds of key per user:
//
//   - lease.<user>: which replica may send Graph calls for the user now. It
//     is created only if absent and carries a per-key TTL, so a replica that
//     dies gives the user up after the TTL without anyone's help. While one
//     replica holds it, no other has a call for that user in flight, so two
//     requests for one pair can never race to Graph.
//   - applied.<user>: per site, the stream sequence of the newest request
//     Graph confirmed. A request no newer than that is stale (a redelivery
//     after a lost ack, an older request sent back for redelivery, a
//     multi-site message whose other sites were applied) and is skipped. It
//     is written, by compare-and-set, before the requests are acknowledged.
//     Beside it, per site, the newest request sent whose outcome is not
//     known yet (pending): marked before the call goes out, cleared once the
//     request is settled. A replica that dies between Graph's answer and the
//     record leaves the mark, and an older request for that site then waits
//     until the marked one is settled (it is redelivered) or has left the
//     stream, instead of overtaking it.
//
// User keys are base64url of the canonical user id, because key-value keys
// allow neither "@" nor most punctuation user principal names may hold.
package ledger

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors a caller branches on.
var (
	// ErrBusy means another replica holds the user's lease: try later.
	ErrBusy = errors.New("ledger: user is served by another replica")
	// ErrLost means the lease ended (expired while NATS was unreachable, or
	// taken over): the holder must not send more calls for the user.
	ErrLost = errors.New("ledger: lease lost")
)

// recordTTL bounds how long an idle user's record lives. A record only
// matters while a request older than it may still come back, and no request
// waits in the stream anywhere near this long.
const recordTTL = 7 * 24 * time.Hour

// maxRecordSites bounds one user's record. Entries are dropped, oldest
// first, only past it; the floor normally prunes records long before.
const maxRecordSites = 5000

// refreshEvery is how often the request stream's first sequence and
// identity are re-read, for pruning and to notice a re-created stream.
const refreshEvery = 500 * time.Millisecond

// Config configures a Ledger.
type Config struct {
	// Bucket is the key-value bucket; it must exist (see provision).
	Bucket string
	// Stream is the request stream whose sequences the records hold.
	Stream string
	// Owner names this replica in the leases it holds, for operators.
	Owner string
	// LeaseTTL is how long a lease lives without renewal: how long a
	// replica that died keeps its users from the others.
	LeaseTTL time.Duration
	// Now is the clock; nil means time.Now. Lease validity is judged on it,
	// so it must advance at the rate of real time.
	Now func() time.Time
}

// Ledger reads and writes leases and records. It is safe for concurrent use.
type Ledger struct {
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	stream jetstream.Stream // the request stream, looked up once
	cfg    Config

	mu        sync.Mutex
	floor     uint64    // the request stream's first sequence
	created   time.Time // the request stream's creation time: its identity
	refreshed time.Time // when floor and created were read
}

// Open returns a Ledger on an existing bucket and reads the request
// stream's state once.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Ledger, error) {
	switch {
	case cfg.Bucket == "" || cfg.Stream == "":
		return nil, errors.New("ledger: open: bucket and stream are required")
	case cfg.LeaseTTL < 2*time.Second:
		return nil, fmt.Errorf("ledger: open: lease TTL %v is shorter than 2s", cfg.LeaseTTL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("ledger: open bucket %s: %w", cfg.Bucket, err)
	}
	stream, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("ledger: open stream %s: %w", cfg.Stream, err)
	}
	l := &Ledger{js: js, kv: kv, stream: stream, cfg: cfg}
	if err := l.refresh(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// refresh re-reads the request stream's first sequence and creation time.
func (l *Ledger) refresh(ctx context.Context) error {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("ledger: read stream %s: %w", l.cfg.Stream, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.floor = info.State.FirstSeq
	l.created = info.Created
	l.refreshed = l.cfg.Now()
	return nil
}

// view returns the stream's floor and epoch, re-reading them when stale. A
// failed re-read keeps the last view: pruning less is always safe.
func (l *Ledger) view(ctx context.Context) (floor uint64, epoch string) {
	l.mu.Lock()
	stale := l.cfg.Now().Sub(l.refreshed) >= refreshEvery
	if stale {
		// Only one caller re-reads; the others use the current view.
		l.refreshed = l.cfg.Now()
	}
	l.mu.Unlock()
	if stale {
		if err := l.refresh(ctx); err != nil {
			l.mu.Lock()
			l.refreshed = time.Time{}
			l.mu.Unlock()
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.floor, l.created.UTC().Format(time.RFC3339Nano)
}

// Lease is one replica's exclusive right to send Graph calls for one user,
// with the user's record as it stood when the lease was taken. Only its
// holder uses it, from one goroutine at a time.
type Lease struct {
	userKey  string
	key      string // base64url of userKey
	rev      uint64 // revision of the lease key
	acquired time.Time
	// mu guards rev and validUntil: a batch's calls and its keep-alive both
	// renew the lease.
	mu sync.Mutex
	// validUntil is conservative: the TTL counted from before the request
	// that set it, so the server's expiry is never earlier.
	validUntil time.Time

	epoch   string
	applied seqList // site → sequence of the newest applied request
	pending seqList // site → sequence of the newest request sent, outcome unknown
	recRev  uint64  // revision of the record key; 0 when there is none
}

// Applied returns the sequence of the newest request applied for site (a
// canonical site key), 0 when none is known.
func (ls *Lease) Applied(site string) uint64 { return ls.applied.get(siteHash(site)) }

// Pending returns the sequence of the newest request sent for site whose
// outcome is not known (a replica died, or Graph did not answer), 0 when
// none.
func (ls *Lease) Pending(site string) uint64 { return ls.pending.get(siteHash(site)) }

// Age is how long the lease has been held.
func (ls *Lease) Age(now time.Time) time.Duration { return now.Sub(ls.acquired) }

// leaseValue is what a lease key holds, for operators reading the bucket.
type leaseValue struct {
	Owner string    `json:"owner"`
	Since time.Time `json:"since"`
}

// record is what an applied key holds.
type record struct {
	Stream  string   `json:"stream"`
	Epoch   string   `json:"epoch"`
	Applied siteSeqs `json:"applied"`
	Pending siteSeqs `json:"pending,omitempty"`
}

func encodeKey(userKey string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(userKey))
}

// Acquire takes the lease of the user with canonical key userKey and reads
// the user's record. It returns ErrBusy when another replica holds it.
func (l *Ledger) Acquire(ctx context.Context, userKey string) (*Lease, error) {
	ls := &Lease{userKey: userKey, key: encodeKey(userKey)}
	value, err := json.Marshal(leaseValue{Owner: l.cfg.Owner, Since: l.cfg.Now().UTC()})
	if err != nil {
		return nil, fmt.Errorf("ledger: acquire: %w", err)
	}
	sent := l.cfg.Now()
	rev, err := l.kv.Create(ctx, "lease."+ls.key, value, jetstream.KeyTTL(l.cfg.LeaseTTL))
	switch {
	case errors.Is(err, jetstream.ErrKeyExists):
		return nil, ErrBusy
	case err != nil:
		return nil, fmt.Errorf("ledger: acquire lease of %q: %w", userKey, err)
	}
	ls.rev, ls.acquired, ls.validUntil = rev, sent, sent.Add(l.cfg.LeaseTTL)
	if err := l.load(ctx, ls); err != nil {
		// Give the lease back rather than leave it to its TTL.
		if rerr := l.Release(context.WithoutCancel(ctx), ls); rerr != nil {
			return nil, errors.Join(err, rerr)
		}
		return nil, err
	}
	return ls, nil
}

// load reads the user's record into ls. A record written for another
// incarnation of the request stream (deleted and re-created: sequences
// start again at 1) says nothing about the current one.
func (l *Ledger) load(ctx context.Context, ls *Lease) error {
	_, epoch := l.view(ctx)
	ls.epoch, ls.applied, ls.pending, ls.recRev = epoch, nil, nil, 0
	e, err := l.kv.Get(ctx, "applied."+ls.key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return nil
	case err != nil:
		return fmt.Errorf("ledger: read record of %q: %w", ls.userKey, err)
	}
	ls.recRev = e.Revision()
	var r record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		// An unreadable record is overwritten on the next commit; skipping
		// nothing is the safe reading of it only because the lease keeps
		// every other replica away meanwhile.
		return nil
	}
	if r.Stream == l.cfg.Stream && r.Epoch == epoch {
		ls.applied, ls.pending = r.Applied.list(), r.Pending.list()
	}
	return nil
}

// Ensure makes sure the lease stays valid for at least need (a Graph call's
// timeout), renewing it if less remains. ErrLost means it is gone.
func (l *Ledger) Ensure(ctx context.Context, ls *Lease, need time.Duration) error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if l.cfg.Now().Add(need).Before(ls.validUntil) {
		return nil
	}
	value, err := json.Marshal(leaseValue{Owner: l.cfg.Owner, Since: ls.acquired.UTC()})
	if err != nil {
		return fmt.Errorf("ledger: renew: %w", err)
	}
	sent := l.cfg.Now()
	rev, err := l.write(ctx, "lease."+ls.key, value, ls.rev, l.cfg.LeaseTTL)
	if err != nil {
		return fmt.Errorf("ledger: renew lease of %q: %w", ls.userKey, err)
	}
	ls.rev, ls.validUntil = rev, sent.Add(l.cfg.LeaseTTL)
	if !l.cfg.Now().Add(need).Before(ls.validUntil) {
		return fmt.Errorf("ledger: renew lease of %q: a %v TTL cannot cover %v: %w", ls.userKey, l.cfg.LeaseTTL, need, ErrLost)
	}
	return nil
}

// KeepAlive renews ls every third of the lease TTL until stop is called,
// so a batch that waits long for Graph (throttled, paced) keeps its user
// rather than losing it halfway and sending its sites back. stop waits for
// the renewer to end; a renewal that fails ends it too, and the batch's
// next call or its commit then finds the lease lost.
func (l *Ledger) KeepAlive(ctx context.Context, ls *Lease) (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(l.cfg.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if l.Ensure(ctx, ls, l.cfg.LeaseTTL*2/3) != nil {
					return
				}
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}

// Outcome is what became of one request for one site in a batch.
type Outcome int

// The outcomes Commit records.
const (
	// Applied: Graph confirmed it.
	Applied Outcome = iota + 1
	// Settled: it will not be sent again (dead-lettered, skipped, or
	// refused by Graph for good), and Graph did not apply it.
	Settled
	// Unknown: sent, but Graph's answer never came (a timeout, a cut
	// connection); it may have been applied. It stays marked pending.
	Unknown
)

// Intend marks the requests about to be sent (site key → sequence) as
// pending, before any of them goes out.
func (l *Ledger) Intend(ctx context.Context, ls *Lease, sending map[string]uint64) error {
	if len(sending) == 0 {
		return nil
	}
	pending := ls.pending.open(len(sending))
	for site, seq := range sending {
		k := siteHash(site)
		pending[k] = max(pending[k], seq)
	}
	return l.store(ctx, ls, ls.applied.open(0), pending, "mark pending")
}

// Commit records what became of the requests of a batch (site key →
// sequence and outcome): applied ones raise the site's applied sequence,
// and every request no longer in doubt clears its pending mark. It also
// drops entries no request still in the stream can be older than.
func (l *Ledger) Commit(ctx context.Context, ls *Lease, outcomes map[string]Settlement) error {
	if len(outcomes) == 0 {
		return nil
	}
	applied, pending := ls.applied.open(len(outcomes)), ls.pending.open(0)
	changed := false
	for site, o := range outcomes {
		site := siteHash(site)
		switch o.Outcome {
		case Applied:
			if o.Seq > applied[site] {
				applied[site], changed = o.Seq, true
			}
			if p, ok := pending[site]; ok && p <= o.Seq {
				delete(pending, site)
				changed = true
			}
		case Settled:
			if p, ok := pending[site]; ok && p <= o.Seq {
				delete(pending, site)
				changed = true
			}
		}
	}
	if !changed {
		return nil
	}
	return l.store(ctx, ls, applied, pending, "commit")
}

// Settlement is one request's outcome for one site.
type Settlement struct {
	Seq     uint64
	Outcome Outcome
}

// store writes the record by compare-and-set, pruned, while the lease is
// still valid.
func (l *Ledger) store(ctx context.Context, ls *Lease, applied, pending siteSeqs, what string) error {
	ls.mu.Lock()
	valid := l.cfg.Now().Before(ls.validUntil)
	ls.mu.Unlock()
	if !valid {
		return fmt.Errorf("ledger: %s for %q: %w", what, ls.userKey, ErrLost)
	}
	floor, _ := l.view(ctx)
	applied.prune(floor)
	pending.prune(floor)
	value, err := json.Marshal(record{Stream: l.cfg.Stream, Epoch: ls.epoch, Applied: applied.nonEmpty(), Pending: pending.nonEmpty()})
	if err != nil {
		return fmt.Errorf("ledger: %s for %q: %w", what, ls.userKey, err)
	}
	rev, err := l.write(ctx, "applied."+ls.key, value, ls.recRev, recordTTL)
	if err != nil {
		return fmt.Errorf("ledger: %s for %q: %w", what, ls.userKey, err)
	}
	ls.applied, ls.pending, ls.recRev = applied.list(), pending.list(), rev
	return nil
}

// InStream reports whether the request with sequence seq is still in the
// request stream, that is, not yet acknowledged (WorkQueue retention
// removes acknowledged requests) nor deleted.
func (l *Ledger) InStream(ctx context.Context, seq uint64) (bool, error) {
	_, err := l.stream.GetMsg(ctx, seq)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("ledger: look up request %d: %w", seq, err)
	}
	return true, nil
}

// Release gives the lease up so another replica may serve the user at once.
// A lease that cannot be released ends by its TTL.
func (l *Ledger) Release(ctx context.Context, ls *Lease) error {
	ls.mu.Lock()
	rev := ls.rev
	ls.validUntil = time.Time{}
	ls.mu.Unlock()
	err := l.kv.Purge(ctx, "lease."+ls.key, jetstream.LastRevision(rev), jetstream.PurgeTTL(l.cfg.LeaseTTL))
	if err != nil {
		return fmt.Errorf("ledger: release lease of %q: %w", ls.userKey, err)
	}
	return nil
}

// write replaces key's value if its revision is still rev (0: the key does
// not exist or was deleted), with a per-message TTL. The key-value API sets
// a TTL only on create, so this publishes to the bucket's subject directly,
// as the key-value API itself does.
func (l *Ledger) write(ctx context.Context, key string, value []byte, rev uint64, ttl time.Duration) (uint64, error) {
	if rev == 0 {
		r, err := l.kv.Create(ctx, key, value, jetstream.KeyTTL(ttl))
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("%w: %w", err, ErrLost)
		}
		return r, err
	}
	msg := nats.NewMsg("$KV." + l.cfg.Bucket + "." + key)
	msg.Data = value
	ack, err := l.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, fmt.Errorf("%w: %w", err, ErrLost)
		}
		return 0, err
	}
	return ack.Sequence, nil
}

// BucketConfig is the key-value bucket the ledger needs: one revision per
// key, per-key TTLs (LimitMarkerTTL enables them), replicated like the
// streams.
func BucketConfig(bucket string, replicas int, leaseTTL time.Duration) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:         bucket,
		Description:    "sitefollow: user leases and the newest request applied per (user, site)",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       replicas,
		LimitMarkerTTL: leaseTTL,
	}
}

// String renders a lease for logs.
func (ls *Lease) String() string {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return "lease(" + strconv.Quote(ls.userKey) + ", rev " + strconv.FormatUint(ls.rev, 10) + ")"
}

// StreamCreated re-reads the request stream and returns when it was
// created: its identity, since a re-created stream restarts its sequences.
func (l *Ledger) StreamCreated(ctx context.Context) (time.Time, error) {
	if err := l.refresh(ctx); err != nil {
		return time.Time{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.created, nil
}
