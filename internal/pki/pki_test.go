package pki

import (
	"crypto/tls"
	"crypto/x509"
	"net/netip"
	"os"
	"testing"
)

func TestIssueVerifies(t *testing.T) {
	ca, err := NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f, err := ca.Write(dir, "h1", []netip.Addr{netip.MustParseAddr("192.168.77.1")}, []string{"h1.example"})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca.PEM) {
		t.Fatal("CA PEM")
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "192.168.77.1", KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("usage %v: %v", usage, err)
		}
	}
	if cert.Subject.CommonName != "h1" {
		t.Errorf("CN %q", cert.Subject.CommonName)
	}
	if err := cert.VerifyHostname("10.0.0.1"); err == nil {
		t.Error("valid for an address it does not name")
	}
	st, err := os.Stat(f.Key)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v %v", st.Mode(), err)
	}
	other, _ := NewCA("other")
	oroots := x509.NewCertPool()
	oroots.AppendCertsFromPEM(other.PEM)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: oroots}); err == nil {
		t.Error("verified against another CA")
	}
	if _, err := ca.Issue("", nil, nil); err == nil {
		t.Error("issued without a common name")
	}
}
