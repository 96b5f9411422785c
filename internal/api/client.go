package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// Client talks to slimd's API over its unix socket.
type Client struct {
	socket string
	hc     *http.Client
}

// dialTimeout bounds reaching the socket: slimd is local, so a slow dial
// means it is not there.
const dialTimeout = 2 * time.Second

// NewClient returns a client for the slimd listening at socket.
func NewClient(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d := net.Dialer{Timeout: dialTimeout}
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr, Timeout: requestTimeout + 5*time.Second}}
}

// StatusError is a non-2xx answer; errors.Is matches it against the
// package's sentinels.
type StatusError struct {
	Code int
	Msg  string
}

func (e *StatusError) Error() string { return fmt.Sprintf("slimd: %s", e.Msg) }

// Is maps HTTP codes back onto sentinels.
func (e *StatusError) Is(target error) bool {
	switch target {
	case ErrInvalid:
		return e.Code == http.StatusBadRequest
	case ErrNotFound:
		return e.Code == http.StatusNotFound
	case ErrExhausted:
		return e.Code == http.StatusInsufficientStorage
	case ErrUnavailable:
		return e.Code == http.StatusServiceUnavailable
	}
	return false
}

// Do sends one request: body (if not nil) as JSON, the answer decoded into
// out (if not nil).
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://slimd"+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w at %s: %w", ErrUnavailable, c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("read slimd answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = http.StatusText(resp.StatusCode)
		}
		return &StatusError{Code: resp.StatusCode, Msg: e.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode slimd answer: %w", err)
	}
	return nil
}

// Status returns the local slimd's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.Do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Hosts lists the cluster's hosts.
func (c *Client) Hosts(ctx context.Context) ([]Host, error) {
	var h []Host
	return h, c.Do(ctx, http.MethodGet, "/v1/hosts", nil, &h)
}

// Endpoints lists endpoints, of one host when host is not empty.
func (c *Client) Endpoints(ctx context.Context, host string) ([]Endpoint, error) {
	var e []Endpoint
	p := "/v1/endpoints"
	if host != "" {
		p += "?host=" + url.QueryEscape(host)
	}
	return e, c.Do(ctx, http.MethodGet, p, nil, &e)
}

// Endpoint returns one endpoint; errors.Is(err, ErrNotFound) if absent.
func (c *Client) Endpoint(ctx context.Context, a Attachment) (Endpoint, error) {
	var e Endpoint
	return e, c.Do(ctx, http.MethodGet, endpointPath(a), nil, &e)
}

// AddEndpoint allocates (or returns the existing) endpoint.
func (c *Client) AddEndpoint(ctx context.Context, r EndpointRequest) (Endpoint, error) {
	var e Endpoint
	return e, c.Do(ctx, http.MethodPost, "/v1/endpoints", r, &e)
}

// DelEndpoint releases an endpoint; an absent one is not an error.
func (c *Client) DelEndpoint(ctx context.Context, a Attachment) error {
	return c.Do(ctx, http.MethodDelete, endpointPath(a), nil, nil)
}

// GC releases this host's endpoints that are not in r.Valid.
func (c *Client) GC(ctx context.Context, r GCRequest) (GCResponse, error) {
	var g GCResponse
	return g, c.Do(ctx, http.MethodPost, "/v1/gc", r, &g)
}

func endpointPath(a Attachment) string {
	return "/v1/endpoints/" + url.PathEscape(a.ContainerID) + "/" + url.PathEscape(a.IfName)
}

// IsUnavailable reports whether err means slimd could not be reached.
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }

// Listeners lists published fast-path listeners, of one host when host is
// not empty.
func (c *Client) Listeners(ctx context.Context, host string) ([]Listener, error) {
	var l []Listener
	p := "/v1/listeners"
	if host != "" {
		p += "?host=" + url.QueryEscape(host)
	}
	return l, c.Do(ctx, http.MethodGet, p, nil, &l)
}

// Connections lists this host's fast-path connections.
func (c *Client) Connections(ctx context.Context) ([]Connection, error) {
	var out []Connection
	return out, c.Do(ctx, http.MethodGet, "/v1/connections", nil, &out)
}

