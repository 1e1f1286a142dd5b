package edge

import (
	"hash/maphash"
	"sync"
)

// userLoops records which loops hold connections of each user, so that a delivery to users
// wakes only the loops that have some of them (Dispatch) instead of every loop: a wasted wake
// of a loop (an eventfd write, an epoll return, a task run for nobody) per chat message was
// several percent of the embedded binary's CPU.
//
// A loop sets its bit for a user before it indexes the user's first connection and clears it
// after it unindexed the last, on its own goroutine, so whenever a loop holds a connection of
// the user its bit is set. Only loops 0–63 have a bit; Dispatch wakes every loop when there
// are more. Sharded by user: written per connection open and close, read per delivery.
type userLoops struct {
	seed   maphash.Seed
	shards [userShards]userShard
}

const userShards = 64

type userShard struct {
	mu sync.Mutex
	m  map[string]uint64 // user -> loops (bit i: loop i) holding a connection of the user; guarded by mu
	_  [40]byte          // a cache line per shard
}

func newUserLoops() *userLoops {
	u := &userLoops{seed: maphash.MakeSeed()}
	for i := range u.shards {
		u.shards[i].m = make(map[string]uint64)
	}
	return u
}

func (u *userLoops) shard(user string) *userShard {
	return &u.shards[maphash.String(u.seed, user)%userShards]
}

// add sets loop idx's bit for user. Called by loop idx only.
func (u *userLoops) add(user string, idx int) {
	if idx >= 64 {
		return
	}
	sh := u.shard(user)
	sh.mu.Lock()
	sh.m[user] |= 1 << idx
	sh.mu.Unlock()
}

// remove clears loop idx's bit for user. Called by loop idx only.
func (u *userLoops) remove(user string, idx int) {
	if idx >= 64 {
		return
	}
	sh := u.shard(user)
	sh.mu.Lock()
	if m := sh.m[user] &^ (1 << idx); m == 0 {
		delete(sh.m, user)
	} else {
		sh.m[user] = m
	}
	sh.mu.Unlock()
}

// mask returns the loops holding a connection of any of users.
func (u *userLoops) mask(users []string) uint64 {
	var mask uint64
	for _, user := range users {
		sh := u.shard(user)
		sh.mu.Lock()
		mask |= sh.m[user]
		sh.mu.Unlock()
	}
	return mask
}
