// Package authsvc is a thin Go client for authsvc over gRPC, on the stubs in ./authsvcv1
// (generated from the repository's proto/ by `make go-stubs`).
//
//	conn, err := grpc.Dial("127.0.0.1:50051", grpc.WithTransportCredentials(insecure))
//	client := authsvc.New(conn)
//	token, err := client.Authorize(ctx, "alice", "alice pw", 600)
//	var failure *authsvc.Error
//	if errors.As(err, &failure) && failure.Reason == "INVALID_CREDENTIALS" { ... }
//
// Every failure is an *Error carrying the gRPC code, the google.rpc.ErrorInfo reason, the
// google.rpc.RetryInfo delay and the call's x-request-id. Deadlines come from the context.
package authsvc

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "authsvc.example/clients/go/authsvcv1"
)

const requestIDKey = "x-request-id"

// Error is a failed call.
type Error struct {
	// Code is the gRPC status code (codes.Unauthenticated, ...).
	Code codes.Code
	// Reason is ErrorInfo.reason ("INVALID_CREDENTIALS"), or "" when the status carried none
	// (a connection failure, a deadline).
	Reason string
	// Domain is ErrorInfo.domain ("authsvc"), or "".
	Domain string
	// Message is the status message.
	Message string
	// RetryAfter is how long to wait before trying again (RetryInfo), 0 when not given.
	RetryAfter time.Duration
	// RequestID is the call's x-request-id, which the server logs.
	RequestID string
	// Info and Retry are the details as received, or nil.
	Info  *errdetails.ErrorInfo
	Retry *errdetails.RetryInfo
}

func (e *Error) Error() string {
	reason := e.Reason
	if reason == "" {
		reason = e.Code.String()
	}
	return fmt.Sprintf("%s: %s", reason, e.Message)
}

// GRPCStatus lets status.FromError and status.Code see the original status.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

func newError(err error, requestID string, trailer metadata.MD) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	if ids := trailer.Get(requestIDKey); len(ids) > 0 {
		requestID = ids[0]
	}
	failure := &Error{Code: st.Code(), Message: st.Message(), RequestID: requestID}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			failure.Info, failure.Reason, failure.Domain = d, d.GetReason(), d.GetDomain()
		case *errdetails.RetryInfo:
			failure.Retry = d
			if delay := d.GetRetryDelay(); delay != nil {
				failure.RetryAfter = time.Duration(delay.GetSeconds())*time.Second +
					time.Duration(delay.GetNanos())
			}
		}
	}
	return failure
}

// Client calls authsvc on one connection, which the caller owns (and closes).
type Client struct {
	auth      pb.AuthServiceClient
	passwords pb.PasswordServiceClient
	tokens    pb.TokenServiceClient
}

// New returns a client on conn (grpc.Dial with the transport credentials you need: TLS, mTLS).
func New(conn grpc.ClientConnInterface) *Client {
	return &Client{
		auth:      pb.NewAuthServiceClient(conn),
		passwords: pb.NewPasswordServiceClient(conn),
		tokens:    pb.NewTokenServiceClient(conn),
	}
}

// withCall adds the request id (and Basic credentials when username is set) to ctx; done turns
// a failure into an *Error.
func withCall(ctx context.Context, username, password string) (context.Context, []grpc.CallOption, func(error) error) {
	raw := make([]byte, 16)
	_, _ = rand.Read(raw)
	requestID := hex.EncodeToString(raw)
	pairs := []string{requestIDKey, requestID}
	if username != "" {
		token := base64.StdEncoding.EncodeToString([]byte(username + ":" + password))
		pairs = append(pairs, "authorization", "Basic "+token)
	}
	var trailer metadata.MD
	done := func(err error) error {
		if err == nil {
			return nil
		}
		return newError(err, requestID, trailer)
	}
	return metadata.AppendToOutgoingContext(ctx, pairs...), []grpc.CallOption{grpc.Trailer(&trailer)}, done
}

// Authorize returns a signed JWT for the user, valid ttl seconds (1..86400; 0: the server's
// default, 300).
func (c *Client) Authorize(ctx context.Context, username, password string, ttl int32) (string, error) {
	ctx, opts, done := withCall(ctx, username, password)
	request := &pb.AuthorizeRequest{}
	if ttl != 0 {
		request.Ttl = &ttl
	}
	reply, err := c.auth.Authorize(ctx, request, opts...)
	if err != nil {
		return "", done(err)
	}
	return reply.GetAccessToken(), nil
}

// APIToken is IssueAPIToken's answer (Densify's dialect).
type APIToken struct {
	APIToken string
	// Expires is the expiry in milliseconds since the Unix epoch.
	Expires int64
	Status  int32
}

// IssueAPIToken is Densify's dialect of Authorize: the credentials travel in the request body.
func (c *Client) IssueAPIToken(ctx context.Context, username, password string) (APIToken, error) {
	ctx, opts, done := withCall(ctx, "", "")
	reply, err := c.auth.IssueApiToken(ctx, &pb.IssueApiTokenRequest{UserName: username, Pwd: password}, opts...)
	if err != nil {
		return APIToken{}, done(err)
	}
	return APIToken{APIToken: reply.GetApiToken(), Expires: reply.GetExpires(), Status: reply.GetStatus()}, nil
}

// ReplacePasswords replaces the user's whole password list with newPassword.
func (c *Client) ReplacePasswords(ctx context.Context, username, password, newPassword string) error {
	ctx, opts, done := withCall(ctx, username, password)
	_, err := c.passwords.ReplacePasswords(ctx, &pb.ReplacePasswordsRequest{NewPassword: newPassword}, opts...)
	return done(err)
}

// AddPassword adds newPassword to the user's list.
func (c *Client) AddPassword(ctx context.Context, username, password, newPassword string) error {
	ctx, opts, done := withCall(ctx, username, password)
	_, err := c.passwords.AddPassword(ctx, &pb.AddPasswordRequest{NewPassword: newPassword}, opts...)
	return done(err)
}

// DeletePassword deletes oldPassword from the user's list (never the last one).
func (c *Client) DeletePassword(ctx context.Context, username, password, oldPassword string) error {
	ctx, opts, done := withCall(ctx, username, password)
	_, err := c.passwords.DeletePassword(ctx, &pb.DeletePasswordRequest{OldPassword: oldPassword}, opts...)
	return done(err)
}

// VerifyToken reports whether token is active now, with its claims when it is (RFC 7662).
func (c *Client) VerifyToken(ctx context.Context, token string) (*pb.VerifyTokenResponse, error) {
	ctx, opts, done := withCall(ctx, "", "")
	reply, err := c.tokens.VerifyToken(ctx, &pb.VerifyTokenRequest{Token: token}, opts...)
	if err != nil {
		return nil, done(err)
	}
	return reply, nil
}

// GetJwks returns the public signing keys (an RFC 7517 JWK Set).
func (c *Client) GetJwks(ctx context.Context) ([]*pb.Jwk, error) {
	ctx, opts, done := withCall(ctx, "", "")
	reply, err := c.tokens.GetJwks(ctx, &pb.GetJwksRequest{}, opts...)
	if err != nil {
		return nil, done(err)
	}
	return reply.GetKeys(), nil
}
