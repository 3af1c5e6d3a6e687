"""credhop's own view of the run: `credhop report --format json` over a configuration's hop logs (every
instance's, merged into chains), tallied by the kind of client each chain belongs to. A denied client's
chain and a missing one's must fail with CH102 (credential rejected: "a 404 can mean either"), an ok
client's must end ok: the report then explains every failed install the way an operator
would read it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from scripts.fleet.population import Client
from tests.e2e.harness import clean_env

REPO = Path(__file__).resolve().parents[2]
# credhop reads a 404 after an injected credential as a refusal too (registries like CodeArtifact answer
# 404 for a credential they do not take): CH102 for both failing kinds
EXPECTED = {"ok": ("ok", None), "denied": ("failed", "CH102"), "missing": ("failed", "CH102")}


def credhop_report(hoplogs: list[Path], clients: list[Client], workdir: Path) -> dict:
    logs = [str(p) for p in hoplogs if p.exists()]
    proc = subprocess.run([sys.executable, "-m", "credhop", "report", "--format", "json",
                           "--max-input-mb", "1024", *logs], capture_output=True, text=True, cwd=workdir,
                          env={**clean_env(workdir / "report-home"), "PYTHONPATH": str(REPO / "addons")})
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"error": f"credhop report exited {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    kind_of = {f"user:{c.proxy_user}": c.kind for c in clients}
    tally: dict[str, Counter] = {}
    unexplained = Counter()
    for chain in doc["chains"]:
        kind = kind_of.get(chain["client"])
        if kind is None:  # the warm-up's clients
            continue
        top = chain["findings"][0]["code"] if chain["findings"] and chain["verdict"] != "ok" else None
        tally.setdefault(kind, Counter())[f"{chain['verdict']} {top}" if top else chain["verdict"]] += 1
        verdict, code = EXPECTED[kind]
        if chain["verdict"] != verdict or (code and top != code):
            # the 3xx's own hop says when credhop did not inject (its reason: the store did not answer, …)
            first = chain["hops"][0] if chain["hops"] else {}
            why = f" (3xx: {first['action']}, {first['reason']})" if first.get("reason") else ""
            unexplained[f"{kind} client: {chain['verdict']} {top or ''}".strip() + why] += 1
    return {"chains": sum(sum(t.values()) for t in tally.values()),
            "by_kind": {k: dict(v) for k, v in tally.items()}, "unexplained": dict(unexplained),
            "summary": doc["summary"]}
