package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// WriteConfigMapVolume writes file with data into dir the way the kubelet's atomic writer updates a
// ConfigMap volume: the data goes into a new timestamped directory, a "..data_tmp" symlink to it is renamed
// over "..data" in one step, and dir/file is a symlink to "..data/file" that never changes. A reader sees
// the old file or the new one, never a mix, and a watch on dir/file itself sees nothing.
func WriteConfigMapVolume(dir, file string, data []byte) error {
	version := filepath.Join(dir, ".."+time.Now().UTC().Format("2006_01_02_15_04_05.000000000"))
	if err := os.Mkdir(version, 0o755); err != nil {
		return fmt.Errorf("create config version directory: %w", err)
	}
	if err := os.WriteFile(filepath.Join(version, file), data, 0o644); err != nil {
		return fmt.Errorf("write config file: %w", err)
	}
	dataLink := filepath.Join(dir, "..data")
	old, _ := os.Readlink(dataLink)
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(version), tmp); err != nil {
		return fmt.Errorf("link new config version: %w", err)
	}
	if err := os.Rename(tmp, dataLink); err != nil {
		return fmt.Errorf("swap config version: %w", err)
	}
	link := filepath.Join(dir, file)
	if _, err := os.Lstat(link); os.IsNotExist(err) {
		if err := os.Symlink(filepath.Join("..data", file), link); err != nil {
			return fmt.Errorf("link config file: %w", err)
		}
	}
	if old != "" {
		_ = os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}
