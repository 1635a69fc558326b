"""A Ray cluster of several nodes on this machine, every service bound to 127.0.0.1: try the cluster path
(`ray job submit`, workers spread over nodes) without a cluster.

    python -m jobs.local_cluster --nodes 2 --dashboard-port 8265      # then, in another terminal:
    RAY_AUTH_MODE=disabled ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.sweep ...

It prints the cluster's address and its job-submission address, then waits; Ctrl-C stops every node.

Why not `ray start --head` and a second `ray start --address` on one machine: Ray 2.60's CLI rewrites a
loopback --node-ip-address to the machine's network address when multi-node clusters are enabled
(`services.resolve_ip_for_localhost`), and refuses a second node when they are not
(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0). `ray.cluster_utils.Cluster`, which Ray's own tests use, starts the
same head and worker raylets with 127.0.0.1 kept. On a real cluster, use `ray start` (README).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from pythia_sweep.commands.cli import parser_for


def main(argv=None) -> int:
    parser = parser_for("jobs.local_cluster", __doc__)
    parser.add_argument("--nodes", type=int, default=2, help="nodes in all, the head included")
    parser.add_argument("--cpus-per-node", type=int, default=1, help="CPU slots per node: one sweep worker each")
    parser.add_argument("--dashboard-port", type=int, default=8265, help="job-submission (dashboard) port")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local, loopback-only cluster: no token to hand out
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep every node on 127.0.0.1
    from ray.cluster_utils import Cluster

    head = {"num_cpus": args.cpus_per_node, "node_ip_address": "127.0.0.1", "include_dashboard": True,
            "dashboard_host": "127.0.0.1", "dashboard_port": args.dashboard_port}  # fmt: skip
    cluster = Cluster(initialize_head=True, head_node_args=head)
    for _ in range(args.nodes - 1):
        cluster.add_node(num_cpus=args.cpus_per_node, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    print(f"cluster: {args.nodes} nodes on 127.0.0.1, {args.cpus_per_node} CPU each", flush=True)
    print(f"address: {cluster.address}", flush=True)
    print(f"jobs: http://127.0.0.1:{args.dashboard_port}", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.shutdown()
        print("cluster stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
