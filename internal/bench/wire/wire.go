// Package wire holds the JSON reports that slimprobe (cmd/slimprobe) and
// crr1's C client (internal/bench/crr1.c) print, one object per run, and
// that package bench and the lab tests read. slimprobe and its readers
// compile against these types, so the two sides cannot drift apart; the
// C client prints CRR1Result's fields by hand.
//
// The JSON is a contract between the binaries of one build, which may be
// run apart (slimctl bench --probe): add fields, never rename them.
//
// What it leaves to others: producing the reports (slimprobe, crr1.c) and
// judging them (package bench's Parse functions say which reports are
// usable).
package wire

// Latencies are percentiles of a set of latencies, in microseconds:
// nearest rank.
type Latencies struct {
	P50  float64 `json:"p50Us"`
	P90  float64 `json:"p90Us"`
	P99  float64 `json:"p99Us"`
	Mean float64 `json:"meanUs"`
	Min  float64 `json:"minUs"`
	Max  float64 `json:"maxUs"`
}

// RRResult is `slimprobe rr`'s report: ping-pong transactions on one
// connection.
type RRResult struct {
	Mode         string  `json:"mode"` // "rr"
	Addr         string  `json:"addr"`
	Size         int     `json:"size"`
	Transactions int     `json:"transactions"`
	Seconds      float64 `json:"seconds"`
	TPS          float64 `json:"tps"`
	Latencies
	// CPUStart and CPUEnd are the machine's CPU times read right before
	// and after the timed loop.
	CPUStart CPUTimes `json:"cpuStart"`
	CPUEnd   CPUTimes `json:"cpuEnd"`
}

// CRRResult is `slimprobe crr`'s report: connections made, used for one
// transaction and closed.
type CRRResult struct {
	Mode        string  `json:"mode"` // "crr"
	Addr        string  `json:"addr"`
	Workers     int     `json:"workers"`
	Connections int     `json:"connections"`
	Errors      int     `json:"errors"`
	FirstError  string  `json:"firstError,omitempty"`
	Seconds     float64 `json:"seconds"`
	CPS         float64 `json:"cps"`
	// Connect is connect(2)'s latency: connection setup.
	Connect Latencies `json:"connect"`
	// Transaction is connect, request, response and close.
	Transaction Latencies `json:"transaction"`
	// CPUStart and CPUEnd: as in RRResult.
	CPUStart CPUTimes `json:"cpuStart"`
	CPUEnd   CPUTimes `json:"cpuEnd"`
}

// MemcachedResult is `slimprobe memcached`'s report: the memcached load
// generator's operations and their latencies.
type MemcachedResult struct {
	Mode      string `json:"mode"` // "memcached"
	Addr      string `json:"addr"`
	Conns     int    `json:"conns"`
	Keys      int    `json:"keys"`
	ValueSize int    `json:"valueSize"`
	// Ratio is sets:gets, as memtier_benchmark's --ratio.
	Ratio      string  `json:"ratio"`
	Ops        int     `json:"ops"`
	Sets       int     `json:"sets"`
	Gets       int     `json:"gets"`
	Hits       int     `json:"hits"`
	Misses     int     `json:"misses"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"firstError,omitempty"`
	Seconds    float64 `json:"seconds"`
	OpsPerSec  float64 `json:"opsPerSec"`
	// The latencies are of single operations: request written to
	// response read.
	Latencies
	// CPUStart and CPUEnd: as in RRResult.
	CPUStart CPUTimes `json:"cpuStart"`
	CPUEnd   CPUTimes `json:"cpuEnd"`
}

// CRR1Result is the crr1 C client's report (internal/bench/crr1.c prints
// it field by field).
type CRR1Result struct {
	Mode        string  `json:"mode"` // "crr1"
	Addr        string  `json:"addr"`
	Connections int     `json:"connections"`
	Errors      int     `json:"errors"`
	FirstError  string  `json:"firstError"`
	Seconds     float64 `json:"seconds"`
	CPS         float64 `json:"cps"`
	// Latencies are connect-to-close: from before socket() to after
	// close().
	Latencies
	// UserSeconds and SystemSeconds are the client's own CPU time
	// (getrusage).
	UserSeconds   float64 `json:"userSeconds"`
	SystemSeconds float64 `json:"systemSeconds"`
	// CPUStart and CPUEnd: as in RRResult.
	CPUStart CPUTimes `json:"cpuStart"`
	CPUEnd   CPUTimes `json:"cpuEnd"`
}

// ConnReport is what one connection looked like to the application
// (`slimprobe serve` and `connect`).
type ConnReport struct {
	Local  string `json:"local"`  // getsockname
	Peer   string `json:"peer"`   // getpeername
	Accept string `json:"accept"` // accept()'s address (server side)
	Bytes  int64  `json:"bytes"`
	// KeepIdle is TCP_KEEPIDLE read back after connect (client, with
	// -keepidle): the socket's value whichever socket is behind the fd.
	KeepIdle int    `json:"keepIdle,omitempty"`
	Err      string `json:"err,omitempty"`
}

// ConnectResult is one line of `slimprobe connect`: one connection as
// the client saw it, and as the server did (its greeting line).
type ConnectResult struct {
	Client ConnReport `json:"client"`
	Server ConnReport `json:"server"`
}

// ConnectSummary is `slimprobe connect -summary`'s one line.
type ConnectSummary struct {
	Conns      int     `json:"conns"`
	Failed     int     `json:"failed"`
	FirstError string  `json:"firstError"`
	Seconds    float64 `json:"seconds"`
}

// HoldResult is `slimprobe hold`'s report: how many connections were held
// open at once, and their local ports.
type HoldResult struct {
	Conns      int      `json:"conns"`
	Failed     int      `json:"failed"`
	FirstError string   `json:"firstError,omitempty"`
	Ports      []uint16 `json:"ports"`
	// Cut counts held connections the network closed or reset while
	// hold waited (-until-closed), FirstCut the first one's error.
	Cut      int    `json:"cut,omitempty"`
	FirstCut string `json:"firstCut,omitempty"`
}
