// Command loadgen is the bench's load generator (bench/goload.py builds and drives it): a
// compiled client, so that the load costs the 2-core machine it runs on little of the CPU the
// bench measures (the Python generator spent about 1 ms per login; this one a fraction of it).
//
// One scenario per run: calls over gRPC (one connection, as the Python generator's one channel)
// or HTTP/1.1 (a keep-alive pool), closed loop (-concurrency callers, each calling again as soon
// as its call ends) or open loop (-rate calls per second whatever came back), each call with an
// optional deadline. It warms up, prints "ready", waits for a line on stdin (the bench takes its
// CPU sample then), runs for -seconds and prints one JSON object: the calls by label ("OK", a
// gRPC code name, "HTTP <status>", "client timeout", "connection error (...)"), the latencies of
// the OK calls, the window's length and this process's CPU seconds within it.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "authsvc.example/clients/go/authsvcv1"
)

// The gRPC code names as grpc.StatusCode names them in Python (codes.Code.String() differs).
var codeNames = []string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
	"OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}

type options struct {
	transport   string   // grpc or http
	target      string   // host:port (grpc) or base URL (http)
	call        string   // grpc: authorize or verify; http: the method
	path        string   // http: the request path
	bodies      []string // http: request bodies, one a line, used in turn (none: no body)
	contentType string   // http: their Content-Type
	expect      string   // http: the reply's JSON member that must be truthy for OK
	token       string   // grpc verify: the token
	headers     []string
	concurrency int
	rate        float64
	seconds     float64
	deadline    float64
	warmup      int
}

type result struct {
	Labels    map[string]int `json:"labels"`
	Latencies []float64      `json:"latencies"`
	Elapsed   float64        `json:"elapsed_s"`
	Sent      float64        `json:"sent_s"`
	Offered   int            `json:"offered"`
	CPU       float64        `json:"cpu_s"`
}

type caller func(ctx context.Context, i int) string

func main() {
	var o options
	var headers, bodies string
	flag.StringVar(&o.transport, "transport", "grpc", "grpc or http")
	flag.StringVar(&o.target, "target", "", "host:port (grpc) or http://host:port (http)")
	flag.StringVar(&o.call, "call", "authorize", "grpc: authorize or verify; http: the method")
	flag.StringVar(&o.path, "path", "/v1/users/authorize", "http: the path")
	flag.StringVar(&bodies, "body", "", "http: request bodies, one a line, used in turn")
	flag.StringVar(&o.contentType, "content-type", "application/json", "http: the bodies' type")
	flag.StringVar(&o.expect, "expect", "access_token", "http: the JSON member that must be truthy")
	flag.StringVar(&o.token, "token", "", "grpc verify: the token")
	flag.StringVar(&headers, "authorization", "", "Authorization values, one a line, used in turn")
	flag.IntVar(&o.concurrency, "concurrency", 8, "closed loop: callers")
	flag.Float64Var(&o.rate, "rate", 0, "open loop: calls per second (0: closed loop)")
	flag.Float64Var(&o.seconds, "seconds", 5, "length of the measured window")
	flag.Float64Var(&o.deadline, "deadline", 0, "seconds per call (0: none)")
	flag.IntVar(&o.warmup, "warmup", -1, "calls before the window (default: -concurrency)")
	flag.Parse()
	for _, h := range strings.Split(headers, "\n") {
		if h != "" {
			o.headers = append(o.headers, h)
		}
	}
	for _, b := range strings.Split(bodies, "\n") {
		if b != "" {
			o.bodies = append(o.bodies, b)
		}
	}
	if len(o.headers) == 0 {
		o.headers = []string{""}
	}
	if o.warmup < 0 {
		o.warmup = o.concurrency
	}
	call, err := newCaller(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	for i := 0; i < o.warmup; i++ { // connections up, caches warm
		call(context.Background(), i)
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		os.Exit(1)
	}
	var r result
	if o.rate > 0 {
		r = openLoop(o, call)
	} else {
		r = closedLoop(o, call)
	}
	if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
		os.Exit(1)
	}
}

func cpuSeconds() float64 {
	var u syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &u)
	return time.Duration(u.Utime.Nano() + u.Stime.Nano()).Seconds()
}

