// Package pki makes throwaway certificate authorities and the certificates
// they sign: what the lab and the tests need to run etcd with mutual TLS.
// Production clusters bring their own PKI (cert-manager, etcd's own
// tooling, a vault); nothing in slimd depends on this package.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/slimnet/slim/internal/atomicfile"
)

// validity of everything issued here: long enough for any lab, short
// enough that a leaked lab key is worthless soon.
const validity = 30 * 24 * time.Hour

// CA is a certificate authority held in memory.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// PEM is the CA certificate, what peers trust.
	PEM []byte
}

// NewCA makes a self-signed CA named name.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Pair is a certificate and its private key, PEM encoded.
type Pair struct {
	Cert, Key []byte
}

// Issue signs a certificate for cn that serves TLS on ips and names and
// authenticates as a client with cn as its name (etcd maps a client
// certificate's common name to a user).
func (ca *CA) Issue(cn string, ips []netip.Addr, names []string) (Pair, error) {
	if cn == "" {
		return Pair{}, errors.New("certificate needs a common name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     names,
	}
	for _, a := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(a.AsSlice()))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return Pair{}, err
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Pair{}, err
	}
	return Pair{
		Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		Key:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}),
	}, nil
}

// Files names a trust anchor and a key pair on disk, as etcd's flags do.
type Files struct {
	CACert, Cert, Key string
}

// Write issues a pair for cn and writes it with the CA certificate into
// dir as ca.pem, <cn>.pem and <cn>-key.pem (keys 0600).
func (ca *CA) Write(dir, cn string, ips []netip.Addr, names []string) (Files, error) {
	p, err := ca.Issue(cn, ips, names)
	if err != nil {
		return Files{}, err
	}
	f := Files{
		CACert: filepath.Join(dir, "ca.pem"),
		Cert:   filepath.Join(dir, cn+".pem"),
		Key:    filepath.Join(dir, cn+"-key.pem"),
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Files{}, err
	}
	for _, w := range []struct {
		path string
		b    []byte
		mode os.FileMode
	}{{f.CACert, ca.PEM, 0o644}, {f.Cert, p.Cert, 0o644}, {f.Key, p.Key, 0o600}} {
		if err := atomicfile.Write(w.path, w.b, w.mode); err != nil {
			return Files{}, err
		}
	}
	return f, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}
