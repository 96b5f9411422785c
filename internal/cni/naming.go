package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
)

// hostVethPrefix starts every host veth slim-cni creates.
const hostVethPrefix = "slim"

// hostVethHexLen is how many hex digits of the hash follow the prefix:
// 4 + 11 = 15, the longest interface name the kernel takes.
const hostVethHexLen = 11

var hostVethRe = regexp.MustCompile(`^` + hostVethPrefix + `[0-9a-f]{11}$`)

// hostVethName is the host end's name for one attachment. It is derived
// from the attachment alone, so DEL and GC find the veth without the
// container's namespace or any saved state.
func hostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return hostVethPrefix + hex.EncodeToString(sum[:])[:hostVethHexLen]
}

// isHostVethName reports whether name follows hostVethName's scheme.
func isHostVethName(name string) bool { return hostVethRe.MatchString(name) }
