"""The slow-stream scenario's peer: LiteLLM's proxy on the same slow upstream (``--with-litellm``).

``start_litellm`` reuses run.py's LiteLLM setup: its own venv (installed on first use, bounded by
``--litellm-install-timeout``), a config with one model pointing at the slow upstream, one worker,
a master key the clients send, and the environment that keeps it off the network (local cost map,
no telemetry).

``capacity`` reads the windows of a run: per target and round, the largest C of the ladder
(``--streams``, ascending) at which the added inter-chunk gap p99 (target minus direct at the
same C, same run) is within each bound of ``--gap-bounds``.  A target whose added p99 went past
the largest bound at two C in a row is not run at higher C in that round (``stop_climbing``):
more streams only take longer.
"""

from __future__ import annotations

from types import SimpleNamespace

import run as R

LITELLM_PROBE = "/health/liveliness"  # answers without a key and without touching a model


def start_litellm(args, up_port: int, up_proc, tmp) -> R.Server:
    sc = next(s for s in R.SCENARIOS if s.name == "litellm")
    ns = SimpleNamespace(server_loop=args.server_loop, server_cpus=args.server_cpus,
                         litellm_venv=args.litellm_venv, litellm_install_timeout=args.litellm_install_timeout)  # fmt: skip
    return R.start_server(sc, ns, up_port, up_proc, tmp)


def added_rows(raw: list[dict]) -> list[dict]:
    return [r for r in raw if r["target"] == "added"]


def stop_climbing(raw: list[dict], peer: str, rnd: int, bounds: list[float]) -> bool:
    """True once the peer's added gap p99 went past the largest bound at two C in a row in this
    round (one window can be hit by a stall of the machine's other work)."""
    last = [r for r in added_rows(raw) if r["peer"] == peer and r["round"] == rnd][-2:]
    return len(last) == 2 and all((r["transit_added_p99_ms"] or 0) > max(bounds) for r in last)


def capacity(raw: list[dict], bounds: list[float]) -> list[dict]:
    """Per bound, peer and round: the largest C whose added gap p99 is within the bound, and the
    first C past it (a noisy window can put one C past the bound below one within it)."""
    rows = added_rows(raw)
    out = []
    for bound in bounds:
        for peer in dict.fromkeys(r["peer"] for r in rows):
            for rnd in sorted({r["round"] for r in rows}):
                ladder = sorted((r for r in rows if r["peer"] == peer and r["round"] == rnd), key=lambda r: r["c"])
                within = [r for r in ladder if r["transit_added_p99_ms"] is not None and r["transit_added_p99_ms"] <= bound]
                past = [r["c"] for r in ladder if r not in within]
                at = within[-1] if within else None
                out.append({"bound_ms": bound, "peer": peer, "round": rnd, "max_c": at["c"] if at else 0,
                            "first_c_past": past[0] if past else None, "added_p99_ms": at and at["transit_added_p99_ms"],
                            "ttft_added_p99_ms": at and at["ttft_added_p99_ms"]})  # fmt: skip
    return out


def ratios(cap: list[dict], peer: str = "litellm", ours: str = "relay") -> list[dict]:
    """The relay's largest C over the peer's, per bound and round (None: the peer kept none)."""
    by = {(r["bound_ms"], r["peer"], r["round"]): r["max_c"] for r in cap}
    out = []
    for bound, p, rnd in by:
        if p == ours and (bound, peer, rnd) in by:
            theirs = by[(bound, peer, rnd)]
            out.append({"bound_ms": bound, "round": rnd, "relay_max_c": by[(bound, p, rnd)], "litellm_max_c": theirs,
                        "ratio": round(by[(bound, p, rnd)] / theirs, 1) if theirs else None})  # fmt: skip
    return out


def print_capacity(cap: list[dict], ladder: list[int]) -> None:
    print(f"\nlargest C on the ladder {','.join(map(str, ladder))} with added gap p99 within the bound")
    print(f"{'bound ms':>8} {'peer':>8} {'rnd':>3} {'max C':>6} {'1st past':>8} {'added p99 there':>15} {'ttft+ p99 there':>15}")
    for r in cap:
        print(f"{r['bound_ms']:>8g} {r['peer']:>8} {r['round'] + 1:>3} {r['max_c']:>6} {r['first_c_past']!s:>8} {r['added_p99_ms']!s:>15}"
              f" {r['ttft_added_p99_ms']!s:>15}")  # fmt: skip
    for r in ratios(cap):
        print(f"  bound {r['bound_ms']:g} ms, round {r['round'] + 1}: relay {r['relay_max_c']} vs LiteLLM"
              f" {r['litellm_max_c']} streams -> {r['ratio'] if r['ratio'] is not None else 'n/a'}x")  # fmt: skip
