package objstore

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/nix2aci/nix2aci/internal/safeio"
)

// S3Options say which bucket, and how clients reach its objects.
type S3Options struct {
	// Endpoint is the store's URL (e.g. http://127.0.0.1:7070 or
	// https://s3.eu-west-1.amazonaws.com); "" is AWS's for the region.
	Endpoint string
	Bucket   string
	// PathStyle addresses the bucket as ENDPOINT/BUCKET/KEY rather than
	// BUCKET.ENDPOINT/KEY (what most S3-compatible servers want).
	PathStyle bool
	// Expiry is how long a signed URL stays valid (default 15 minutes).
	Expiry time.Duration
	// PublicURL, when set, is where the bucket's objects are public
	// (the bucket itself, or a CDN in front of it): URL answers
	// PublicURL/KEY, unsigned.
	PublicURL string
}

// S3 is a Store on an S3-compatible bucket.
type S3 struct {
	o       S3Options
	client  *s3.Client
	presign *s3.PresignClient
	public  *url.URL

	mu     sync.Mutex
	signed map[string]signedURL
}

// signedURL is a URL signed at a time: reused while at least half its
// validity is left, so that a redirect costs no signing.
type signedURL struct {
	url string
	at  time.Time
}

// maxSigned bounds the signed URLs kept.
const maxSigned = 10000

// Limits of S3Options.Expiry (SigV4 allows at most 7 days).
const (
	DefaultExpiry = 15 * time.Minute
	MaxExpiry     = 7 * 24 * time.Hour
)

// NewS3 makes an S3 store from cfg (its region and credentials; the
// caller loads them, e.g. with config.LoadDefaultConfig).
func NewS3(cfg aws.Config, o S3Options) (*S3, error) {
	if o.Bucket == "" {
		return nil, errors.New("no bucket named")
	}
	if o.Expiry == 0 {
		o.Expiry = DefaultExpiry
	}
	if o.Expiry < time.Second || o.Expiry > MaxExpiry {
		return nil, fmt.Errorf("a signed URL's expiry of %s is not between 1s and 7 days", o.Expiry)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("the endpoint %q is not an http(s)://HOST[:PORT] URL", o.Endpoint)
		}
	}
	st := &S3{o: o, signed: map[string]signedURL{}}
	if o.PublicURL != "" {
		u, err := url.Parse(strings.TrimSuffix(o.PublicURL, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("the public URL %q is not an http(s)://HOST[/PATH] URL", o.PublicURL)
		}
		st.public = u
	}
	if cfg.Credentials != nil {
		if _, ok := cfg.Credentials.(*aws.CredentialsCache); !ok {
			cfg.Credentials = aws.NewCredentialsCache(cfg.Credentials)
		}
	}
	st.client = s3.NewFromConfig(cfg, func(so *s3.Options) {
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		so.UsePathStyle = o.PathStyle
		// The SHA-256 is sent where it matters (PutFile); no default
		// CRC trailers, which not every S3-compatible server takes.
		so.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		so.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	st.presign = s3.NewPresignClient(st.client)
	return st, nil
}

func (st *S3) String() string {
	ep := st.o.Endpoint
	if ep == "" {
		ep = "AWS"
	}
	return fmt.Sprintf("s3://%s at %s", st.o.Bucket, ep)
}

// CheckError is a store that cannot be used as configured.
type CheckError struct {
	// Config: the configuration is wrong (bucket, credentials), rather
	// than the store unreachable.
	Config bool
	Msg    string
	Err    error
}

func (e *CheckError) Error() string { return e.Msg }
func (e *CheckError) Unwrap() error { return e.Err }

// Check asks for the bucket once (HeadBucket, no retries).
func (st *S3) Check(ctx context.Context) error {
	_, err := st.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(st.o.Bucket)}, func(so *s3.Options) {
		so.RetryMaxAttempts = 1
	})
	if err == nil {
		return nil
	}
	return st.explain(err)
}

// explain turns a failed request into a CheckError naming the fix.
func (st *S3) explain(err error) error {
	var re *awshttp.ResponseError
	ep := st.o.Endpoint
	if ep == "" {
		ep = "AWS"
	}
	if errors.As(err, &re) && re.HTTPStatusCode() != 0 {
		switch code := re.HTTPStatusCode(); {
		case code == 404:
			return &CheckError{Config: true, Err: err, Msg: fmt.Sprintf("the bucket %q does not exist at %s: create it, or name an existing one", st.o.Bucket, ep)}
		case code == 403 || code == 401 || code == 400:
			return &CheckError{Config: true, Err: err, Msg: fmt.Sprintf("%s refused the credentials for the bucket %q (HTTP %d): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE and ~/.aws/credentials) to a key that may read and write it", ep, st.o.Bucket, code)}
		case code == 301 || code == 307:
			return &CheckError{Config: true, Err: err, Msg: fmt.Sprintf("the bucket %q is in another region: give its region", st.o.Bucket)}
		}
		return &CheckError{Err: err, Msg: fmt.Sprintf("%s answered HTTP %d for the bucket %q: %v", ep, re.HTTPStatusCode(), st.o.Bucket, err)}
	}
	if strings.Contains(err.Error(), "retrieve credentials") || strings.Contains(err.Error(), "credential") {
		return &CheckError{Config: true, Err: err, Msg: fmt.Sprintf("no credentials for %s: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE and ~/.aws/credentials): %v", ep, err)}
	}
	return &CheckError{Err: err, Msg: fmt.Sprintf("cannot reach the store at %s: %v: check the endpoint URL and that the store is running", ep, err)}
}