// FastPath reads the fast-path state of the host.
func (c *Client) FastPath(ctx context.Context) (FastPathStatus, error) {
	var st FastPathStatus
	return st, c.Do(ctx, http.MethodGet, "/v1/fastpath", nil, &st)
}

// SetFastPath sets the cluster-wide switch.
func (c *Client) SetFastPath(ctx context.Context, enabled bool) (FastPathStatus, error) {
	var st FastPathStatus
	return st, c.Do(ctx, http.MethodPut, "/v1/fastpath", map[string]bool{"enabled": enabled}, &st)
}

// Check runs slimd's self-checks.
func (c *Client) Check(ctx context.Context) ([]Check, error) {
	var out []Check
	return out, c.Do(ctx, http.MethodGet, "/v1/check", nil, &out)
}

// Policies lists the network policies.
func (c *Client) Policies(ctx context.Context) ([]networkingv1.NetworkPolicy, error) {
	var out Policies
	err := c.Do(ctx, http.MethodGet, "/v1/policies", nil, &out)
	return out.Policies, err
}

// ApplyPolicies creates or replaces policies, all or none; it returns
// once the local slimd enforces them.
func (c *Client) ApplyPolicies(ctx context.Context, ps []networkingv1.NetworkPolicy) error {
	return c.Do(ctx, http.MethodPut, "/v1/policies", Policies{Policies: ps}, nil)
}

// DeletePolicy removes a policy (ErrNotFound if there is none).
func (c *Client) DeletePolicy(ctx context.Context, namespace, name string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/policies/"+url.PathEscape(namespace)+"/"+url.PathEscape(name), nil, nil)
}

// ExplainPolicy says whether a connection from src to dst at port/proto
// is allowed, and which rules decide.
func (c *Client) ExplainPolicy(ctx context.Context, src, dst netip.Addr, port uint16, proto string) (PolicyExplanation, error) {
	var out PolicyExplanation
	q := url.Values{"src": {src.String()}, "dst": {dst.String()}, "port": {strconv.Itoa(int(port))}, "proto": {proto}}
	err := c.Do(ctx, http.MethodGet, "/v1/policies/explain?"+q.Encode(), nil, &out)
	return out, err
}

// Namespaces lists the namespaces with their labels.
func (c *Client) Namespaces(ctx context.Context) ([]Namespace, error) {
	var out []Namespace
	err := c.Do(ctx, http.MethodGet, "/v1/namespaces", nil, &out)
	return out, err
}

// LabelNamespace changes a namespace's labels.
func (c *Client) LabelNamespace(ctx context.Context, name string, change NamespaceLabels) (Namespace, error) {
	var out Namespace
	err := c.Do(ctx, http.MethodPatch, "/v1/namespaces/"+url.PathEscape(name), change, &out)
	return out, err
}

// LabelEndpoint changes the labels of endpoint a, on the slimd of the
// endpoint's host.
func (c *Client) LabelEndpoint(ctx context.Context, a Attachment, change LabelChange) (Endpoint, error) {
	var out Endpoint
	err := c.Do(ctx, http.MethodPatch, "/v1/endpoints/"+url.PathEscape(a.ContainerID)+"/"+url.PathEscape(a.IfName)+"/labels", change, &out)
	return out, err
}

// Denials lists the latest connects network policy denied on this host,
// oldest first.
func (c *Client) Denials(ctx context.Context) ([]Denial, error) {
	var out []Denial
	err := c.Do(ctx, http.MethodGet, "/v1/denials", nil, &out)
	return out, err
}

// Services lists the services with their ports and backends.
func (c *Client) Services(ctx context.Context) ([]ServiceInfo, error) {
	var out []ServiceInfo
	err := c.Do(ctx, http.MethodGet, "/v1/services", nil, &out)
	return out, err
}

// ApplyServices creates or replaces services, one after another; it
// returns them as stored, with their cluster IPs.
func (c *Client) ApplyServices(ctx context.Context, svcs []corev1.Service) (Services, error) {
	var out Services
	err := c.Do(ctx, http.MethodPut, "/v1/services", Services{Services: svcs}, &out)
	return out, err
}

// DeleteService removes a service.
func (c *Client) DeleteService(ctx context.Context, namespace, name string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/services/"+url.PathEscape(namespace)+"/"+url.PathEscape(name), nil, nil)
}
