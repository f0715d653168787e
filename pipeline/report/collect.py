"""What the report's figures and tables read, gathered once from manifest.json: one entry per ONNX
model (its metadata and its bench results), each model's parent (the model it was made from), the
chains of hops from a root model to each final one, and the run's last model."""

from __future__ import annotations

# The budgets a verdict judges, in report order, with the name the report gives each.
BUDGETS = {
    "latency_p90_ms": "latency p90",
    "peak_rss_mb": "peak RSS",
    "model_bytes": "bytes",
    "energy_mj_per_inference": "energy / inference",
}
# Stages that change the Paddle model their `model:` names (distill starts from its `teacher:`).
CHANGES_MODEL = {"prune", "lowrank", "qat"}


def onnx_models(manifest: dict) -> list[dict]:
    """Every ONNX artifact in stage order, with its bench results (None when not benchmarked)."""
    stages = manifest["stages"]
    bench = {}
    for s in stages.values():
        if s["type"] == "bench":
            bench.update(s["metrics"]["models"])
    out = []
    for stage_name, s in stages.items():
        for name, art in s.get("artifacts", {}).items():
            if art["kind"] != "onnx":
                continue
            m = art["meta"]
            out.append(
                {
                    "name": name,
                    "stage": stage_name,
                    "stage_type": s["type"],
                    "label": f"{m.get('label', name)} {m.get('precision', '')}".strip(),
                    "short": name.removesuffix(".onnx"),
                    "precision": m.get("precision"),
                    "accuracy": m.get("accuracy"),
                    "metric": m.get("metric"),  # a task's (mAP@[.5:.95], …); None: top-1 accuracy
                    "fidelity": m.get("fidelity"),
                    "params": m.get("params"),
                    "macs": m.get("macs"),
                    "bytes": m.get("bytes"),
                    "deflated_bytes": m.get("deflated_bytes"),
                    "source": m.get("source"),
                    "bench": bench.get(name),
                    "p50_ms": ((bench.get(name) or {}).get("latency") or {}).get("p50_ms"),
                }
            )
    return out


def parents(manifest: dict, models: list[dict]) -> dict[str, str | None]:
    """{ONNX name: the ONNX name of the model it was made from, or None for a root}.

    A Paddle model's parent is its stage's input (a distilled student's is the teacher, a
    from-scratch baseline has none); an exported file's parent is the export of its Paddle model's
    parent; a quantized file's parent is the float file it was quantized from."""
    stages = manifest["stages"]
    made_by = {a: s for s in stages.values() for a in s.get("artifacts", {})}
    exported = {m["source"]: m["name"] for m in models if m["stage_type"] == "export" and m["source"]}

    def paddle_parent(name: str | None) -> str | None:
        s = made_by.get(name)
        if s is None:
            return None
        c = s["config"]
        if s["type"] == "distill":
            ref = None if name == c.get("baseline") else c.get("teacher")
        elif s["type"] in CHANGES_MODEL:
            ref = c.get("model")
        else:
            ref = None
        return ref if isinstance(ref, str) and ref in made_by else None

    out = {}
    for m in models:
        if m["stage_type"] == "export":
            out[m["name"]] = exported.get(paddle_parent(m["source"]))
            continue
        ref = stages[m["stage"]]["config"].get("model")
        if not isinstance(ref, str):
            out[m["name"]] = None
        elif ref.endswith(".onnx"):
            out[m["name"]] = ref if any(x["name"] == ref for x in models) else None
        else:
            out[m["name"]] = exported.get(ref)
    return out


def last_model(models: list[dict]) -> str | None:
    """The model the run ends with: the last ONNX file of the last stage that wrote one."""
    return models[-1]["name"] if models else None


def chains(models: list[dict], parent: dict[str, str | None]) -> list[list[str]]:
    """Root → … → leaf for every leaf reached through at least one hop, the run's last model first."""
    used = {p for p in parent.values() if p}
    leaves = [m["name"] for m in models if m["name"] not in used]
    last = last_model(models)
    leaves.sort(key=lambda n: n != last)
    out = []
    for leaf in leaves:
        chain, seen = [leaf], {leaf}
        while parent.get(chain[0]) and parent[chain[0]] not in seen:
            seen.add(parent[chain[0]])
            chain.insert(0, parent[chain[0]])
        if len(chain) > 1:
            out.append(chain)
    return out


def model_chains(manifest: dict) -> list[list[dict]]:
    """Every chain of hops (root first) of the run's ONNX models, as their entries, the last model's first."""
    models = onnx_models(manifest)
    by_name = {m["name"]: m for m in models}
    return [[by_name[n] for n in chain] for chain in chains(models, parents(manifest, models))]
