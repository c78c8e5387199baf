package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mcpgoclient "github.com/mark3labs/mcp-go/client"
	mcpgotransport "github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-apim/remote-mcp/handler/auth/authtest"
	"github.com/mcp-apim/remote-mcp/handler/backplane"
	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

// rrProxy sends each request to the next live backend in turn, as a load
// balancer that knows nothing of SSE sessions does.
type rrProxy struct {
	URL      string
	mu       sync.Mutex
	backends []*url.URL
	down     map[int]bool
	next     atomic.Uint64
	// instances are the backplane ids of the backends; crossed counts
	// message POSTs sent to a backend other than the one named in the URL.
	instances []string
	crossed   atomic.Int64
}

func startRRProxy(t testing.TB, port int, backends []string) *rrProxy {
	t.Helper()
	p := &rrProxy{down: map[int]bool{}}
	for _, b := range backends {
		u, err := url.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		p.backends = append(p.backends, u)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	p.URL = "http://" + ln.Addr().String()
	srv := &http.Server{Handler: p}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return p
}

// SetDown takes backend i out of (or back into) the rotation.
func (p *rrProxy) SetDown(i int, down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down[i] = down
}

func (p *rrProxy) pick() (*url.URL, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range len(p.backends) {
		i := int(p.next.Add(1) % uint64(len(p.backends)))
		if !p.down[i] {
			return p.backends[i], i
		}
	}
	return nil, -1
}

func (p *rrProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	target, i := p.pick()
	if target == nil {
		http.Error(w, "no backend", http.StatusBadGateway)
		return
	}
	if inst := r.URL.Query().Get("instance"); inst != "" && i < len(p.instances) && inst != p.instances[i] {
		p.crossed.Add(1)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, "backend: "+err.Error(), http.StatusBadGateway)
		},
	}
	rp.ServeHTTP(w, r)
}

// scaleOut is three handler instances sharing one Azurite and one internal
// key behind a round-robin proxy.
type scaleOut struct {
	Azurite   testenv.Azurite
	Issuer    *authtest.Issuer
	Proxy     *rrProxy
	Handlers  []*proc
	Instances []string // backplane instance id of each handler
	key       string
	clientID  string
}

// Token returns an access token of a new user whose token family the
// handlers' store issued (with MCP_INTERNAL_KEY set, the handler refuses
// tokens of unknown families), and the user's subject.
func (so *scaleOut) Token(t testing.TB) (token, subject string) {
	t.Helper()
	tid, oid := newUser()
	return so.TokenFor(t, tid, oid)
}

// TokenFor is Token for a given user (a new family each call).
func (so *scaleOut) TokenFor(t testing.TB, tid, oid string) (token, subject string) {
	t.Helper()
	base := so.Handlers[0].BaseURL
	internal := func(path string, body any) map[string]any {
		t.Helper()
		b, _ := json.Marshal(body)
		resp, out := do(t, "POST", base+"/internal/oauth/"+path, "", string(b), map[string]string{"x-internal-key": so.key})
		if resp.StatusCode/100 != 2 {
			t.Fatalf("internal %s: %d %s", path, resp.StatusCode, out)
		}
		var m map[string]any
		_ = json.Unmarshal([]byte(out), &m)
		return m
	}
	if so.clientID == "" {
		so.clientID = internal("clients", map[string]any{"redirect_uris": []string{"http://127.0.0.1/cb"}, "client_name": "e2e"})["client_id"].(string)
	}
	verifier := strings.Repeat("v", 43)
	sum := sha256.Sum256([]byte(verifier))
	issued := internal("codes", map[string]any{
		"client_id": so.clientID, "redirect_uri": "http://127.0.0.1/cb",
		"code_challenge": base64.RawURLEncoding.EncodeToString(sum[:]), "code_challenge_method": "S256",
		"resource": so.Proxy.URL + "/mcp", "scope": "mcp.tools", "tid": tid, "oid": oid, "name": "E2E",
	})
	grant := internal("token/authorization_code", map[string]any{
		"code": issued["code"], "client_id": so.clientID, "redirect_uri": "http://127.0.0.1/cb", "code_verifier": verifier,
	})
	claims := so.Issuer.User(tid, oid)
	claims.FamilyID, _ = grant["fid"].(string)
	return so.Issuer.Mint(t, claims), tid + ":" + oid
}

