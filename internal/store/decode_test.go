package store

import (
	"net/netip"
	"testing"

	"github.com/slimnet/slim/internal/service"
)

// The decoders of what other hosts wrote never panic, and a service they
// accept is one Slim serves, with a cluster IP.
func FuzzDecoders(f *testing.F) {
	f.Add([]byte(`{"namespace":"default","name":"web","spec":{"clusterIP":"10.96.0.1","selector":{"app":"web"},"ports":[{"port":80}]}}`))
	f.Add([]byte(`{"namespace":"x","name":"p","spec":{"podSelector":{},"policyTypes":["Ingress"]}}`))
	f.Add([]byte(`{"host":"h1","containerID":"c","ifName":"eth0","ipv4":"10.244.1.2","portBlocks":[{"start":20480,"size":256}]}`))
	f.Add([]byte(`{"vip":"10.244.1.2","port":80,"host":"h1","hostIP":"192.168.1.1","hostPort":20480}`))
	f.Add([]byte(`{"name":"h1","underlayIP":"192.168.1.1","subnet4":"10.244.1.0/24"}`))
	f.Add([]byte(`{"labels":{"team":"blue"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if svc, err := decodeService(b); err == nil {
			if err := service.Validate(&svc); err != nil {
				t.Fatalf("decoded a service that does not validate: %v", err)
			}
			if _, err := netip.ParseAddr(svc.Spec.ClusterIP); err != nil {
				t.Fatalf("decoded a service without a cluster IP: %q", svc.Spec.ClusterIP)
			}
		}
		decodePolicy(b)
		decodeNamespace(b)
		decodeHost(b)
		decodeEndpoint(b)
		decodeListener(b)
		decodeFastPath(b)
	})
}
