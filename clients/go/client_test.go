// The Go client against a live server: AUTHSVC_TARGET with a fresh user AUTHSVC_TEST_USER whose
// only password is AUTHSVC_TEST_PASSWORD, and AUTHSVC_DELAYED_TARGET (failed-login delay 0.4 s)
// with a fresh user AUTHSVC_DELAYED_USER, same password. tests/clients/test_go_client.py sets
// them. Each test leaves the user with that single password.
package authsvc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func env(t *testing.T, name string) string {
	value := os.Getenv(name)
	if value == "" {
		t.Fatalf("%s is not set (tests/clients/test_go_client.py sets it)", name)
	}
	return value
}

func dial(t *testing.T, target string) *Client {
	conn, err := grpc.Dial(target, grpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return New(conn)
}

func context10s(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func claims(t *testing.T, token string) map[string]interface{} {
	parts := strings.Split(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]interface{}{}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func wantError(t *testing.T, err error, code codes.Code, reason string) *Error {
	t.Helper()
	var failure *Error
	if !errors.As(err, &failure) {
		t.Fatalf("want *Error %s, got %v", reason, err)
	}
	if failure.Code != code || failure.Reason != reason {
		t.Fatalf("want %s %s, got %s %q", code, reason, failure.Code, failure.Reason)
	}
	if status.Code(err) != code {
		t.Fatalf("status.Code sees %s", status.Code(err))
	}
	return failure
}

func TestAuthorizeVerifyAndJwks(t *testing.T) {
	client, ctx := dial(t, env(t, "AUTHSVC_TARGET")), context10s(t)
	user, password := env(t, "AUTHSVC_TEST_USER"), env(t, "AUTHSVC_TEST_PASSWORD")
	token, err := client.Authorize(ctx, user, password, 120)
	if err != nil {
		t.Fatal(err)
	}
	c := claims(t, token)
	if c["username"] != user || c["exp"].(float64)-c["iat"].(float64) != 120 {
		t.Fatalf("claims %v", c)
	}
	seen, err := client.VerifyToken(ctx, token)
	if err != nil || !seen.GetActive() || seen.GetUsername() != user || seen.GetJti() != c["jti"] {
		t.Fatalf("verify: %v %v", seen, err)
	}
	if seen, err = client.VerifyToken(ctx, "not.a.token"); err != nil || seen.GetActive() {
		t.Fatalf("a bad token: %v %v", seen, err)
	}
	keys, err := client.GetJwks(ctx)
	if err != nil || len(keys) == 0 {
		t.Fatalf("jwks: %v %v", keys, err)
	}
	header := map[string]interface{}{}
	raw, _ := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	_ = json.Unmarshal(raw, &header)
	found := false
	for _, key := range keys {
		found = found || (key.GetKid() == header["kid"] && key.GetAlg() == header["alg"])
	}
	if !found {
		t.Fatalf("no key %v in %v", header, keys)
	}
}

func TestDefaultTTL(t *testing.T) {
	client, ctx := dial(t, env(t, "AUTHSVC_TARGET")), context10s(t)
	token, err := client.Authorize(ctx, env(t, "AUTHSVC_TEST_USER"), env(t, "AUTHSVC_TEST_PASSWORD"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if c := claims(t, token); c["exp"].(float64)-c["iat"].(float64) != 300 {
		t.Fatalf("claims %v", c)
	}
}

func TestWrongPasswordCarriesReasonAndRequestID(t *testing.T) {
	client, ctx := dial(t, env(t, "AUTHSVC_TARGET")), context10s(t)
	user := env(t, "AUTHSVC_TEST_USER")
	_, err := client.Authorize(ctx, user, "wrong", 0)
	first := wantError(t, err, codes.Unauthenticated, "INVALID_CREDENTIALS")
	_, err = client.Authorize(ctx, user, "wrong", 0)
	second := wantError(t, err, codes.Unauthenticated, "INVALID_CREDENTIALS")
	if first.Domain != "authsvc" || first.RetryAfter != 0 || first.Retry != nil {
		t.Fatalf("error %+v", first)
	}
	if len(first.RequestID) != 32 || first.RequestID == second.RequestID {
		t.Fatalf("request ids %q %q", first.RequestID, second.RequestID)
	}
}

func TestPasswordLifecycle(t *testing.T) {
	client, ctx := dial(t, env(t, "AUTHSVC_TARGET")), context10s(t)
	user, password := env(t, "AUTHSVC_TEST_USER"), env(t, "AUTHSVC_TEST_PASSWORD")
	second := "zweites Passwört ✓"
	if err := client.AddPassword(ctx, user, password, second); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Authorize(ctx, user, second, 0); err != nil {
		t.Fatal(err)
	}
	if err := client.DeletePassword(ctx, user, password, second); err != nil {
		t.Fatal(err)
	}
	err := client.DeletePassword(ctx, user, password, password)
	wantError(t, err, codes.FailedPrecondition, "CANNOT_DELETE_LAST_PASSWORD")
	token, err := client.Authorize(ctx, user, password, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.ReplacePasswords(ctx, user, password, second); err != nil {
		t.Fatal(err)
	}
	if seen, err := client.VerifyToken(ctx, token); err != nil || seen.GetActive() {
		t.Fatalf("a token from before the replacement: %v %v", seen, err)
	}
	if err := client.ReplacePasswords(ctx, user, second, password); err != nil {
		t.Fatal(err)
	}
}

func TestIssueAPIToken(t *testing.T) {
	client, ctx := dial(t, env(t, "AUTHSVC_TARGET")), context10s(t)
	user := env(t, "AUTHSVC_TEST_USER")
	reply, err := client.IssueAPIToken(ctx, user, env(t, "AUTHSVC_TEST_PASSWORD"))
	if err != nil {
		t.Fatal(err)
	}
	c := claims(t, reply.APIToken)
	if reply.Status != 200 || c["username"] != user || reply.Expires != int64(c["exp"].(float64))*1000 {
		t.Fatalf("reply %+v claims %v", reply, c)
	}
	_, err = client.IssueAPIToken(ctx, user, "wrong")
	wantError(t, err, codes.Unauthenticated, "INVALID_CREDENTIALS")
}

func TestDeadlineFromTheContext(t *testing.T) {
	client := dial(t, env(t, "AUTHSVC_TARGET"))
	// A deadline already past: the client refuses to start the call (one of a millisecond can
	// race the server's own answer).
	ctx, cancel := context.WithTimeout(context.Background(), -time.Millisecond)
	defer cancel()
	_, err := client.Authorize(ctx, env(t, "AUTHSVC_TEST_USER"), env(t, "AUTHSVC_TEST_PASSWORD"), 0)
	wantError(t, err, codes.DeadlineExceeded, "")
}

func TestTooManyAttemptsCarriesRetryAfter(t *testing.T) {
	client, ctx := dial(t, env(t, "AUTHSVC_DELAYED_TARGET")), context10s(t)
	user, password := env(t, "AUTHSVC_DELAYED_USER"), env(t, "AUTHSVC_TEST_PASSWORD")
	_, err := client.Authorize(ctx, user, "wrong", 0)
	wantError(t, err, codes.Unauthenticated, "INVALID_CREDENTIALS")
	_, err = client.Authorize(ctx, user, password, 0)
	failure := wantError(t, err, codes.ResourceExhausted, "TOO_MANY_ATTEMPTS")
	if failure.RetryAfter <= 0 || failure.RetryAfter > 400*time.Millisecond {
		t.Fatalf("RetryAfter %v", failure.RetryAfter)
	}
	time.Sleep(failure.RetryAfter)
	if _, err := client.Authorize(ctx, user, password, 0); err != nil {
		t.Fatalf("after the delay: %v", err)
	}
}
