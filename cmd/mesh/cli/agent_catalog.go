package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/meshgit/mesh/catalog"
)

// DefaultAgentListen is where `mesh agent` serves Consul's agent endpoints.
const DefaultAgentListen = "127.0.0.1:8501"

// DefaultAgentData is where `mesh agent` keeps the registrations made through its API when it
// has neither --data nor --dir.
const DefaultAgentData = "mesh-agent-data"

type catalogAgentOptions struct {
	listen, node, advertise, configDir, data string
	sync                                     time.Duration
	checkAllow                               []string
}

// dataDir is --data, else DIR/catalog beside the certificates of --dir, else DefaultAgentData.
func (o *catalogAgentOptions) dataDir(certDir string) string {
	switch {
	case o.data != "":
		return o.data
	case certDir != "":
		return filepath.Join(certDir, "catalog")
	}
	return DefaultAgentData
}

func (o *catalogAgentOptions) addFlags(f *pflag.FlagSet) {
	host, _ := os.Hostname()
	f.StringVar(&o.listen, "listen", DefaultAgentListen, "address of the agent's own API (Consul's agent endpoints)")
	f.StringVar(&o.node, "node", host, "this node's name in the catalog")
	f.StringVar(&o.advertise, "advertise", "127.0.0.1", "this node's IP address: the address of instances registered without one")
	f.StringVar(&o.configDir, "config-dir", "", "directory of service definitions (*.json) registered at start")
	f.StringVar(&o.data, "data", "", "directory keeping the instances registered through the agent's API across restarts (created 0700; default: DIR/catalog with --dir, else ./"+DefaultAgentData+")")
	f.DurationVar(&o.sync, "sync-interval", 10*time.Second, "how often the agent syncs its instances to the servers")
	addCheckAllowFlag(f, &o.checkAllow)
}

// addCheckAllowFlag adds --check-allow, whose default is $MESH_CHECK_ALLOW.
func addCheckAllowFlag(f *pflag.FlagSet, v *[]string) {
	var def []string
	if env := os.Getenv("MESH_CHECK_ALLOW"); env != "" {
		def = strings.Split(env, ",")
	}
	f.StringSliceVar(v, "check-allow", def, "networks (CIDR) health checks may connect to; a check of any other address is critical without a packet sent (repeatable or comma-separated; default $MESH_CHECK_ALLOW, else any)")
}

// runCatalogAgent serves the agent endpoints on o.listen and runs the node's agent until ctx
// ends or also (the certificate agent, if any) fails.
func runCatalogAgent(ctx context.Context, o catalogAgentOptions, server string, hc *http.Client, token string, log *slog.Logger, also func(context.Context) error) error {
	if net.ParseIP(o.advertise) == nil {
		return usageError{fmt.Errorf("agent: --advertise %q is not an IP address", o.advertise)}
	}
	if o.node == "" || o.sync <= 0 {
		return usageError{errors.New("agent: --node and a positive --sync-interval are required")}
	}
	var defs []*catalog.Instance
	if o.configDir != "" {
		var err error
		if defs, err = catalog.LoadConfigDir(o.configDir); err != nil {
			return usageError{fmt.Errorf("agent: --config-dir: %w", err)}
		}
	}
	allow, err := catalog.ParseAllow(o.checkAllow)
	if err != nil {
		return usageError{fmt.Errorf("agent: --check-allow: %w", err)}
	}
	u, err := url.Parse(server)
	if err != nil {
		return usageError{fmt.Errorf("agent: --http: %v", err)}
	}
	agent := catalog.NewAgent(catalog.AgentConfig{Node: o.node, Address: o.advertise, SyncInterval: o.sync, Token: token,
		Submit: catalog.HTTPSubmitter(server, hc), DefaultCheck: catalog.HTTPDefaults(server, hc), Log: log, DataDir: o.data,
		Prober: catalog.Prober{Allow: allow}})
	defer agent.Close()
	// Before the API serves and the first sync: the restored instances are kept on the servers.
	if err := agent.Restore(ctx); err != nil {
		return fmt.Errorf("agent: --data: %w", err)
	}
	mux := http.NewServeMux()
	(&catalog.API{Agent: agent, Log: log}).Register(mux)
	proxy := httputil.NewSingleHostReverseProxy(u) // catalog and health reads go to the server
	proxy.Transport = hc.Transport
	mux.Handle("/v1/", proxy)
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("agent: --listen: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	log.Info("mesh agent started", "node", o.node, "listen", ln.Addr().String(), "server", server, "definitions", len(defs))

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1+len(defs))
	go func() { agent.Run(ctx) }()
	for _, in := range defs {
		go func() {
			if err := agent.RegisterRetrying(ctx, token, in); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("agent: register %s from --config-dir: %w", in.ID, err)
			}
		}()
	}
	if also != nil {
		go func() { errc <- also(ctx) }()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if err != nil && strings.Contains(err.Error(), "context canceled") {
			return nil
		}
		return err
	}
}
