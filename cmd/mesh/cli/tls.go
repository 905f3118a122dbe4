package cli

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshgit/mesh/ca"
	"github.com/meshgit/mesh/internal/tlsutil"
)

func init() { register(newTLSCmd) }

// The file names of mesh tls, in --dir.
const (
	tlsCAFile    = "mesh-ca.pem"
	tlsCAKeyFile = "mesh-ca-key.pem"
)

func newTLSCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tls",
		Short: "Make the CA and certificates of the servers' own channels (Raft, HTTP API), like consul tls",
		Long: `The servers talk to each other (Raft) and to clients (HTTP API) over TLS with certificates
of a CA of their own, distinct from the mesh CA that signs the services' identities:

  mesh tls ca create                               # mesh-ca.pem, mesh-ca-key.pem
  mesh tls cert create --server --node server-1    # server-server-1.pem, server-server-1-key.pem
  mesh tls cert create --client --name ops         # client-ops.pem, client-ops-key.pem
  mesh serve --tls-cert-file server-server-1.pem --tls-key-file server-server-1-key.pem \
    --tls-ca-file mesh-ca.pem ...
  mesh status --http https://10.0.0.1:8500 --ca-file mesh-ca.pem

Raft accepts only server certificates (they name ` + tlsutil.ServerName + `): a client certificate of the
same CA cannot act as a server. Keep mesh-ca-key.pem offline; copy each server its own files.`,
	}
	caCmd := &cobra.Command{Use: "ca", Short: "Manage the servers' CA",
		Example: `  mesh tls ca create --dir /etc/mesh/tls`}
	caCmd.AddCommand(newTLSCACreateCmd())
	certCmd := &cobra.Command{Use: "cert", Short: "Manage server and client certificates",
		Example: `  mesh tls cert create --server --node s1 --dir /etc/mesh/tls --additional-ipaddress 10.0.0.1
  mesh tls cert create --client --name ops --dir /etc/mesh/tls`}
	certCmd.AddCommand(newTLSCertCreateCmd())
	cmd.AddCommand(caCmd, certCmd)
	return cmd
}

func newTLSCACreateCmd() *cobra.Command {
	var dir string
	var days int
	cmd := &cobra.Command{
		Use:   "create [--dir D] [--days N]",
		Short: "Create the servers' CA: D/mesh-ca.pem and D/mesh-ca-key.pem (0600)",
		Example: `  mesh tls ca create --dir /etc/mesh/tls
  mesh tls ca create --dir /etc/mesh/tls --days 3650`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if days <= 0 {
				return usageError{fmt.Errorf("tls ca create: --days must be positive")}
			}
			cert, key, err := tlsutil.NewCA(days, time.Now())
			if err != nil {
				return fmt.Errorf("tls ca create: %w", err)
			}
			return saveTLSFiles(cmd, dir, tlsCAFile, cert, tlsCAKeyFile, key)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".", "directory to write the files to")
	cmd.Flags().IntVar(&days, "days", 1825, "days the CA is valid")
	return cmd
}

func newTLSCertCreateCmd() *cobra.Command {
	var (
		server, client  bool
		node, name, dir string
		caFile, keyFile string
		days            int
		ips, dnsNames   []string
	)
	cmd := &cobra.Command{
		Use:   "create (--server --node ID | --client --name N) [--dir D] [--days N]",
		Short: "Create a certificate signed by the servers' CA: D/server-ID.pem or D/client-N.pem, and its key (0600)",
		Long: `Create makes a certificate and its key, signed by --ca and --key (default: D/mesh-ca.pem and
D/mesh-ca-key.pem). A server certificate (--server --node ID) names ` + tlsutil.ServerName + `, localhost,
127.0.0.1 and ::1, plus --additional-ipaddress and --additional-dnsname: add the addresses the
other servers and the clients use to reach this one. A client certificate (--client --name N)
is for tools that present one; it is never accepted as a server's.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := tlsutil.CertRequest{Server: server, Days: days, DNSNames: dnsNames}
			var prefix string
			switch {
			case server == client:
				return usageError{errors.New("tls cert create: give exactly one of --server and --client")}
			case server && (node == "" || name != ""):
				return usageError{errors.New("tls cert create: --server needs --node ID (and no --name)")}
			case client && (name == "" || node != ""):
				return usageError{errors.New("tls cert create: --client needs --name N (and no --node)")}
			case days <= 0:
				return usageError{errors.New("tls cert create: --days must be positive")}
			case server:
				req.Name, prefix = node, "server-"
			default:
				req.Name, prefix = name, "client-"
			}
			if !ca.ValidName(req.Name) {
				return usageError{fmt.Errorf("tls cert create: %q is not a name (lower-case letters, digits and dashes)", req.Name)}
			}
			for _, s := range ips {
				ip := net.ParseIP(s)
				if ip == nil {
					return usageError{fmt.Errorf("tls cert create: --additional-ipaddress %q is not an IP address", s)}
				}
				req.IPs = append(req.IPs, ip)
			}
			if caFile == "" {
				caFile = filepath.Join(dir, tlsCAFile)
			}
			if keyFile == "" {
				keyFile = filepath.Join(dir, tlsCAKeyFile)
			}
			caPEM, err := os.ReadFile(caFile)
			if err != nil {
				return fmt.Errorf("tls cert create: %w (make the CA with mesh tls ca create)", err)
			}
			caKey, err := os.ReadFile(keyFile)
			if err != nil {
				return fmt.Errorf("tls cert create: %w", err)
			}
			cert, key, err := tlsutil.NewCert(caPEM, caKey, req, time.Now())
			if err != nil {
				return fmt.Errorf("tls cert create: %w", err)
			}
			return saveTLSFiles(cmd, dir, prefix+req.Name+".pem", cert, prefix+req.Name+"-key.pem", key)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&server, "server", false, "a server certificate (Raft and the HTTP API)")
	f.BoolVar(&client, "client", false, "a client certificate")
	f.StringVar(&node, "node", "", "the server's node id (with --server)")
	f.StringVar(&name, "name", "", "the client's name (with --client)")
	f.StringVar(&dir, "dir", ".", "directory of the CA files and of the files written")
	f.StringVar(&caFile, "ca", "", "the CA certificate (default: DIR/"+tlsCAFile+")")
	f.StringVar(&keyFile, "key", "", "the CA key (default: DIR/"+tlsCAKeyFile+")")
	f.IntVar(&days, "days", 365, "days the certificate is valid")
	f.StringSliceVar(&ips, "additional-ipaddress", nil, "another IP address the server is reached at (repeatable)")
	f.StringSliceVar(&dnsNames, "additional-dnsname", nil, "another DNS name the server is reached at (repeatable)")
	return cmd
}

func saveTLSFiles(cmd *cobra.Command, dir, certName string, cert []byte, keyName string, key []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	certFile, keyFile := filepath.Join(dir, certName), filepath.Join(dir, keyName)
	if err := tlsutil.WriteFiles(certFile, cert, keyFile, key); err != nil {
		return fmt.Errorf("tls: %w (not overwritten)", err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "==> saved %s\n==> saved %s\n", certFile, keyFile)
	return nil
}