// wrap maps a request's failure onto ErrNotExist and ErrPrecondition.
func (st *S3) wrap(op, key string, err error) error {
	if err == nil {
		return nil
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case 404:
			var ae smithy.APIError
			if errors.As(err, &ae) && ae.ErrorCode() == "NoSuchBucket" {
				break
			}
			return fmt.Errorf("%s %s: %w", op, key, ErrNotExist)
		case 412, 409: // 409: another conditional write to the key at once
			return fmt.Errorf("%s %s: %w", op, key, ErrPrecondition)
		}
	}
	return fmt.Errorf("%s %s in %s: %w", op, key, st, err)
}

func (st *S3) Get(ctx context.Context, key string, max int64) ([]byte, Object, error) {
	if err := CheckKey(key); err != nil {
		return nil, Object{}, err
	}
	out, err := st.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(st.o.Bucket), Key: aws.String(key)})
	if err != nil {
		return nil, Object{}, st.wrap("get", key, err)
	}
	defer out.Body.Close()
	if out.ContentLength != nil && *out.ContentLength > max {
		return nil, Object{}, fmt.Errorf("get %s: %d bytes, over the %d expected", key, *out.ContentLength, max)
	}
	b, err := io.ReadAll(io.LimitReader(out.Body, max+1))
	if err != nil {
		return nil, Object{}, st.wrap("get", key, err)
	}
	if int64(len(b)) > max {
		return nil, Object{}, fmt.Errorf("get %s: over the %d bytes expected", key, max)
	}
	return b, Object{Key: key, Size: int64(len(b)), ETag: aws.ToString(out.ETag)}, nil
}

func (st *S3) Stat(ctx context.Context, key string) (Object, error) {
	if err := CheckKey(key); err != nil {
		return Object{}, err
	}
	out, err := st.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(st.o.Bucket), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled})
	if err != nil {
		return Object{}, st.wrap("stat", key, err)
	}
	o := Object{Key: key, Size: aws.ToInt64(out.ContentLength), ETag: aws.ToString(out.ETag)}
	if c := aws.ToString(out.ChecksumSHA256); c != "" {
		// A full-object checksum only: a multipart one is "digest-N".
		if b, err := base64.StdEncoding.DecodeString(c); err == nil && len(b) == sha256.Size {
			o.SHA256 = hex.EncodeToString(b)
		}
	}
	return o, nil
}

func (st *S3) PutFile(ctx context.Context, key, path, contentType string) (Object, error) {
	if err := CheckKey(key); err != nil {
		return Object{}, err
	}
	f, err := safeio.OpenRegular(path)
	if err != nil {
		return Object{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, safeio.WithContext(ctx, f))
	if err != nil {
		return Object{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Object{}, err
	}
	sum := h.Sum(nil)
	// The store checks the bytes it got against the digest sent, and
	// refuses them if they differ: an upload cut short is not stored.
	out, err := st.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(st.o.Bucket), Key: aws.String(key), Body: io.NewSectionReader(f, 0, n), ContentLength: aws.Int64(n),
		ContentType: aws.String(contentType), ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(sum)),
	})
	if err != nil {
		return Object{}, st.wrap("put", key, err)
	}
	return Object{Key: key, Size: n, ETag: aws.ToString(out.ETag), SHA256: hex.EncodeToString(sum)}, nil
}

func (st *S3) Put(ctx context.Context, key string, b []byte, contentType string, c Cond) (Object, error) {
	if err := CheckKey(key); err != nil {
		return Object{}, err
	}
	sum := sha256.Sum256(b)
	in := &s3.PutObjectInput{
		Bucket: aws.String(st.o.Bucket), Key: aws.String(key), Body: strings.NewReader(string(b)), ContentLength: aws.Int64(int64(len(b))),
		ContentType: aws.String(contentType), ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(sum[:])),
	}
	if c.IfNoneMatch {
		in.IfNoneMatch = aws.String("*")
	}
	if c.IfMatch != "" {
		in.IfMatch = aws.String(c.IfMatch)
	}
	out, err := st.client.PutObject(ctx, in)
	if err != nil {
		return Object{}, st.wrap("put", key, err)
	}
	return Object{Key: key, Size: int64(len(b)), ETag: aws.ToString(out.ETag), SHA256: hex.EncodeToString(sum[:])}, nil
}

func (st *S3) Delete(ctx context.Context, key string, c Cond) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	in := &s3.DeleteObjectInput{Bucket: aws.String(st.o.Bucket), Key: aws.String(key)}
	if c.IfMatch != "" {
		in.IfMatch = aws.String(c.IfMatch)
	}
	_, err := st.client.DeleteObject(ctx, in)
	if err = st.wrap("delete", key, err); errors.Is(err, ErrNotExist) {
		return nil
	}
	return err
}

// URL is PublicURL/KEY, or a GET of key signed for Expiry: a URL signed
// earlier is answered again while at least half of Expiry is left of it.
func (st *S3) URL(ctx context.Context, key string) (string, error) {
	if err := CheckKey(key); err != nil {
		return "", err
	}
	if st.public != nil {
		u := *st.public
		u.Path = strings.TrimSuffix(u.Path, "/") + "/" + key
		u.RawPath = ""
		return u.String(), nil
	}
	st.mu.Lock()
	u, ok := st.signed[key]
	st.mu.Unlock()
	if ok && time.Since(u.at) < st.o.Expiry/2 {
		return u.url, nil
	}
	at := time.Now()
	req, err := st.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(st.o.Bucket), Key: aws.String(key)},
		s3.WithPresignExpires(st.o.Expiry))
	if err != nil {
		return "", fmt.Errorf("signing a URL for %s: %w", key, err)
	}
	st.mu.Lock()
	if len(st.signed) >= maxSigned {
		clear(st.signed)
	}
	st.signed[key] = signedURL{req.URL, at}
	st.mu.Unlock()
	return req.URL, nil
}
