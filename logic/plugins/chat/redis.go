package chat

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisConfig configures NewRedisStore.
type RedisConfig struct {
	// Client is a standalone, sentinel or cluster client. Required.
	Client redis.UniversalClient
	// Prefix starts every key. Zero means "sb:chat:".
	Prefix string
	// HistoryCap is how many latest messages a conversation keeps (the stream is
	// trimmed with an exact MAXLEN: one entry per append). Zero means 1000.
	HistoryCap int
	// DedupeTTL is how long a client message id is remembered. Zero means 24h.
	DedupeTTL time.Duration
}

// RedisStore is the Store on Redis (standalone or Cluster). Keys of one conversation share a
// hash tag, so Append is one atomic script on one node, then the members' index (other slots)
// in one pipeline; on a standalone Redis (*redis.Client) both are one script, one round trip:
//
//	<prefix>{<conv>}:seq               INCR counter: the conversation's sequence
//	<prefix>{<conv>}:log               stream, entry id <seq>-0, capped with MAXLEN
//	<prefix>{<conv>}:cm:<from>:<cmid>  the seq a client message id got (EX DedupeTTL)
//	<prefix>u:{<user>}:convs           zset conv -> latest seq (the user's conversations)
//	<prefix>u:{<user>}:acks            hash conv -> acked seq
//	<prefix>g:{<group>}:members        set of user ids
type RedisStore struct {
	cfg    RedisConfig
	single bool // one node (*redis.Client): Append stores and indexes in one script
}

var _ Store = (*RedisStore)(nil)

// NewRedisStore returns a RedisStore. It does not own the client.
func NewRedisStore(cfg RedisConfig) (*RedisStore, error) {
	if cfg.Client == nil {
		return nil, errors.New("chat: redis store: nil client")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "sb:chat:"
	}
	if cfg.HistoryCap <= 0 {
		cfg.HistoryCap = 1000
	}
	if cfg.DedupeTTL <= 0 {
		cfg.DedupeTTL = 24 * time.Hour
	}
	_, single := cfg.Client.(*redis.Client)
	return &RedisStore{cfg: cfg, single: single}, nil
}

// appendScript: KEYS seq, log, cmid; ARGV maxlen, from, cmid, text, ts, ttl seconds, dedupe
// flag. Returns {0, seq} for a new message, {1, seq, fields|false} for a duplicate.
var appendScript = redis.NewScript(`
if ARGV[7] == '1' then
  local s = redis.call('GET', KEYS[3])
  if s then
    local e = redis.call('XRANGE', KEYS[2], s .. '-0', s .. '-0')
    if e[1] then return {1, tonumber(s), e[1][2]} end
    return {1, tonumber(s), false}
  end
end
local seq = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], seq .. '-0', 'from', ARGV[2], 'cmid', ARGV[3], 'text', ARGV[4], 'ts', ARGV[5])
if ARGV[7] == '1' then redis.call('SET', KEYS[3], seq, 'EX', ARGV[6]) end
return {0, seq}
`)

// appendIndexScript is appendScript plus the members' conversation index, for a Redis that is
// not a Cluster (the index keys are in other slots): one round trip instead of two. KEYS seq,
// log, cmid, then each member's convs key; ARGV as appendScript, then the conv id.
var appendIndexScript = redis.NewScript(`
local dup, seq, fields = 0, nil, false
if ARGV[7] == '1' then
  local s = redis.call('GET', KEYS[3])
  if s then
    dup, seq = 1, tonumber(s)
    local e = redis.call('XRANGE', KEYS[2], s .. '-0', s .. '-0')
    if e[1] then fields = e[1][2] end
  end
end
if dup == 0 then
  seq = redis.call('INCR', KEYS[1])
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], seq .. '-0', 'from', ARGV[2], 'cmid', ARGV[3], 'text', ARGV[4], 'ts', ARGV[5])
  if ARGV[7] == '1' then redis.call('SET', KEYS[3], seq, 'EX', ARGV[6]) end
end
for i = 4, #KEYS do redis.call('ZADD', KEYS[i], seq, ARGV[8]) end
if dup == 1 then return {1, seq, fields} end
return {0, seq}
`)

// ackScript: KEYS acks; ARGV conv, seq. Keeps the highest.
var ackScript = redis.NewScript(`
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 0
`)

func (s *RedisStore) convKey(conv, suffix string) string {
	return s.cfg.Prefix + "{" + conv + "}:" + suffix
}
func (s *RedisStore) userKey(user, suffix string) string {
	return s.cfg.Prefix + "u:{" + user + "}:" + suffix
}
func (s *RedisStore) groupKey(group string) string { return s.cfg.Prefix + "g:{" + group + "}:members" }

