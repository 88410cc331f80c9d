// Package budget shares one app's Graph budget among the consumer's
// replicas over core NATS. Graph throttles per app and tenant, not per
// process, so N replicas pacing alone would together send N times what the
// app may.
//
// Every replica publishes a heartbeat each Interval on Subject+".hello"
// with what it admits and whether it has calls waiting, and, when Graph
// throttles it, a signal on Subject+".throttle" with the pause Graph asked
// for and the app-wide rate it cut to. Each replica then:
//   - runs at 1/N of the app's rate, N being itself and the peers that
//     were busy in their latest heartbeat (an idle replica leaves its share
//     to the busy ones);
//   - counts the peers' admitted calls in what it measures at a throttle,
//     so the rate it cuts to is the app's, not its own;
//   - pauses with the peer that was throttled, and adopts its cut.
//
// Nothing here is needed for correctness, only for efficiency: when NATS is
// slow or away, heartbeats and signals are late or lost, peers age out
// after three intervals, and each replica paces on what Graph tells it
// alone (it still honours every Retry-After it receives itself). A replica
// that dies stops sending heartbeats and its share returns to the others
// within three intervals.
package budget

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// Pacer is the local side of the shared budget: the Graph client's pacing.
type Pacer interface {
	// Admitted is the calls per second Graph admitted from this replica
	// lately, and Waiting whether calls wait for their turn.
	Admitted() float64
	Waiting() bool
	// SetShare sets this replica's part of the app's budget and what the
	// busy peers admit together.
	SetShare(share, peers float64)
	// Adopt applies another replica's throttle: pause every call for
	// pause, and run no faster than rate app-wide (0: no change).
	Adopt(pause time.Duration, rate float64)
}

// Config configures a Share.
type Config struct {
	Conn *nats.Conn
	// Subject is the prefix of the budget's subjects; default
	// DefaultSubject.
	Subject string
	// Interval is the heartbeat period; default DefaultInterval.
	Interval time.Duration
	// MaxPause bounds a pause a peer can impose (the Graph client's own
	// MaxRetryAfter).
	MaxPause time.Duration
	Logger   zerolog.Logger
}

// Defaults.
const (
	DefaultSubject  = "sitefollow.budget"
	DefaultInterval = time.Second
	// peerTimeout, in intervals, is how long a silent peer still counts.
	peerTimeout = 3
	// maxPeers bounds the peers tracked, whatever arrives on the subject.
	maxPeers = 1024
	// maxMessageBytes bounds a message read from the subject.
	maxMessageBytes = 1024
)

// Share is one replica's membership in the shared budget.
type Share struct {
	conn     *nats.Conn
	hello    string
	throttle string
	interval time.Duration
	maxPause time.Duration
	id       string
	log      zerolog.Logger
}

// New validates cfg and returns a Share.
func New(cfg Config) (*Share, error) {
	if cfg.Conn == nil {
		return nil, errors.New("budget: new: no NATS connection")
	}
	subject := cfg.Subject
	if subject == "" {
		subject = DefaultSubject
	}
	interval := cfg.Interval
	if interval == 0 {
		interval = DefaultInterval
	}
	if interval < 0 || cfg.MaxPause < 0 {
		return nil, errors.New("budget: new: interval and max pause must not be negative")
	}
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("budget: new: replica id: %w", err)
	}
	return &Share{
		conn:     cfg.Conn,
		hello:    subject + ".hello",
		throttle: subject + ".throttle",
		interval: interval,
		maxPause: cfg.MaxPause,
		id:       hex.EncodeToString(raw[:]),
		log:      cfg.Logger,
	}, nil
}

// message is the wire form of both subjects.
type message struct {
	Replica  string  `json:"replica"`
	Admitted float64 `json:"admitted,omitempty"`
	Busy     bool    `json:"busy,omitempty"`
	// PauseMs and Rate are set on a throttle signal.
	PauseMs int64   `json:"pauseMs,omitempty"`
	Rate    float64 `json:"rate,omitempty"`
}

