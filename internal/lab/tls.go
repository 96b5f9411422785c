package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/slimnet/slim/internal/pki"
)

// rootUser is etcd's administrator: the lab, never a slimd, uses its
// certificate to set up role-based access.
const rootUser = "root"

func pkiDir(dir string) string { return filepath.Join(dir, "pki") }

// certFiles are the CA and the key pair of name (a host, or rootUser).
func certFiles(dir, name string) pki.Files {
	d := pkiDir(dir)
	return pki.Files{CACert: filepath.Join(d, "ca.pem"), Cert: filepath.Join(d, name+".pem"), Key: filepath.Join(d, name+"-key.pem")}
}

// ensurePKI makes the lab's CA and every certificate at once, unless an
// earlier Up did: the CA's key is never written down, so the set is
// complete or made again from scratch.
func ensurePKI(dir string, p plan) error {
	names := []string{rootUser}
	for i := 1; i <= p.Hosts; i++ {
		names = append(names, HostName(i))
	}
	complete := true
	for _, n := range names {
		f := certFiles(dir, n)
		for _, path := range []string{f.CACert, f.Cert, f.Key} {
			if _, err := os.Stat(path); err != nil {
				complete = false
			}
		}
	}
	if complete {
		return nil
	}
	if err := os.RemoveAll(pkiDir(dir)); err != nil {
		return err
	}
	ca, err := pki.NewCA("slimlab")
	if err != nil {
		return err
	}
	loopback := netip.MustParseAddr("127.0.0.1")
	var errs []error
	for i, n := range names {
		ips := []netip.Addr{loopback}
		if i > 0 {
			ip, err := hostIP(p.Underlay, i)
			if err != nil {
				return err
			}
			ips = append(ips, ip)
		}
		if _, err := ca.Write(pkiDir(dir), n, ips, nil); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n, err))
		}
	}
	return errors.Join(errs...)
}
