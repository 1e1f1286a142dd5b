package edge

import (
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Auth errors (the reason of a 401 answer).
var (
	ErrNoToken      = errors.New("edge: no token")
	ErrBadToken     = errors.New("edge: invalid token")
	ErrBadDevUserID = errors.New("edge: invalid user id")
)

// MaxUserIDLen bounds a user id (the token's sub claim, or ?user= in InsecureDevAuth mode).
const MaxUserIDLen = 128

// authenticator validates the handshake's token: a JWT signed with HS256 (Config.JWTSecret) or
// EdDSA / RS256 (Config.JWTPublicKey). The user id is the sub claim.
type authenticator struct {
	cfg     *Config
	parser  *jwt.Parser
	methods []string
}

func newAuthenticator(cfg *Config) *authenticator {
	a := &authenticator{cfg: cfg}
	if len(cfg.JWTSecret) > 0 {
		a.methods = append(a.methods, jwt.SigningMethodHS256.Alg())
	}
	switch cfg.JWTPublicKey.(type) {
	case ed25519.PublicKey:
		a.methods = append(a.methods, jwt.SigningMethodEdDSA.Alg())
	case *rsa.PublicKey:
		a.methods = append(a.methods, jwt.SigningMethodRS256.Alg())
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(a.methods),
		jwt.WithLeeway(2 * time.Second),
		jwt.WithIssuedAt(),
	}
	if cfg.JWTAudience != "" {
		opts = append(opts, jwt.WithAudience(cfg.JWTAudience))
	}
	a.parser = jwt.NewParser(opts...)
	return a
}

func (a *authenticator) key(t *jwt.Token) (any, error) {
	switch t.Method.Alg() {
	case jwt.SigningMethodHS256.Alg():
		if len(a.cfg.JWTSecret) > 0 {
			return a.cfg.JWTSecret, nil
		}
	case jwt.SigningMethodEdDSA.Alg():
		if k, ok := a.cfg.JWTPublicKey.(ed25519.PublicKey); ok {
			return k, nil
		}
	case jwt.SigningMethodRS256.Alg():
		if k, ok := a.cfg.JWTPublicKey.(*rsa.PublicKey); ok {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w: algorithm %s not accepted", ErrBadToken, t.Method.Alg())
}

// authenticate returns the user a handshake speaks for and when its token expires (zero: never).
// A presented token must be valid, even in InsecureDevAuth mode; without a token,
// InsecureDevAuth accepts devUser (the ?user= parameter).
func (a *authenticator) authenticate(token, devUser string) (user string, exp time.Time, err error) {
	if token == "" {
		if a.cfg.InsecureDevAuth {
			if !validUserID(devUser) {
				return "", exp, ErrBadDevUserID
			}
			return devUser, exp, nil
		}
		return "", exp, ErrNoToken
	}
	if len(a.methods) == 0 {
		return "", exp, fmt.Errorf("%w: no key configured", ErrBadToken)
	}
	var claims jwt.RegisteredClaims
	if _, err := a.parser.ParseWithClaims(token, &claims, a.key); err != nil {
		return "", exp, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	if !validUserID(claims.Subject) {
		return "", exp, fmt.Errorf("%w: bad sub claim", ErrBadToken)
	}
	if claims.ExpiresAt != nil {
		exp = claims.ExpiresAt.Time
	}
	return claims.Subject, exp, nil
}

func validUserID(u string) bool {
	if u == "" || len(u) > MaxUserIDLen || !utf8.ValidString(u) {
		return false
	}
	for _, r := range u {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}
