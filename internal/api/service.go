package api

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

// ServiceInfo is a service as slimctl service ls shows it.
type ServiceInfo struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	ClusterIP netip.Addr        `json:"clusterIP"`
	Ports     []ServicePortInfo `json:"ports"`
}

// ServicePortInfo is one port of a service: its backends (endpoints the
// selector matches) and how many of them have a published listener on
// the target port (the fast path's backends).
type ServicePortInfo struct {
	Name       string `json:"name,omitempty"`
	Port       uint16 `json:"port"`
	Protocol   string `json:"protocol"`
	TargetPort string `json:"targetPort"`
	Backends   int    `json:"backends"`
	Listening  int    `json:"listening"`
}

// Services is a list of services (v1), as applied.
type Services struct {
	Services []corev1.Service `json:"services"`
}
