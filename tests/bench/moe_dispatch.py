"""The per-layer dispatch overhead of MoE experts in tandemd, from a task
trace (tandemctl trace -o FILE) of examples/llm_layer's guarded steps (one
router and its experts per graph). Run by tests/bench/moe_layer.sh.

Prints, per path, the median and the 90th percentile over the trace's steps:
  BENCH moe_dispatch_overhead_us <us> us stat=median|p90 mode=M path=P n=N
where, with times as the daemon's workers stamp a task's start and end:
  same_worker   from the topk_router task's end to the start of a routed
                expert on the worker that ran the router;
  other_worker  from the router's end to the start of a routed expert on
                another worker that was running nothing at the router's end;
  merge         from the last routed expert's end to the start of the first
                task after the expert group (the TDM_ACC sum, then release).
Skipped experts (no token chose them: start = end in the trace) are not
counted. Usage: python3 moe_dispatch.py MODE TRACE
"""
import json
import sys


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def graphs_of(path):
    graphs, cur = [], None
    with open(path) as f:
        for line in f:
            d = json.loads(line)
            if "graph" in d and "tasks" in d:
                cur = []
                graphs.append(cur)
            elif "task" in d and cur is not None:
                cur.append(d)
    return graphs


def main():
    mode, trace = sys.argv[1], sys.argv[2]
    paths = {"same_worker": [], "other_worker": [], "merge": []}
    for g in graphs_of(trace):
        routers = [t for t in g if t["kernel"] == "topk_router"]
        experts = [t for t in g if t["kernel"] == "moe_expert"]
        ran = [t for t in experts if t["end_ns"] > t["start_ns"]]
        if len(routers) != 1 or not ran:
            continue
        r = routers[0]
        for e in ran:
            if e["device"] == r["device"]:
                paths["same_worker"].append(e["start_ns"] - r["end_ns"])
            elif not any(t is not e and t["device"] == e["device"]
                         and t["start_ns"] < r["end_ns"] < t["end_ns"] for t in g):
                paths["other_worker"].append(e["start_ns"] - r["end_ns"])
        ids = {t["task"] for t in experts}
        after = [t for t in g if ids & set(t.get("after", []))]
        if after:
            paths["merge"].append(min(t["start_ns"] for t in after) -
                                  max(e["end_ns"] for e in ran))
    if not any(paths.values()):
        print("moe_dispatch.py: no routed expert in %s" % trace, file=sys.stderr)
        return 1
    for path, v in paths.items():
        for stat, q in (("median", 0.5), ("p90", 0.9)):
            if v:
                print("BENCH moe_dispatch_overhead_us %.1f us stat=%s mode=%s path=%s n=%d" %
                      (pct(v, q) / 1e3, stat, mode, path, len(v)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
