package xds

import (
	"fmt"
	"strings"
	"testing"
)

func TestSecrets(t *testing.T) {
	if s := secrets(nil); len(s) != 0 {
		t.Fatalf("no material rendered %d secrets", len(s))
	}
	m := &tlsMaterial{CertChainPEM: []byte("CERT"), PrivateKeyPEM: []byte("-----BEGIN PRIVATE KEY-----"), RootsPEM: []byte("ROOTS")}
	got := secrets(m)
	if len(got) != 2 || got[0].Name != SecretLeaf || got[1].Name != SecretRoots {
		t.Fatalf("secrets %v", got)
	}
	for _, s := range got {
		if err := s.ValidateAll(); err != nil {
			t.Fatal(err)
		}
	}
	if strings.Contains(fmt.Sprint(m), "PRIVATE") || strings.Contains(fmt.Sprintf("%v", m), "PRIVATE") {
		t.Fatal("material prints its key")
	}
}
