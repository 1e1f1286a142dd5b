package bustest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"
)

// PulsarNamespace creates a Pulsar namespace of the test's own ("public/<prefix>-<random>"),
// so nothing else consumes its topics, and deletes it at cleanup: its topics first, then the
// namespace (the standalone broker answers 405 to a forced namespace delete, which would leave
// every test's namespace behind). admin is the broker's web service URL. Register it before
// the producers and consumers that use it, so that t.Cleanup (last in, first out) deletes it
// after they closed.
func PulsarNamespace(t testing.TB, admin, prefix string) string {
	t.Helper()
	admin = strings.TrimRight(admin, "/")
	// No keep-alive: an idle connection would outlive the test (goleak).
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	ns := fmt.Sprintf("public/%s-%08x", prefix, rand.Uint32())
	req, _ := http.NewRequest(http.MethodPut, admin+"/admin/v2/namespaces/"+ns, nil)
	res, err := hc.Do(req)
	if err != nil {
		t.Fatalf("Pulsar admin %s unreachable: %v", admin, err)
	}
	res.Body.Close()
	if res.StatusCode/100 != 2 {
		t.Fatalf("create namespace %s: HTTP %d", ns, res.StatusCode)
	}
	t.Cleanup(func() { deleteNamespace(t, hc, admin, ns) })
	return ns
}

func deleteNamespace(t testing.TB, hc *http.Client, admin, ns string) {
	base := admin + "/admin/v2/"
	del := func(path string) {
		req, _ := http.NewRequest(http.MethodDelete, base+path, nil)
		if res, err := hc.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode/100 != 2 && res.StatusCode != http.StatusNotFound {
				t.Logf("cleanup: DELETE %s: HTTP %d", path, res.StatusCode)
			}
		}
	}
	for _, kind := range []string{"persistent", "non-persistent"} {
		res, err := hc.Get(base + kind + "/" + ns)
		if err != nil {
			return
		}
		var topics []string
		_ = json.NewDecoder(res.Body).Decode(&topics)
		res.Body.Close()
		for _, tp := range topics {
			if rest, ok := strings.CutPrefix(tp, kind+"://"); ok {
				del(kind + "/" + rest + "?force=true")
			}
		}
	}
	del("namespaces/" + ns)
}
