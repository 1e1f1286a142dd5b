//go:build integration

package bus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-io/switchboard/logic/bus"
	"github.com/switchboard-io/switchboard/logic/bus/bustest"
)

// adminHTTP keeps no idle connections, so no transport goroutine outlives a test (goleak).
var adminHTTP = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// pulsarEnv returns the broker and admin URLs, failing the test when they are not set.
func pulsarEnv(t *testing.T) (svc, admin string) {
	t.Helper()
	svc, admin = os.Getenv("SB_PULSAR_URL"), os.Getenv("SB_PULSAR_ADMIN_URL")
	if svc == "" || admin == "" {
		t.Fatal("SB_PULSAR_URL and SB_PULSAR_ADMIN_URL must be set (source .run/env after deploy/local/services.sh up)")
	}
	return svc, admin
}

func newPulsar(t *testing.T, cfg bus.PulsarConfig) *bus.Pulsar {
	t.Helper()
	b, err := bus.NewPulsar(cfg)
	if err != nil {
		t.Fatalf("NewPulsar: %v", err)
	}
	return b
}

func TestPulsarContract(t *testing.T) {
	svc, admin := pulsarEnv(t)
	resp, err := adminHTTP.Get(admin + "/admin/v2/brokers/health")
	if err != nil {
		t.Fatalf("Pulsar admin %s unreachable: %v", admin, err)
	}
	resp.Body.Close()
	bustest.RunWith(t, bustest.Options{Wait: 30 * time.Second}, func(t *testing.T) bus.Bus {
		return newPulsar(t, bus.PulsarConfig{URL: svc})
	})
}

// TestPulsarEphemeralSubscriptionIsNonDurable checks with the admin API that an Ephemeral
// subscription leaves no cursor behind once its consumer is gone, while a durable one stays.
func TestPulsarEphemeralSubscriptionIsNonDurable(t *testing.T) {
	svc, admin := pulsarEnv(t)
	b := newPulsar(t, bus.PulsarConfig{URL: svc})
	defer b.Close()
	name := "bustest-eph-" + time.Now().Format("150405.000000")
	topic := "persistent://public/default/" + name
	h := func(context.Context, *bus.Delivery) error { return nil }
	ctx := context.Background()
	eph, err := b.Subscribe(ctx, topic, "eph", bus.SubOptions{Ephemeral: true, FromLatest: true}, h)
	if err != nil {
		t.Fatal(err)
	}
	dur, err := b.Subscribe(ctx, topic, "dur", bus.SubOptions{FromLatest: true}, h)
	if err != nil {
		t.Fatal(err)
	}
	subs := func() map[string]json.RawMessage {
		resp, err := adminHTTP.Get(admin + "/admin/v2/persistent/public/default/" + url.PathEscape(name) + "/stats")
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		defer resp.Body.Close()
		var st struct {
			Subscriptions map[string]json.RawMessage `json:"subscriptions"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatalf("stats: %v", err)
		}
		return st.Subscriptions
	}
	if s := subs(); s["eph"] == nil || s["dur"] == nil {
		t.Fatalf("subscriptions while consuming: %v", keys(s))
	}
	eph.Close()
	dur.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := subs()
		if s["eph"] == nil && s["dur"] != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscriptions after close: %v, want only dur", keys(s))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func keys(m map[string]json.RawMessage) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return strings.Join(ks, ",")
}

// TestPulsarPartitionedKeyShared: upstream may be a partitioned topic (the producer routes by
// key hash, so a key stays in one partition): two Key_Shared consumers share the load and each
// key's messages are handled in order.
func TestPulsarPartitionedKeyShared(t *testing.T) {
	svc, admin := pulsarEnv(t)
	name := fmt.Sprintf("bustest-part-%d", time.Now().UnixNano())
	req, _ := http.NewRequest(http.MethodPut, admin+"/admin/v2/persistent/public/default/"+name+"/partitions", strings.NewReader("4"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := adminHTTP.Do(req)
	if err != nil {
		t.Fatalf("create partitioned topic: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("create partitioned topic: %s", resp.Status)
	}
	defer func() {
		req, _ := http.NewRequest(http.MethodDelete, admin+"/admin/v2/persistent/public/default/"+name+"/partitions?force=true", nil)
		if resp, err := adminHTTP.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	topic := "persistent://public/default/" + name
	b := newPulsar(t, bus.PulsarConfig{URL: svc})
	defer b.Close()

	var mu sync.Mutex
	next := map[string]int{}
	handled := map[string]int{}
	total := 0
	var orderErr error
	for _, c := range []string{"a", "b"} {
		s, err := b.Subscribe(context.Background(), topic, "logic", bus.SubOptions{Mode: bus.KeyShared}, func(_ context.Context, d *bus.Delivery) error {
			n, _ := strconv.Atoi(string(d.Payload))
			mu.Lock()
			defer mu.Unlock()
			if d.Topic != topic && orderErr == nil {
				orderErr = fmt.Errorf("delivery topic %q, want %q", d.Topic, topic)
			}
			switch want := next[d.Key]; {
			case n > want:
				if orderErr == nil {
					orderErr = fmt.Errorf("%s handled %s#%d before #%d", c, d.Key, n, want)
				}
			case n == want:
				next[d.Key] = n + 1
				total++
			}
			handled[c]++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
	}
	const keys, per = 32, 20
	errc := make(chan error, keys*per)
	for i := range per {
		for k := range keys {
			b.Publish(context.Background(), topic, bus.Message{Key: "user-" + strconv.Itoa(k), Payload: []byte(strconv.Itoa(i))}, func(err error) { errc <- err })
		}
	}
	for range keys * per {
		if err := <-errc; err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n, err := total, orderErr
		mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if n == keys*per {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handled %d of %d", n, keys*per)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if handled["a"] == 0 || handled["b"] == 0 {
		t.Fatalf("load not shared: %v", handled)
	}
}

// BenchmarkPulsarPublish measures Publish → broker ack throughput per batching setting, with
// up to 1000 messages in flight over 64 keys.
func BenchmarkPulsarPublish(b *testing.B) {
	svc := os.Getenv("SB_PULSAR_URL")
	if svc == "" {
		b.Fatal("SB_PULSAR_URL must be set")
	}
	for _, d := range []time.Duration{-1, time.Millisecond, 10 * time.Millisecond} {
		name := "batching=" + d.String()
		if d < 0 {
			name = "batching=off"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			pb, err := bus.NewPulsar(bus.PulsarConfig{URL: svc, BatchingDelay: d})
			if err != nil {
				b.Fatal(err)
			}
			defer pb.Close()
			topic := fmt.Sprintf("persistent://public/default/busbench-%d", time.Now().UnixNano())
			keys := make([]string, 64)
			for i := range keys {
				keys[i] = "user-" + strconv.Itoa(i)
			}
			payload := make([]byte, 200)
			sem := make(chan struct{}, 1000)
			var wg sync.WaitGroup
			b.ResetTimer()
			for i := range b.N {
				sem <- struct{}{}
				wg.Add(1)
				pb.Publish(context.Background(), topic, bus.Message{Key: keys[i%len(keys)], Payload: payload}, func(err error) {
					if err != nil {
						b.Error(err)
					}
					<-sem
					wg.Done()
				})
			}
			wg.Wait()
		})
	}
}