var instanceLog = regexp.MustCompile(`backplane queue ready"? instance=([a-z0-9]+)`)

func startScaleOut(t testing.TB, n int) *scaleOut {
	t.Helper()
	return startScaleOutEnv(t, n, nil)
}

// startScaleOutEnv is startScaleOut with extra handler environment.
func startScaleOutEnv(t testing.TB, n int, extra map[string]string) *scaleOut {
	t.Helper()
	az := testenv.StartAzurite(t)
	port := freePort(t)
	origin := "http://127.0.0.1:" + strconv.Itoa(port)
	iss := authtest.NewIssuer(t, origin)
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	env := map[string]string{
		"AzureWebJobsStorage": az.ConnectionString,
		"MCP_TOKEN_JWKS":      string(iss.JWKS()),
		"MCP_TOKEN_ISSUER":    origin,
		"MCP_RESOURCE_URL":    origin + "/mcp",
		"MCP_INTERNAL_KEY":    base64.StdEncoding.EncodeToString(k),
	}
	for k, v := range extra {
		env[k] = v
	}
	so := &scaleOut{Azurite: az, Issuer: iss, key: env["MCP_INTERNAL_KEY"]}
	var urls []string
	for range n {
		h := startBinary(t, handlerBin, 0, env)
		so.Handlers = append(so.Handlers, h)
		urls = append(urls, h.BaseURL)
	}
	for _, h := range so.Handlers {
		deadline := time.Now().Add(30 * time.Second)
		for {
			if m := instanceLog.FindStringSubmatch(h.Logs()); m != nil {
				so.Instances = append(so.Instances, m[1])
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("handler did not create its backplane queue:\n%s", h.Logs())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	so.Proxy = startRRProxy(t, port, urls)
	so.Proxy.instances = so.Instances
	return so
}

// handlerOf returns the index of the handler whose instance id is in the
// message URL.
func (so *scaleOut) handlerOf(endpoint string) int {
	u, err := url.Parse(endpoint)
	if err != nil {
		return -1
	}
	return slices.Index(so.Instances, u.Query().Get("instance"))
}

// sseWorker is one mcp-go SSE client that reconnects when its stream ends.
type sseWorker struct {
	so    *scaleOut
	token string
	sub   string

	c      *mcpgoclient.Client
	lost   chan struct{}
	holder int // handler index holding the current session

	calls, reconnects int
}

func (w *sseWorker) connect(ctx context.Context) error {
	if w.c != nil {
		_ = w.c.Close()
	}
	c, err := mcpgoclient.NewSSEMCPClient(w.so.Proxy.URL+"/mcp/sse",
		mcpgotransport.WithHeaders(map[string]string{"Authorization": "Bearer " + w.token}))
	if err != nil {
		return err
	}
	lost := make(chan struct{})
	var once sync.Once
	c.OnConnectionLost(func(error) { once.Do(func() { close(lost) }) })
	if err := c.Start(ctx); err != nil {
		c.Close()
		return fmt.Errorf("start: %w", err)
	}
	req := mcpgo.InitializeRequest{}
	req.Params.ProtocolVersion = mcpgo.LATEST_PROTOCOL_VERSION
	req.Params.ClientInfo = mcpgo.Implementation{Name: "e2e-scaleout", Version: "1"}
	if _, err := c.Initialize(ctx, req); err != nil {
		c.Close()
		return fmt.Errorf("initialize: %w", err)
	}
	w.c, w.lost = c, lost
	w.holder = -1
	if tr, ok := c.GetTransport().(*mcpgotransport.SSE); ok && tr.GetEndpoint() != nil {
		w.holder = w.so.handlerOf(tr.GetEndpoint().String())
	}
	return nil
}

func (w *sseWorker) call(ctx context.Context, name string, args map[string]any, v any) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req := mcpgo.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	res, err := w.c.CallTool(cctx, req)
	if err != nil {
		return err
	}
	w.calls++
	if res.IsError {
		var text string
		for _, c := range res.Content {
			if tc, ok := c.(mcpgo.TextContent); ok {
				text += tc.Text
			}
		}
		return fmt.Errorf("tool %s failed: %s", name, text)
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// round is hello plus a snippet round trip; a wrong answer is a failure
// of its own (errWrong), not a transport error.
var errWrong = errors.New("wrong answer")

func (w *sseWorker) round(ctx context.Context, name string) error {
	var who struct {
		Subject string `json:"subject"`
	}
	if err := w.call(ctx, "hello", nil, &who); err != nil {
		return err
	}
	if who.Subject != w.sub {
		return fmt.Errorf("%w: hello says %q, want %q", errWrong, who.Subject, w.sub)
	}
	content := name + ":" + guid()
	var saved struct {
		ETag string `json:"etag"`
	}
	if err := w.call(ctx, "save_snippet", map[string]any{"name": name, "content": content}, &saved); err != nil {
		return err
	}
	var got struct {
		Content string `json:"content"`
		ETag    string `json:"etag"`
	}
	if err := w.call(ctx, "get_snippet", map[string]any{"name": name}, &got); err != nil {
		return err
	}
	if got.Content != content || got.ETag != saved.ETag {
		return fmt.Errorf("%w: get_snippet %q returned %q (etag %q, saved %q)", errWrong, name, got.Content, got.ETag, saved.ETag)
	}
	return nil
}

// TestScaleOutSSE runs SSE clients against three instances behind a
// round-robin proxy, so nearly every POST lands on an instance that does
// not hold its stream; midway one instance stops. Its clients see their
// streams end, reconnect and carry on; every other client sees no error.
//
// Stopped gracefully (SIGTERM), the instance deletes its queue, so a POST
// for one of its sessions is answered 404 at once. Killed (SIGKILL), its
// queue stays until its heartbeat goes stale; its clients notice the end
// of their streams and reconnect before their next call.
func TestScaleOutSSE(t *testing.T) {
	t.Run("graceful", func(t *testing.T) { testScaleOutSSE(t, false) })
	t.Run("kill", func(t *testing.T) { testScaleOutSSE(t, true) })
}

func testScaleOutSSE(t *testing.T, kill bool) {
	so := startScaleOut(t, 3)
	ctx := ctxTimeout(t, 4*time.Minute)

	const clients, rounds, half = 6, 10, 5
	workers := make([]*sseWorker, clients)
	for i := range workers {
		tok, sub := so.Token(t)
		workers[i] = &sseWorker{so: so, token: tok, sub: sub}
		if err := workers[i].connect(ctx); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		defer func() { _ = workers[i].c.Close() }()
	}
	// Stop the instance holding client 0's stream.
	victim := workers[0].holder
	if victim < 0 {
		t.Fatal("client 0's message URL names no known instance")
	}
	affected := map[int]bool{}
	for i, w := range workers {
		if w.holder == victim {
			affected[i] = true
		}
		t.Logf("client %d on instance %d", i, w.holder)
	}

	var reached sync.WaitGroup
	reached.Add(clients)
	killed := make(chan struct{})
	errs := make([][]error, clients)
	var wg sync.WaitGroup
	for i, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paused := false
			for r := 0; r < rounds; r++ {
				if r == half && !paused {
					paused = true
					reached.Done()
					select {
					case <-killed:
					case <-ctx.Done():
						return
					}
				}
				select {
				case <-w.lost:
					// The stream ended: a client opens a new one.
					if !affected[i] {
						errs[i] = append(errs[i], fmt.Errorf("round %d: stream ended", r))
						return
					}
					w.reconnects++
					if err := w.connect(ctx); err != nil {
						errs[i] = append(errs[i], fmt.Errorf("reconnect: %w", err))
						return
					}
				default:
				}
				err := w.round(ctx, fmt.Sprintf("c%d-r%d", i, r))
				if err == nil {
					continue
				}
				if errors.Is(err, errWrong) || !affected[i] || w.reconnects > 2 {
					errs[i] = append(errs[i], fmt.Errorf("round %d: %w", r, err))
					return
				}
				// The stream of an affected client must end.
				select {
				case <-w.lost:
				case <-time.After(30 * time.Second):
					errs[i] = append(errs[i], fmt.Errorf("round %d failed (%v) but the stream did not end", r, err))
					return
				}
				w.reconnects++
				if err := w.connect(ctx); err != nil {
					errs[i] = append(errs[i], fmt.Errorf("reconnect: %w", err))
					return
				}
				if w.holder == victim {
					errs[i] = append(errs[i], fmt.Errorf("reconnected to the stopped instance"))
					return
				}
				r-- // do the round again on the new session
			}
		}()
	}
	done := make(chan struct{})
	go func() { reached.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("clients did not reach the half-way point")
	}
	so.Proxy.SetDown(victim, true)
	if kill {
		_ = so.Handlers[victim].cmd.Process.Kill()
		<-so.Handlers[victim].exited
	} else {
		so.Handlers[victim].Stop()
		if code := so.Handlers[victim].ExitCode(); code != 0 {
			t.Errorf("stopped instance exited with %d", code)
		}
	}
	// The streams of the victim's clients end.
	for i := range affected {
		select {
		case <-workers[i].lost:
		case <-time.After(30 * time.Second):
			t.Errorf("client %d's stream did not end when its instance stopped", i)
		}
	}
	close(killed)
	wg.Wait()

	for i, w := range workers {
		for _, err := range errs[i] {
			t.Errorf("client %d (instance %d): %v", i, w.holder, err)
		}
		switch {
		case affected[i] && w.reconnects == 0 && len(errs[i]) == 0:
			t.Errorf("client %d was on the stopped instance but never reconnected", i)
		case !affected[i] && w.reconnects != 0:
			t.Errorf("client %d was not on the stopped instance but reconnected", i)
		}
		t.Logf("client %d: %d calls, %d reconnects", i, w.calls, w.reconnects)
	}
	if n := so.Proxy.crossed.Load(); n == 0 {
		t.Error("no message POST landed on an instance other than its session's")
	} else {
		t.Logf("%d message POSTs crossed instances", n)
	}
}

// TestScaleOutExactlyOnce posts raw JSON-RPC pings to session URLs through
// the round-robin proxy and reads the streams directly: every id is
// answered once, on its own stream, and nothing else arrives.
func TestScaleOutExactlyOnce(t *testing.T) {
	so := startScaleOut(t, 3)
	const streams, perStream = 3, 30
	type opened struct {
		endpoint string
		rd       *bufio.Reader
	}
	var ss []opened
	tokens := make([]string, streams)
	for i := range streams {
		tokens[i], _ = so.Token(t)
		endpoint, rd, closeStream := openSSE(t, so.Proxy.URL, tokens[i])
		defer closeStream()
		ss = append(ss, opened{endpoint, rd})
	}
	var wg sync.WaitGroup
	failures := make(chan string, streams*perStream)
	for i, s := range ss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := map[int]int{}
			got := make(chan error, 1)
			go func() {
				for len(seen) < perStream {
					line, err := s.rd.ReadString('\n')
					if err != nil {
						got <- err
						return
					}
					d, ok := strings.CutPrefix(strings.TrimSpace(line), "data: ")
					if !ok {
						continue
					}
					var m struct {
						ID     json.Number     `json:"id"`
						Result json.RawMessage `json:"result"`
					}
					if err := json.Unmarshal([]byte(d), &m); err != nil || m.Result == nil {
						got <- fmt.Errorf("unexpected event %q", d)
						return
					}
					id, _ := strconv.Atoi(m.ID.String())
					if id/1000 != i+1 {
						got <- fmt.Errorf("answer %d arrived on stream %d", id, i)
						return
					}
					seen[id]++
					if seen[id] > 1 {
						got <- fmt.Errorf("answer %d arrived twice", id)
						return
					}
				}
				got <- nil
			}()
			for j := range perStream {
				id := (i+1)*1000 + j
				resp, body := do(t, "POST", s.endpoint, tokens[i], fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, id), nil)
				if resp.StatusCode != http.StatusAccepted {
					failures <- fmt.Sprintf("stream %d post %d: %d %s", i, id, resp.StatusCode, body)
				}
			}
			select {
			case err := <-got:
				if err != nil {
					failures <- fmt.Sprintf("stream %d: %v", i, err)
				}
			case <-time.After(2 * time.Minute):
				failures <- fmt.Sprintf("stream %d: only %d of %d answers", i, len(seen), perStream)
			}
		}()
	}
	wg.Wait()
	close(failures)
	var fs []string
	for f := range failures {
		fs = append(fs, f)
	}
	sort.Strings(fs)
	for _, f := range fs {
		t.Error(f)
	}

	// Someone else's token on a forwarded message URL is refused before
	// anything is queued; a stopped instance's URLs answer 404.
	mallory, _ := so.Token(t)
	for k := 0; k < 3; k++ { // at least one lands on a non-owner
		resp, body := do(t, "POST", ss[0].endpoint, mallory, `{"jsonrpc":"2.0","id":1,"method":"ping"}`, nil)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("another user's POST: %d %s", resp.StatusCode, body)
		}
	}
	owner := so.handlerOf(ss[0].endpoint)
	so.Proxy.SetDown(owner, true)
	so.Handlers[owner].Stop()
	for k := 0; k < 2; k++ {
		resp, body := do(t, "POST", ss[0].endpoint, tokens[0], `{"jsonrpc":"2.0","id":1,"method":"ping"}`, nil)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "reconnect") {
			t.Errorf("POST for a stopped instance's session: %d %s", resp.StatusCode, body)
		}
	}
	// It left no queue (and so no message) behind.
	qc := so.Azurite.Clients(t).Queue
	if _, err := qc.NewQueueClient(backplane.QueueName(so.Instances[owner])).GetProperties(t.Context(), nil); err == nil {
		t.Errorf("the stopped instance's queue is still there")
	}

	// Killed, an instance leaves its queue, freshly stamped: a POST for one
	// of its sessions waits for a receipt that never comes, then withdraws
	// its message and answers 404; the queue keeps nothing.
	victim := (owner + 1) % len(so.Handlers)
	tok, _ := so.Token(t)
	endpoint, _, closeVictim := openSSE(t, so.Handlers[victim].BaseURL, tok)
	defer closeVictim()
	so.Proxy.SetDown(victim, true)
	_ = so.Handlers[victim].cmd.Process.Kill()
	<-so.Handlers[victim].exited
	t0 := time.Now()
	resp, body := do(t, "POST", so.Proxy.URL+strings.TrimPrefix(endpoint, so.Handlers[victim].BaseURL), tok, `{"jsonrpc":"2.0","id":1,"method":"ping"}`, nil)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "reconnect") {
		t.Errorf("POST for a killed instance's session: %d %s", resp.StatusCode, body)
	}
	t.Logf("POST for a killed instance's session answered %d after %v", resp.StatusCode, time.Since(t0).Round(time.Millisecond))
	props, err := qc.NewQueueClient(backplane.QueueName(so.Instances[victim])).GetProperties(t.Context(), nil)
	if err != nil {
		t.Fatalf("the killed instance's queue: %v", err)
	}
	if n := props.ApproximateMessagesCount; n == nil || *n != 0 {
		t.Errorf("the killed instance's queue holds messages after the POST was answered")
	}
}

