package cpbench

// LabResult is what whole slimds do with a cluster's worth of simulated
// hosts in their store (RunOnLab).
type LabResult struct {
	Hosts     int `json:"hosts"`
	Endpoints int `json:"endpoints"`
	// SeedSeconds: the simulated hosts' joining; ConvergeSeconds: from
	// its end until every lab slimd knows every host and has programmed
	// every overlay peer.
	SeedSeconds     float64 `json:"seedSeconds"`
	ConvergeSeconds float64 `json:"convergeSeconds"`
	// RSSBytes is each lab slimd's resident memory before and after.
	RSSBefore map[string]int64 `json:"rssBeforeBytes"`
	RSSAfter  map[string]int64 `json:"rssAfterBytes"`
	// RSSPeak is the most each slimd was resident: h1 and h2 through the
	// seed and the churn, "h2 restarted" through its cold start.
	RSSPeak map[string]int64 `json:"rssPeakBytes"`
	// HeapLive is h1's slimd's Go heap right after a collection, after
	// convergence: what it holds, without the garbage that RSS includes.
	HeapLive int64 `json:"heapLiveBytes"`
	// BPFPortBlocks is h1's port block map's size after convergence.
	BPFPortBlocks int `json:"bpfPortBlocks"`
	// CPUShare is the CPU time of h1's slimd cgroup per wall time during
	// churn.
	ChurnWrites int     `json:"churnWrites"`
	CPUShare    float64 `json:"cpuShare"`
	// RestartSeconds: h2's slimd stopped and started again, until it
	// knows every host and has programmed every peer.
	RestartSeconds float64 `json:"restartSeconds"`
}
