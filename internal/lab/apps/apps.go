// Package apps prepares the real programs that the lab's tests and the
// benchmark run in lab containers, nginx and PostgreSQL, so that both run
// them the same way: every file they write under one directory of ours
// (Debian's defaults under /var may not exist, and labs must not share
// them), servers reachable only from the lab's namespaces.
package apps

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Nginx is an nginx serving the files of Root on Listen, with its
// configuration, pid file, logs and temporary files under Prefix.
type Nginx struct {
	Prefix string
	Listen string // nginx's listen argument: a port or address:port
	Root   string
	// Master runs nginx as it usually runs, a master and one worker that
	// inherits the listener; without it, one process serves (less noise
	// in a benchmark).
	Master bool
	// Comment is the configuration's first line, for a reader.
	Comment string
}

// Config is the nginx.conf text.
func (n Nginx) Config() string {
	master := "on"
	if !n.Master {
		master = "off"
	}
	return fmt.Sprintf(`# %[1]s
daemon off;
master_process %[2]s;
worker_processes 1;
worker_rlimit_nofile 16384;
error_log %[3]s/logs/error.log warn;
pid %[3]s/nginx.pid;
events {
	worker_connections 8192;
}
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	keepalive_requests 1000000;
	client_body_temp_path %[3]s/body;
	proxy_temp_path %[3]s/proxy;
	fastcgi_temp_path %[3]s/fastcgi;
	uwsgi_temp_path %[3]s/uwsgi;
	scgi_temp_path %[3]s/scgi;
	server {
		listen %[4]s;
		root %[5]s;
	}
}
`, n.Comment, master, n.Prefix, n.Listen, n.Root)
}

// Write creates Prefix and its logs directory and writes nginx.conf.
func (n Nginx) Write() error {
	if err := os.MkdirAll(filepath.Join(n.Prefix, "logs"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(n.Prefix, "nginx.conf"), []byte(n.Config()), 0o644)
}

// Command is the command line that runs this nginx in the foreground.
func (n Nginx) Command() []string {
	return []string{"nginx", "-p", n.Prefix + "/", "-e", filepath.Join(n.Prefix, "logs", "error.log"),
		"-c", filepath.Join(n.Prefix, "nginx.conf")}
}

// PostgresBinDir finds PostgreSQL's server binaries: Debian keeps them in
// /usr/lib/postgresql/<version>/bin, out of PATH (the newest version is
// taken); elsewhere they are in PATH.
func PostgresBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	if p, err := exec.LookPath("postgres"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	for _, d := range dirs {
		if isExecutable(filepath.Join(d, "postgres")) && isExecutable(filepath.Join(d, "initdb")) {
			return d, nil
		}
	}
	return "", errors.New("postgres and initdb not found (Debian package postgresql)")
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// AsPostgres runs command as the postgres user (setpriv keeps the
// namespace and cgroup the launcher put us in).
func AsPostgres(command ...string) []string {
	return append([]string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"}, command...)
}

// InitPostgres makes the PostgreSQL data directory dir with bin's initdb,
// run through run (a lab container's, so that it runs as a lab process),
// and lets any client in without a password: only the lab's namespaces
// can reach the server.
func InitPostgres(dir, bin string, run func(command ...string) ([]byte, error)) error {
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("%w (Debian package postgresql)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return err
	}
	out, err := run(AsPostgres(filepath.Join(bin, "initdb"), "-D", dir, "-U", "postgres",
		"--auth=trust", "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C")...)
	if err != nil {
		return fmt.Errorf("initdb: %w (%s)", err, strings.TrimSpace(string(out)))
	}
	hba := filepath.Join(dir, "pg_hba.conf")
	if err := os.WriteFile(hba, []byte("local all all trust\nhost all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n"), 0o600); err != nil {
		return err
	}
	return os.Chown(hba, uid, gid)
}
