package store

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Role is the etcd role that GrantPrefix gives slimds: read and write
// under the store's prefix, nothing else.
const Role = "slim"

// GrantPrefix sets up etcd's role-based access for Slim and enables it:
// role Role may read and write under prefix, each of hosts is a user
// holding only that role, and user "root" (needed to enable
// authentication) holds etcd's root role. Users have no password: with
// client certificate authentication etcd takes the certificate's common
// name as the user. It is what an operator does with etcdctl
// (docs/security.md); the lab's TLS mode and the tests use it. Running it
// again adds missing users and changes nothing else.
func GrantPrefix(ctx context.Context, cli *clientv3.Client, prefix string, hosts []string) error {
	prefix = New(cli, prefix).prefix + "/"
	exists := func(err error, already error) error {
		if errors.Is(err, already) {
			return nil
		}
		return err
	}
	if err := exists(addUser(ctx, cli, "root"), rpctypes.ErrUserAlreadyExist); err != nil {
		return fmt.Errorf("etcd user root: %w", err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		return fmt.Errorf("etcd user root: %w", err)
	}
	if _, err := cli.RoleAdd(ctx, Role); exists(err, rpctypes.ErrRoleAlreadyExist) != nil {
		return fmt.Errorf("etcd role %s: %w", Role, err)
	}
	if _, err := cli.RoleGrantPermission(ctx, Role, prefix, clientv3.GetPrefixRangeEnd(prefix),
		clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
		return fmt.Errorf("etcd role %s: %w", Role, err)
	}
	for _, h := range hosts {
		if err := exists(addUser(ctx, cli, h), rpctypes.ErrUserAlreadyExist); err != nil {
			return fmt.Errorf("etcd user %s: %w", h, err)
		}
		if _, err := cli.UserGrantRole(ctx, h, Role); err != nil {
			return fmt.Errorf("etcd user %s: %w", h, err)
		}
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("enable etcd authentication: %w", err)
	}
	return nil
}

func addUser(ctx context.Context, cli *clientv3.Client, name string) error {
	_, err := cli.UserAddWithOptions(ctx, name, "", &clientv3.UserAddOptions{NoPassword: true})
	return err
}
