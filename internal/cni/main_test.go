package cni

import (
	"context"
	"os"
	"testing"
)

// execPluginEnv makes the test binary act as the slim-cni binary, so that
// tests can run the whole plugin (skel's dispatch, stdout, exit code) the
// way a runtime does, without building anything.
const execPluginEnv = "SLIM_CNI_TEST_EXEC_PLUGIN"

func TestMain(m *testing.M) {
	if os.Getenv(execPluginEnv) == "1" {
		if err := Run(context.Background(), Config{Stderr: os.Stderr, Version: "test"}); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}