// BenchmarkSSEDelivery measures the time from a message POST to its 202
// (accepted-*) and to its answer on the stream (p50/p99) when the POST
// lands on the instance holding the stream (same-instance) and on another
// one (cross-instance, through the Queue backplane on Azurite: the message
// to the owner's queue, the owner's receipt back), in the same run.
func BenchmarkSSEDelivery(b *testing.B) {
	so := startScaleOut(b, 2)
	tok, _ := so.Token(b)
	endpoint, rd, closeStream := openSSE(b, so.Handlers[0].BaseURL, tok)
	defer closeStream()
	u, err := url.Parse(endpoint)
	if err != nil {
		b.Fatal(err)
	}
	rel := u.RequestURI()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	id := 0
	run := func(b *testing.B, base string) {
		lat := make([]time.Duration, 0, 1024)
		acc := make([]time.Duration, 0, 1024)
		for b.Loop() {
			id++
			t0 := time.Now()
			req, _ := http.NewRequest("POST", base+rel, strings.NewReader(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, id)))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			acc = append(acc, time.Since(t0))
			if resp.StatusCode != http.StatusAccepted {
				b.Fatalf("status %d", resp.StatusCode)
			}
			want := fmt.Sprintf(`"id":%d,`, id)
			for {
				line, err := rd.ReadString('\n')
				if err != nil {
					b.Fatal(err)
				}
				if strings.HasPrefix(line, "data: ") && strings.Contains(line, want) {
					break
				}
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		slices.Sort(acc)
		if n := len(lat); n > 0 {
			b.ReportMetric(float64(lat[n/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[n*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(acc[n/2].Microseconds()), "accepted-p50-µs")
			b.ReportMetric(float64(acc[n*99/100].Microseconds()), "accepted-p99-µs")
		}
	}
	b.Run("same-instance", func(b *testing.B) { run(b, so.Handlers[0].BaseURL) })
	b.Run("cross-instance", func(b *testing.B) { run(b, so.Handlers[1].BaseURL) })
}
