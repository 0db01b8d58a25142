// Command golangjwt verifies a token against a JWK Set with golang-jwt at its defaults (the
// parser's own checks; the key chosen by the token's kid). Used by tests/interop/test_verifiers.py.
//
//	go run ./tests/interop/golangjwt TOKEN JWKS_FILE ISSUER AUDIENCE
//
// It prints "ok", or the error, and exits 0 either way (1 on bad arguments).
package main

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"os"

	"github.com/golang-jwt/jwt/v4"
)

type jwk struct {
	Kty, Kid, Crv, X, Y, N, E string
}

func decode(field string) []byte {
	raw, err := base64.RawURLEncoding.DecodeString(field)
	if err != nil {
		panic(err)
	}
	return raw
}

// publicKey turns a JWK into the key type golang-jwt's signing methods expect. golang-jwt has
// no JWK parser of its own, so these few lines (RFC 7518 section 6) stand in for one.
func publicKey(key jwk) (interface{}, error) {
	switch key.Kty {
	case "EC":
		if key.Crv != "P-256" {
			return nil, fmt.Errorf("curve %s", key.Crv)
		}
		return &ecdsa.PublicKey{
			Curve: elliptic.P256(),
			X:     new(big.Int).SetBytes(decode(key.X)),
			Y:     new(big.Int).SetBytes(decode(key.Y)),
		}, nil
	case "RSA":
		return &rsa.PublicKey{
			N: new(big.Int).SetBytes(decode(key.N)),
			E: int(new(big.Int).SetBytes(decode(key.E)).Int64()),
		}, nil
	case "OKP":
		return ed25519.PublicKey(decode(key.X)), nil
	}
	return nil, fmt.Errorf("key type %s", key.Kty)
}

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: golangjwt TOKEN JWKS_FILE ISSUER AUDIENCE")
		os.Exit(1)
	}
	token, file, issuer, audience := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	raw, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var set struct{ Keys []jwk }
	if err := json.Unmarshal(raw, &set); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	claims := jwt.MapClaims{}
	_, err = jwt.ParseWithClaims(token, claims, func(t *jwt.Token) (interface{}, error) {
		for _, key := range set.Keys {
			if key.Kid == t.Header["kid"] {
				return publicKey(key)
			}
		}
		return nil, fmt.Errorf("no key %v", t.Header["kid"])
	})
	switch {
	case err != nil:
		fmt.Println(err)
	case !claims.VerifyIssuer(issuer, true):
		fmt.Println("wrong issuer")
	case !claims.VerifyAudience(audience, true):
		fmt.Println("wrong audience")
	case claims["sub"] == nil:
		fmt.Println("no sub")
	default:
		fmt.Println("ok")
	}
}
