package natsconn_test

import (
	"os"
	"path/filepath"
)

func removeContext(configDir, name string) error {
	return os.Remove(filepath.Join(configDir, "nats", "context", name+".json"))
}