// Throttled tells the other replicas that Graph throttled this one: pause
// for pause, and the app-wide rate this replica cut to (0 if it did not).
// It never blocks on NATS; a lost signal costs efficiency only.
func (s *Share) Throttled(pause time.Duration, rate float64) {
	if !finite(rate) {
		rate = 0 // unlimited, or nothing to adopt: JSON has no infinity
	}
	body, err := json.Marshal(message{Replica: s.id, PauseMs: pause.Milliseconds(), Rate: rate})
	if err == nil {
		err = s.conn.Publish(s.throttle, body)
	}
	if err != nil {
		s.log.Debug().Err(err).Msg("budget: throttle signal not sent")
	}
}

// peer is what a replica last said.
type peer struct {
	admitted float64
	busy     bool
	seen     time.Time
}

// Run takes part in the shared budget until ctx ends: it publishes
// heartbeats and applies what peers publish to p.
func (s *Share) Run(ctx context.Context, p Pacer) error {
	msgs := make(chan *nats.Msg, 256)
	var subs []*nats.Subscription
	for _, subj := range []string{s.hello, s.throttle} {
		sub, err := s.conn.ChanSubscribe(subj, msgs)
		if err != nil {
			for _, done := range subs {
				if uerr := done.Unsubscribe(); uerr != nil {
					s.log.Debug().Err(uerr).Msg("budget: unsubscribe")
				}
			}
			return fmt.Errorf("budget: subscribe %s: %w", subj, err)
		}
		subs = append(subs, sub)
	}
	defer func() {
		for _, sub := range subs {
			if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				s.log.Debug().Err(err).Msg("budget: unsubscribe")
			}
		}
	}()
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	peers := make(map[string]peer)
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-msgs:
			s.receive(m, peers, p)
		case now := <-tick.C:
			s.beat(p)
			share, admitted := tally(peers, now, time.Duration(peerTimeout)*s.interval)
			p.SetShare(share, admitted)
		}
	}
}

func (s *Share) beat(p Pacer) {
	admitted := p.Admitted()
	body, err := json.Marshal(message{Replica: s.id, Admitted: admitted, Busy: p.Waiting() || admitted > 0})
	if err == nil {
		err = s.conn.Publish(s.hello, body)
	}
	if err != nil {
		s.log.Debug().Err(err).Msg("budget: heartbeat not sent")
	}
}

// receive applies one peer message; anything malformed is dropped.
func (s *Share) receive(m *nats.Msg, peers map[string]peer, p Pacer) {
	if len(m.Data) > maxMessageBytes {
		return
	}
	var msg message
	if err := json.Unmarshal(m.Data, &msg); err != nil || msg.Replica == "" || msg.Replica == s.id || len(msg.Replica) > 64 {
		return
	}
	if !finite(msg.Admitted) || !finite(msg.Rate) {
		return
	}
	switch m.Subject {
	case s.hello:
		if _, known := peers[msg.Replica]; !known && len(peers) >= maxPeers {
			return
		}
		peers[msg.Replica] = peer{admitted: msg.Admitted, busy: msg.Busy, seen: time.Now()}
	case s.throttle:
		pause := time.Duration(max(msg.PauseMs, 0)) * time.Millisecond
		if s.maxPause > 0 {
			pause = min(pause, s.maxPause)
		}
		p.Adopt(pause, msg.Rate)
	}
}

// tally forgets peers silent for longer than timeout and returns this
// replica's share (1 over itself and the busy peers) and what the busy
// peers admit together.
func tally(peers map[string]peer, now time.Time, timeout time.Duration) (share, admitted float64) {
	busy := 0
	for id, pr := range peers {
		if now.Sub(pr.seen) > timeout {
			delete(peers, id)
			continue
		}
		if pr.busy {
			busy++
			admitted += pr.admitted
		}
	}
	return 1 / float64(busy+1), admitted
}

func finite(f float64) bool { return f >= 0 && !math.IsInf(f, 0) && !math.IsNaN(f) }