// Append implements Store.
func (s *RedisStore) Append(ctx context.Context, m Message, members []string) (Message, bool, error) {
	dedupe := "0"
	if m.CMID != "" {
		dedupe = "1"
	}
	keys := []string{s.convKey(m.Conv, "seq"), s.convKey(m.Conv, "log"), s.convKey(m.Conv, "cm:"+m.From+":"+m.CMID)}
	ttl := int64(s.cfg.DedupeTTL / time.Second)
	if s.single {
		// One node holds every key: store and index in one script, one round trip.
		for _, u := range members {
			keys = append(keys, s.userKey(u, "convs"))
		}
		res, err := appendIndexScript.Run(ctx, s.cfg.Client, keys, s.cfg.HistoryCap, m.From, m.CMID, m.Text, m.TS,
			ttl, dedupe, m.Conv).Slice()
		if err != nil {
			return Message{}, false, fmt.Errorf("chat: append %s: %w", m.Conv, err)
		}
		return s.appended(m, res)
	}
	res, err := appendScript.Run(ctx, s.cfg.Client, keys, s.cfg.HistoryCap, m.From, m.CMID, m.Text, m.TS,
		ttl, dedupe).Slice()
	if err != nil {
		return Message{}, false, fmt.Errorf("chat: append %s: %w", m.Conv, err)
	}
	m, dup, err := s.appended(m, res)
	if err != nil {
		return Message{}, false, err
	}
	if len(members) > 0 {
		// The index is per user (another slot); a failure here is retried with the frame, and
		// the retry's Append is a duplicate that indexes again.
		_, err := s.cfg.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, u := range members {
				p.ZAdd(ctx, s.userKey(u, "convs"), redis.Z{Score: float64(m.Seq), Member: m.Conv})
			}
			return nil
		})
		if err != nil {
			return Message{}, false, fmt.Errorf("chat: index %s: %w", m.Conv, err)
		}
	}
	return m, dup, nil
}

// appended reads an append script's reply into m.
func (s *RedisStore) appended(m Message, res []any) (Message, bool, error) {
	if len(res) < 2 {
		return Message{}, false, fmt.Errorf("chat: append %s: unexpected reply %v", m.Conv, res)
	}
	dup := res[0] == int64(1)
	seq, _ := res[1].(int64)
	m.Seq, m.ID = uint64(seq), MessageID(m.Conv, uint64(seq))
	if dup && len(res) > 2 {
		if fields, ok := res[2].([]any); ok {
			m = fromFields(m.Conv, uint64(seq), fields)
		}
	}
	return m, dup, nil
}

func fromFields(conv string, seq uint64, fields []any) Message {
	m := Message{Conv: conv, Seq: seq, ID: MessageID(conv, seq)}
	for i := 0; i+1 < len(fields); i += 2 {
		k, _ := fields[i].(string)
		v, _ := fields[i+1].(string)
		switch k {
		case "from":
			m.From = v
		case "cmid":
			m.CMID = v
		case "text":
			m.Text = v
		case "ts":
			m.TS, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return m
}

// Since implements Store.
func (s *RedisStore) Since(ctx context.Context, conv string, since uint64, limit int) ([]Message, error) {
	if limit <= 0 {
		return nil, nil
	}
	xs, err := s.cfg.Client.XRangeN(ctx, s.convKey(conv, "log"), strconv.FormatUint(since+1, 10)+"-0", "+", int64(limit)).Result()
	if err != nil {
		return nil, fmt.Errorf("chat: since %s: %w", conv, err)
	}
	out := make([]Message, 0, len(xs))
	for _, x := range xs {
		var seq uint64
		if i := indexByte(x.ID, '-'); i > 0 {
			seq, _ = strconv.ParseUint(x.ID[:i], 10, 64)
		}
		fields := make([]any, 0, 2*len(x.Values))
		for k, v := range x.Values {
			fields = append(fields, k, v)
		}
		out = append(out, fromFields(conv, seq, fields))
	}
	return out, nil
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// Ack implements Store.
func (s *RedisStore) Ack(ctx context.Context, user, conv string, seq uint64) error {
	if err := ackScript.Run(ctx, s.cfg.Client, []string{s.userKey(user, "acks")}, conv, seq).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("chat: ack %s: %w", conv, err)
	}
	return nil
}

// Convs implements Store.
func (s *RedisStore) Convs(ctx context.Context, user string) ([]ConvState, error) {
	zs, err := s.cfg.Client.ZRangeWithScores(ctx, s.userKey(user, "convs"), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("chat: convs %s: %w", user, err)
	}
	acks, err := s.cfg.Client.HGetAll(ctx, s.userKey(user, "acks")).Result()
	if err != nil {
		return nil, fmt.Errorf("chat: acks %s: %w", user, err)
	}
	out := make([]ConvState, 0, len(zs))
	for _, z := range zs {
		conv, _ := z.Member.(string)
		a, _ := strconv.ParseUint(acks[conv], 10, 64)
		out = append(out, ConvState{Conv: conv, Last: uint64(z.Score), Acked: a})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Conv < out[j].Conv })
	return out, nil
}

// Join implements Store.
func (s *RedisStore) Join(ctx context.Context, group, user string) error {
	if err := s.cfg.Client.SAdd(ctx, s.groupKey(group), user).Err(); err != nil {
		return fmt.Errorf("chat: join %s: %w", group, err)
	}
	return nil
}

// Leave implements Store.
func (s *RedisStore) Leave(ctx context.Context, group, user string) error {
	if err := s.cfg.Client.SRem(ctx, s.groupKey(group), user).Err(); err != nil {
		return fmt.Errorf("chat: leave %s: %w", group, err)
	}
	return nil
}

// Members implements Store.
func (s *RedisStore) Members(ctx context.Context, group string) ([]string, error) {
	ms, err := s.cfg.Client.SMembers(ctx, s.groupKey(group)).Result()
	if err != nil {
		return nil, fmt.Errorf("chat: members %s: %w", group, err)
	}
	sort.Strings(ms)
	return ms, nil
}