type tally struct {
	mu        sync.Mutex
	labels    map[string]int
	latencies []float64
}

func (t *tally) add(label string, took time.Duration) {
	t.mu.Lock()
	t.labels[label]++
	if label == "OK" {
		t.latencies = append(t.latencies, took.Seconds())
	}
	t.mu.Unlock()
}

func (o options) context() (context.Context, context.CancelFunc) {
	if o.deadline > 0 {
		return context.WithTimeout(context.Background(), time.Duration(o.deadline*float64(time.Second)))
	}
	return context.WithCancel(context.Background())
}

func closedLoop(o options, call caller) result {
	t := tally{labels: map[string]int{}}
	cpu0, start := cpuSeconds(), time.Now()
	end := start.Add(time.Duration(o.seconds * float64(time.Second)))
	var next int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for c := 0; c < o.concurrency; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				mu.Lock()
				i := int(next)
				next++
				mu.Unlock()
				ctx, cancel := o.context()
				began := time.Now()
				label := call(ctx, i)
				t.add(label, time.Since(began))
				cancel()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	return result{t.labels, t.latencies, elapsed, elapsed, 0, cpuSeconds() - cpu0}
}

func openLoop(o options, call caller) result {
	t := tally{labels: map[string]int{}}
	cpu0, start := cpuSeconds(), time.Now()
	count := int(o.rate * o.seconds)
	var wg sync.WaitGroup
	for i := 0; i < count; i++ {
		if d := time.Until(start.Add(time.Duration(float64(i) / o.rate * float64(time.Second)))); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ctx, cancel := o.context()
			defer cancel()
			began := time.Now()
			t.add(call(ctx, i), time.Since(began))
		}(i)
	}
	sent := time.Since(start).Seconds()
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	return result{t.labels, t.latencies, elapsed, sent, count, cpuSeconds() - cpu0}
}

func newCaller(o options) (caller, error) {
	if o.transport == "grpc" {
		return grpcCaller(o)
	}
	if o.transport == "http" {
		return httpCaller(o), nil
	}
	return nil, fmt.Errorf("unknown transport %q", o.transport)
}

func grpcLabel(err error) string {
	if err == nil {
		return "OK"
	}
	code := int(status.Code(err))
	if code < len(codeNames) {
		return codeNames[code]
	}
	return fmt.Sprintf("code %d", code)
}

func withAuthorization(ctx context.Context, value string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", value)
}

func grpcCaller(o options) (caller, error) {
	// Fixed flow-control windows turn off grpc-go's bandwidth estimator, which pings the
	// server on every reply: a frame each way, and wake-ups, for nothing on loopback.
	conn, err := grpc.Dial(
		o.target,
		grpc.WithInsecure(),
		grpc.WithInitialWindowSize(1<<20),
		grpc.WithInitialConnWindowSize(1<<20),
	)
	if err != nil {
		return nil, err
	}
	auth := pb.NewAuthServiceClient(conn)
	tokens := pb.NewTokenServiceClient(conn)
	switch o.call {
	case "authorize":
		return func(ctx context.Context, i int) string {
			if h := o.headers[i%len(o.headers)]; h != "" {
				ctx = withAuthorization(ctx, h)
			}
			reply, err := auth.Authorize(ctx, &pb.AuthorizeRequest{})
			if err == nil && reply.GetAccessToken() == "" {
				return "OK without a token"
			}
			return grpcLabel(err)
		}, nil
	case "verify":
		return func(ctx context.Context, i int) string {
			reply, err := tokens.VerifyToken(ctx, &pb.VerifyTokenRequest{Token: o.token})
			if err == nil && !reply.GetActive() {
				return "OK but inactive"
			}
			return grpcLabel(err)
		}, nil
	}
	return nil, fmt.Errorf("unknown gRPC call %q", o.call)
}

