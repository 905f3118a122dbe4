package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/meshgit/mesh/reconciler"
)

// printHealth prints what keeps a server from serving, or from storing what it should: removal
// from the cluster, a Raft peer of another cluster, failing writes to the data directory.
func printHealth(w io.Writer, st *reconciler.Status) {
	if st.NotServing != "" {
		fmt.Fprintf(w, "NOT SERVING xDS: %s\n", st.NotServing)
	}
	if c := st.ClusterConflict; c != nil && time.Since(c.Time) < 5*time.Minute {
		dir := "refused a connection to"
		if c.Incoming {
			dir = "refused a connection from"
		}
		fmt.Fprintf(w, "cluster:  %s %s of another cluster (%s) at %s\n", dir, c.Peer, c.PeerCluster, c.Time.Format(time.RFC3339))
	}
	for _, e := range st.StorageErrors {
		fmt.Fprintf(w, "STORAGE ERROR (%s, since %s): %s\n", e.Op, e.Time.Format(time.RFC3339), e.Error)
	}
}
