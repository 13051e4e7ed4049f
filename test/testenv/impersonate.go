package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ServiceAccountUser returns the user name a ServiceAccount's requests carry.
func ServiceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// ImpersonatingKubeconfig writes a kubeconfig that authenticates as the control plane's admin and acts as
// user (the kubeconfig's `as`), and returns its path. Every request made with it is authorized as user
// alone, so a process run with it has exactly user's permissions. For a ServiceAccount's user name the API
// server adds the ServiceAccount's groups itself.
func (cp *ControlPlane) ImpersonatingKubeconfig(user string) (string, error) {
	kc, err := clientcmd.LoadFromFile(cp.Kubeconfig)
	if err != nil {
		return "", fmt.Errorf("load admin kubeconfig: %w", err)
	}
	for _, auth := range kc.AuthInfos {
		auth.Impersonate = user
	}
	path := filepath.Join(cp.Dir, "kubeconfig-as-"+strings.NewReplacer(":", "_", "/", "_").Replace(user))
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return "", fmt.Errorf("write kubeconfig for %q: %w", user, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return "", fmt.Errorf("restrict kubeconfig for %q: %w", user, err)
	}
	return path, nil
}

// ImpersonatingConfig returns a copy of the admin client configuration that acts as user.
func (cp *ControlPlane) ImpersonatingConfig(user string) *rest.Config {
	cfg := rest.CopyConfig(cp.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	return cfg
}
