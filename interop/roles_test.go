package interop

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgit/mesh/cmd/mesh/cli"

	"github.com/meshgit/mesh/internal/xdsserve"
)

// roleEnv names the role a child process of the test binary plays: "mesh" (the mesh command),
// "go-server" or "go-client" (grpc-go's side of the interop programs, which speak what
// python/ and node/ speak).
const roleEnv = "MESH_INTEROP_ROLE"

func runRole(role string, args []string) int {
	switch role {
	case "mesh":
		os.Args = append([]string{"mesh"}, args...)
		return cli.Main()
	case "go-server":
		return goServer(args)
	case "go-client":
		return goClient()
	}
	fmt.Fprintf(os.Stderr, "unknown %s %q\n", roleEnv, role)
	return 2
}

// reply is what every interop server answers, as JSON in a StringValue.
type reply struct {
	Server string   `json:"server"`
	Impl   string   `json:"impl"`
	Method string   `json:"method"`
	Peer   []string `json:"peer"`
}

// goServer is grpc-go's interop server: an xDS server on --listen answering every method.
func goServer(args []string) int {
	fs := flag.NewFlagSet("go-server", flag.ContinueOnError)
	listen := fs.String("listen", "", "address to listen on")
	name := fs.String("name", "", "the name the server answers with")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	answer := func(_ any, stream grpc.ServerStream) error {
		if err := stream.RecvMsg(&wrapperspb.StringValue{}); err != nil {
			return err
		}
		method, _ := grpc.MethodFromServerStream(stream)
		r := reply{Server: *name, Impl: "grpc-go", Method: method, Peer: []string{}}
		if p, ok := peer.FromContext(stream.Context()); ok {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
				for _, u := range ti.State.PeerCertificates[0].URIs {
					r.Peer = append(r.Peer, u.String())
				}
			}
		}
		b, _ := json.Marshal(r)
		return stream.SendMsg(wrapperspb.String(string(b)))
	}
	if err := xdsserve.Run(*listen, answer, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// request and result are the lines the interop clients read and print (see python/client.py).
type request struct {
	ID        string            `json:"id"`
	Target    string            `json:"target"`
	Method    string            `json:"method"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	Count     int               `json:"count"`
	TimeoutMS int               `json:"timeout_ms"`
}

type result struct {
	ID      string `json:"id"`
	Ready   bool   `json:"ready,omitempty"`
	Done    bool   `json:"done,omitempty"`
	Code    int    `json:"code"`
	Status  string `json:"status"`
	Details string `json:"details"`
	Reply   string `json:"reply,omitempty"`
}

// goClient is grpc-go's interop client: requests on stdin, one result line per call.
func goClient() int {
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var mu sync.Mutex
	conns := map[string]*grpc.ClientConn{}
	out := json.NewEncoder(os.Stdout)
	out.Encode(result{Ready: true})
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var req request
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		mu.Lock()
		cc := conns[req.Target]
		if cc == nil {
			if cc, err = grpc.NewClient("xds:///"+req.Target, grpc.WithTransportCredentials(creds)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			conns[req.Target] = cc
		}
		mu.Unlock()
		for range max(req.Count, 1) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(max(req.TimeoutMS, 1))*time.Millisecond)
			ctx = metadata.NewOutgoingContext(ctx, metadata.New(req.Metadata))
			var rep wrapperspb.StringValue
			err := cc.Invoke(ctx, req.Method, wrapperspb.String("hi"), &rep, grpc.WaitForReady(true))
			cancel()
			st := status.Convert(err)
			r := result{ID: req.ID, Code: int(st.Code()), Status: st.Code().String(), Details: st.Message()}
			if st.Code() == codes.OK {
				r.Status, r.Reply = "OK", rep.GetValue()
			}
			out.Encode(r)
		}
		out.Encode(result{ID: req.ID, Done: true})
	}
	return 0
}
