// Command pulsarping measures Pulsar's own publish → consume latency on a fresh topic: the
// floor under Switchboard's chat round trip in cluster mode (the goal is chat p50 ≤ 2 × this
// p50 + 2 ms). A producer without batching sends -n messages at -rate per second, each
// carrying its send time; an exclusive consumer records the delay. The topic is deleted at
// the end through the admin API when -admin is given.
//
//	pulsarping -url pulsar://127.0.0.1:16650 -admin http://127.0.0.1:18081 -n 2000 -rate 500 -out pulsar.json
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/apache/pulsar-client-go/pulsar"
	"github.com/apache/pulsar-client-go/pulsar/log"
)

// Result is the JSON output.
type Result struct {
	Kind      string    `json:"kind"` // "pulsar-baseline"
	URL       string    `json:"url"`
	Topic     string    `json:"topic"`
	Started   time.Time `json:"started"`
	Sent      int64     `json:"sent"`
	Received  int64     `json:"received"`
	Size      int       `json:"size"`
	Rate      float64   `json:"rate"`
	P50Ms     float64   `json:"p50_ms"`
	P90Ms     float64   `json:"p90_ms"`
	P99Ms     float64   `json:"p99_ms"`
	P999Ms    float64   `json:"p999_ms"`
	MaxMs     float64   `json:"max_ms"`
	MeanMs    float64   `json:"mean_ms"`
	ElapsedMs float64   `json:"elapsed_ms"`
}

func main() {
	url := flag.String("url", os.Getenv("SB_PULSAR_URL"), "Pulsar service URL (default $SB_PULSAR_URL)")
	admin := flag.String("admin", os.Getenv("SB_PULSAR_ADMIN_URL"), "Pulsar admin URL, to delete the topic afterwards")
	n := flag.Int("n", 2000, "messages")
	rate := flag.Float64("rate", 500, "messages per second")
	size := flag.Int("size", 100, "payload bytes (≥ 8)")
	out := flag.String("out", "", "write the JSON result here")
	timeout := flag.Duration("timeout", 2*time.Minute, "bound of the whole run")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "pulsarping: -url or SB_PULSAR_URL required")
		os.Exit(2)
	}
	res, err := run(*url, *admin, *n, *rate, max(*size, 8), *timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pulsarping:", err)
		os.Exit(1)
	}
	b, _ := json.Marshal(res)
	fmt.Fprintf(os.Stderr, "pulsar publish→consume: n=%d/%d p50 %.2f ms p99 %.2f ms p99.9 %.2f ms max %.2f ms\n",
		res.Received, res.Sent, res.P50Ms, res.P99Ms, res.P999Ms, res.MaxMs)
	if *out != "" {
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "pulsarping:", err)
			os.Exit(1)
		}
	}
}

func run(url, admin string, n int, rate float64, size int, timeout time.Duration) (*Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	topicName := fmt.Sprintf("lt-pulsarping-%x", rand.Uint64())
	topic := "persistent://public/default/" + topicName
	client, err := pulsar.NewClient(pulsar.ClientOptions{URL: url, OperationTimeout: 30 * time.Second,
		Logger: log.DefaultNopLogger()})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	defer client.Close()
	cons, err := client.Subscribe(pulsar.ConsumerOptions{Topic: topic, SubscriptionName: "pulsarping",
		Type: pulsar.Exclusive})
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	defer cons.Close()
	prod, err := client.CreateProducer(pulsar.ProducerOptions{Topic: topic, DisableBatching: true})
	if err != nil {
		return nil, fmt.Errorf("producer: %w", err)
	}
	defer prod.Close()
	if admin != "" {
		defer func() {
			req, _ := http.NewRequest(http.MethodDelete, admin+"/admin/v2/persistent/public/default/"+topicName+"?force=true", nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}

	h := hdrhistogram.New(1, 60_000_000, 3)
	res := &Result{Kind: "pulsar-baseline", URL: url, Topic: topic, Started: time.Now().UTC(), Size: size, Rate: rate}
	recvDone := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			m, err := cons.Receive(ctx)
			if err != nil {
				recvDone <- err
				return
			}
			at := int64(binary.BigEndian.Uint64(m.Payload()))
			_ = h.RecordValue(max(time.Since(time.Unix(0, at)).Microseconds(), 1))
			res.Received++
			cons.Ack(m)
		}
		recvDone <- nil
	}()
	start := time.Now()
	payload := make([]byte, size)
	for i := 0; i < n; i++ {
		if d := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
			time.Sleep(d)
		}
		binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
		p := append([]byte(nil), payload...)
		prod.SendAsync(ctx, &pulsar.ProducerMessage{Payload: p}, func(_ pulsar.MessageID, _ *pulsar.ProducerMessage, err error) {
			if err != nil {
				fmt.Fprintln(os.Stderr, "pulsarping: send:", err)
			}
		})
		res.Sent++
	}
	if err := prod.Flush(); err != nil {
		return nil, fmt.Errorf("flush: %w", err)
	}
	if err := <-recvDone; err != nil {
		return nil, fmt.Errorf("receive (%d of %d): %w", res.Received, n, err)
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	res.P50Ms, res.P90Ms, res.P99Ms = ms(h.ValueAtQuantile(50)), ms(h.ValueAtQuantile(90)), ms(h.ValueAtQuantile(99))
	res.P999Ms, res.MaxMs, res.MeanMs = ms(h.ValueAtQuantile(99.9)), ms(h.Max()), h.Mean()/1000
	res.ElapsedMs = float64(time.Since(start)) / 1e6
	return res, nil
}