// httpCaller speaks HTTP/1.1 over a pool of kept-alive connections itself, one request at a
// time on each: net/http's client hands every request between goroutines (about twice the CPU
// per call), and a load generator's own cost is what the bench must keep small. Written by hand
// for that reason only; replies must carry a Content-Length (aiohttp's and uvicorn's JSON
// replies do), anything else is labelled as an error.
func httpCaller(o options) caller {
	u, err := url.Parse(strings.TrimRight(o.target, "/") + o.path)
	if err != nil {
		return func(context.Context, int) string { return "connection error (target)" }
	}
	var timeout string
	if o.deadline > 0 { // the deadline goes to the server too (grpc-gateway's Grpc-Timeout)
		timeout = fmt.Sprintf("%dm", int(o.deadline*1000+0.5))
	}
	requests := make([][]byte, 0, len(o.headers))
	n := len(o.headers)
	if len(o.bodies) > n {
		n = len(o.bodies)
	}
	for i := 0; i < n; i++ {
		var b bytes.Buffer
		fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", o.call, u.RequestURI(), u.Host)
		if h := o.headers[i%len(o.headers)]; h != "" {
			fmt.Fprintf(&b, "Authorization: %s\r\n", h)
		}
		if timeout != "" {
			fmt.Fprintf(&b, "Grpc-Timeout: %s\r\n", timeout)
		}
		body := ""
		if len(o.bodies) > 0 {
			body = o.bodies[i%len(o.bodies)]
			fmt.Fprintf(&b, "Content-Type: %s\r\n", o.contentType)
		}
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(body), body)
		requests = append(requests, b.Bytes())
	}
	pool := make(chan *httpConn, 4096)
	return func(ctx context.Context, i int) string {
		var c *httpConn
		select {
		case c = <-pool:
		default:
			conn, err := net.Dial("tcp", u.Host)
			if err != nil {
				return httpFailure(err)
			}
			c = &httpConn{conn: conn, r: bufio.NewReaderSize(conn, 16384)}
		}
		deadline, _ := ctx.Deadline()
		_ = c.conn.SetDeadline(deadline) // zero: none
		label, reuse := c.do(requests[i%len(requests)], o.expect)
		if !reuse {
			c.conn.Close()
			return label
		}
		select {
		case pool <- c:
		default:
			c.conn.Close()
		}
		return label
	}
}

type httpConn struct {
	conn net.Conn
	r    *bufio.Reader
}

// do sends one request and reads its reply: the label, and whether the connection can be used
// again.
func (c *httpConn) do(request []byte, expect string) (string, bool) {
	if _, err := c.conn.Write(request); err != nil {
		return httpFailure(err), false
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return httpFailure(err), false
	}
	fields := strings.Fields(string(line))
	if len(fields) < 2 {
		return "connection error (malformed status line)", false
	}
	status, err := strconv.Atoi(fields[1])
	if err != nil {
		return "connection error (malformed status line)", false
	}
	length, keep := -1, true
	for {
		line, err = c.r.ReadSlice('\n')
		if err != nil {
			return httpFailure(err), false
		}
		header := strings.TrimSpace(string(line))
		if header == "" {
			break
		}
		name, value, _ := strings.Cut(header, ":")
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "content-length":
			length, _ = strconv.Atoi(value)
		case "connection":
			keep = !strings.EqualFold(value, "close")
		case "transfer-encoding":
			return "connection error (chunked reply)", false
		}
	}
	if length < 0 {
		return "connection error (no Content-Length)", false
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return httpFailure(err), false
	}
	if status != 200 {
		return fmt.Sprintf("HTTP %d", status), keep
	}
	if !truthy(body, expect) {
		return "HTTP 200 unexpected body", keep
	}
	return "OK", keep
}

func httpFailure(err error) string {
	var netErr net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()) {
		return "client timeout"
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return fmt.Sprintf("connection error (%s)", opErr.Op)
	}
	return "connection error (" + strings.SplitN(err.Error(), ":", 2)[0] + ")"
}

// truthy: the JSON object's member `key` is present and not null, false, 0, "" or empty.
func truthy(data []byte, key string) bool {
	var body map[string]json.RawMessage
	if json.Unmarshal(data, &body) != nil {
		return false
	}
	raw, ok := body[key]
	if !ok {
		return false
	}
	raw = bytes.TrimSpace(raw)
	switch string(raw) {
	case "null", "false", "0", `""`, "[]", "{}":
		return false
	}
	return true
}
