package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/slimnet/slim/internal/unixsock"
)

// Sentinel errors that Backend implementations return and the client maps
// back from HTTP status codes.
var (
	// ErrNotFound: the named object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the request is malformed; nothing was changed.
	ErrInvalid = errors.New("invalid request")
	// ErrExhausted: no addresses are left in the host's subnet.
	ErrExhausted = errors.New("address pool exhausted")
	// ErrUnavailable: slimd is not reachable or not ready (store not synced).
	ErrUnavailable = errors.New("slimd unavailable")
)

// Backend is what the server needs from the daemon.
type Backend interface {
	Status(ctx context.Context) (Status, error)
	Hosts(ctx context.Context) ([]Host, error)
	// Endpoints lists endpoints, of one host when host is not empty.
	Endpoints(ctx context.Context, host string) ([]Endpoint, error)
	Endpoint(ctx context.Context, a Attachment) (Endpoint, error)
	AddEndpoint(ctx context.Context, r EndpointRequest) (Endpoint, error)
	// DelEndpoint releases an endpoint; releasing one that is gone succeeds.
	DelEndpoint(ctx context.Context, a Attachment) error
	GC(ctx context.Context, r GCRequest) (GCResponse, error)
}

// maxBody bounds request bodies; the largest legitimate one is a GC list.
const maxBody = 4 << 20

// requestTimeout bounds one API call, so a stuck store cannot pile up
// CNI invocations: a runtime gets a "try again later" well within its
// own timeout (a CNI ADD makes two calls) and retries.
const requestTimeout = 10 * time.Second

// Server serves the API on a unix socket.
type Server struct {
	backend Backend
	log     *slog.Logger
	mux     *http.ServeMux
	// OnRequest, if set, is called after each request (for metrics).
	OnRequest func(route string, code int)
}

// NewServer builds a server around b.
func NewServer(b Backend, log *slog.Logger) *Server {
	s := &Server{backend: b, log: log, mux: http.NewServeMux()}
	s.handle("GET /v1/status", func(r *http.Request) (any, error) { return b.Status(r.Context()) })
	s.handle("GET /v1/hosts", func(r *http.Request) (any, error) { return b.Hosts(r.Context()) })
	s.handle("GET /v1/endpoints", func(r *http.Request) (any, error) {
		return b.Endpoints(r.Context(), r.URL.Query().Get("host"))
	})
	s.handle("POST /v1/endpoints", func(r *http.Request) (any, error) {
		var req EndpointRequest
		if err := Decode(r, &req); err != nil {
			return nil, err
		}
		if err := req.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		return b.AddEndpoint(r.Context(), req)
	})
	s.handle("GET /v1/endpoints/{id}/{ifname}", func(r *http.Request) (any, error) {
		a, err := AttachmentFromPath(r)
		if err != nil {
			return nil, err
		}
		return b.Endpoint(r.Context(), a)
	})
	s.handle("DELETE /v1/endpoints/{id}/{ifname}", func(r *http.Request) (any, error) {
		a, err := AttachmentFromPath(r)
		if err != nil {
			return nil, err
		}
		return struct{}{}, b.DelEndpoint(r.Context(), a)
	})
	s.handle("POST /v1/gc", func(r *http.Request) (any, error) {
		var req GCRequest
		if err := Decode(r, &req); err != nil {
			return nil, err
		}
		for _, a := range req.Valid {
			if err := a.Validate(); err != nil {
				return nil, fmt.Errorf("%w: valid attachment: %w", ErrInvalid, err)
			}
		}
		return b.GC(r.Context(), req)
	})
	return s
}

// Handle adds a route served by fn; later issues extend the API this way.
func (s *Server) Handle(pattern string, fn func(*http.Request) (any, error)) {
	s.handle(pattern, fn)
}

func (s *Server) handle(pattern string, fn func(*http.Request) (any, error)) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
		defer cancel()
		r = r.WithContext(ctx)
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		v, err := fn(r)
		if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			err = fmt.Errorf("%w: no answer within %s (is the store, etcd, reachable? slimctl status shows its last answer): %w", ErrUnavailable, requestTimeout, err)
		}
		code := http.StatusOK
		if err != nil {
			code = statusOf(err)
			v = Error{Error: err.Error()}
			if code >= 500 {
				s.log.Warn("api request failed", "route", pattern, "err", err)
			} else {
				s.log.Debug("api request rejected", "route", pattern, "err", err)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
		if s.OnRequest != nil {
			s.OnRequest(pattern, code)
		}
	})
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrExhausted):
		return http.StatusInsufficientStorage
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// AttachmentFromPath reads the {id} and {ifname} of a route, validated.
func AttachmentFromPath(r *http.Request) (Attachment, error) {
	a := Attachment{ContainerID: r.PathValue("id"), IfName: r.PathValue("ifname")}
	if err := a.Validate(); err != nil {
		return a, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return a, nil
}

// Decode reads a request's JSON body strictly (unknown fields and
// trailing data are ErrInvalid), for the routes here and those added with
// Handle.
func Decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: decode body: %w", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: trailing data after JSON body", ErrInvalid)
	}
	return nil
}

// ServeHTTP lets tests drive the server without a socket.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Run serves on the unix socket at path until ctx ends. A stale socket file
// from a previous run is replaced, a live one is an error
// (unixsock.ErrInUse); the socket is owner-only because the API hands out
// addresses and attaches containers.
func (s *Server) Run(ctx context.Context, path string) error {
	ln, err := unixsock.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	defer ln.Close() // removes the socket if it is still ours
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("api serve: %w", err)
	case <-ctx.Done():
	}
	// Let in-flight CNI calls finish; they are short.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}
