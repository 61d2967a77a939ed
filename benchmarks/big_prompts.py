"""The big-prompt scenario of benchmarks/agents.py: agent transcripts of 50 KB, 400 KB and 2 MB.

A coding agent sends its whole conversation every turn: a long system prompt, a few dozen tool
definitions with JSON schemas, and many turns of assistant tool calls and tool results (files
read, commands run).  ``transcript()`` builds one of about the asked size, in OpenAI Chat format
and in Anthropic Messages format (the same turns: ``tool_calls``/``tool`` messages become
``tool_use``/``tool_result`` blocks).  The last user message carries ``__N__``, which the load
generator makes distinct per request, so the relay's cache misses and every request is parsed,
validated, keyed, estimated and (translated) converted in full.

Workloads, each on one keep-alive connection, closed loop, against the instant fake upstream
(``fake_upstream.py``), in the same run:

* ``direct``: the OpenAI body straight to the upstream (it parses the JSON too);
* ``same-format``: the OpenAI body to the relay's ``/ai/v1/chat/completions``;
* ``translated``: the Anthropic body to the relay's ``/ai/v1/messages`` (Anthropic in, the
  OpenAI-compatible upstream out: converted both ways).

Added latency = relay p50 minus direct p50; CPU per request = the relay process's CPU over the
window divided by its requests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as R  # noqa: E402

SIZES = {"50KB": 50_000, "400KB": 400_000, "2MB": 2_000_000}

CODE = '''def handle(self, request):
    """Answer one request: parse it, check the caller, route it, record it."""
    call = Call(request, started=time.monotonic())
    for stage in self.stages:
        answer = await stage(self, call)
        if answer is not None:
            return self.finish(call, answer)
    raise RuntimeError(f"no stage answered {call.request_id}")
'''


def _tools(n: int = 24) -> list[dict]:
    return [{
        "type": "function",
        "function": {
            "name": f"tool_{i}", "description": f"Tool number {i}: reads, edits or runs something in the workspace. " * 3,
            "parameters": {"type": "object", "properties": {
                "path": {"type": "string", "description": "file path relative to the repository root"},
                "content": {"type": "string", "description": "the new text"},
                "line": {"type": "integer", "minimum": 1}, "dry_run": {"type": "boolean"},
            }, "required": ["path"]},
        },
    } for i in range(n)]  # fmt: skip


def transcript(size: int) -> tuple[dict, dict]:
    """(OpenAI body, Anthropic body) of about ``size`` bytes (the OpenAI one)."""
    system = "You are a coding agent working in a large Python repository. " * 150
    tools = _tools()
    oa: list[dict] = [{"role": "system", "content": system}]
    an: list[dict] = []
    turn = 0
    while len(json.dumps(oa)) + len(json.dumps(tools)) < size - 2_000:
        call_id = f"call_{turn:05d}"
        user = f"Turn {turn}: look at module_{turn}.py and fix the failing test."
        args = json.dumps({"path": f"src/module_{turn}.py", "line": turn + 1})
        result = f"# src/module_{turn}.py\n" + CODE * 6
        oa += [
            {"role": "user", "content": user},
            {"role": "assistant", "content": "Reading the file.", "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": f"tool_{turn % 24}", "arguments": args}}]},
            {"role": "tool", "tool_call_id": call_id, "content": result},
            {"role": "assistant", "content": f"The failure in module_{turn} comes from the stage loop; patched."},
        ]  # fmt: skip
        an += [
            {"role": "user", "content": user},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Reading the file."},
                {"type": "tool_use", "id": call_id, "name": f"tool_{turn % 24}", "input": json.loads(args)}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call_id, "content": result}]},
            {"role": "assistant", "content": f"The failure in module_{turn} comes from the stage loop; patched."},
        ]  # fmt: skip
        turn += 1
    last = "Now run the whole test suite and report. __N__"
    oa.append({"role": "user", "content": last})
    an.append({"role": "user", "content": last})
    openai_body = {"model": "bench-model", "messages": oa, "tools": tools, "max_tokens": 256}
    anthropic_tools = [{"name": t["function"]["name"], "description": t["function"]["description"],
                        "input_schema": t["function"]["parameters"]} for t in tools]  # fmt: skip
    anthropic_body = {"model": "bench-model", "system": system, "messages": an, "tools": anthropic_tools, "max_tokens": 256}
    return openai_body, anthropic_body


def _window(args, port: int, path: str, body_file: Path, pid: int) -> dict:
    cpu0 = R.proc_cpu_s(pid)
    cmd = [sys.executable, str(R.BENCH / "loadgen.py"), "--port", str(port), "--path", path, "--body-file", str(body_file),
           "--mode", "closed", "--connections", "1", "--duration", str(args.prompt_duration), "--warmup", "0.5"]  # fmt: skip
    r = json.loads(R.run_bounded(cmd, args.client_cpus, args.prompt_duration + 60).strip().splitlines()[-1])
    cpu = R.proc_cpu_s(pid) - cpu0
    n = r["requests"]
    r["server_cpu_ms_per_req"] = round(cpu / n * 1e3, 3) if n else None  # warm-up requests included in neither
    return r


def run(args, tmp: Path) -> dict:
    up_proc, up_port = R.start_upstream(args.upstream_cpus, tmp)
    sc = R.relay_scenario("relay-prompts", "example service, production defaults", extra_toml=args.relay_toml_extra)
    srv = R.start_server(sc, SimpleNamespace(server_loop=args.server_loop, server_cpus=args.server_cpus), up_port, up_proc, tmp)
    print(f"big prompts: fake upstream {up_port}, relay {srv.port}")
    out: dict = {"raw": [], "summary": []}
    for rnd in range(args.rounds):
        for label, size in SIZES.items():
            oa, an = transcript(size)
            files = {}
            for name, body in (("openai", oa), ("anthropic", an)):
                files[name] = tmp / f"prompt-{label}-{name}.json"
                files[name].write_text(json.dumps(body))
            res = {}
            for name, port, path, f, pid in (
                ("direct", up_port, "/v1/chat/completions", files["openai"], up_proc.pid),
                ("same-format", srv.port, srv.path(), files["openai"], srv.pid),
                ("translated", srv.port, "/ai/v1/messages", files["anthropic"], srv.pid),
            ):
                r = _window(args, port, path, f, pid)
                bad = r["errors"] + r["non2xx"]
                res[name] = r
                out["raw"].append(dict(r, round=rnd, size=label, bytes=f.stat().st_size, target=name))
                print(f"  round {rnd + 1} {label:>5} {name:<12} {f.stat().st_size / 1e3:8.0f} KB  {r['requests']:>5} req"
                      f"  p50 {r['latency_ms']['p50']:.2f} ms  p99 {r['latency_ms']['p99']:.2f} ms"
                      f"  cpu/req {r['server_cpu_ms_per_req']} ms" + (f"  ERRORS {bad} {r['status']}" if bad else ""), flush=True)  # fmt: skip
            d = res["direct"]["latency_ms"]["p50"]
            out["summary"].append({
                "round": rnd, "size": label,
                "same_format_added_p50_ms": round(res["same-format"]["latency_ms"]["p50"] - d, 3),
                "translated_added_p50_ms": round(res["translated"]["latency_ms"]["p50"] - d, 3),
                "same_format_cpu_ms": res["same-format"]["server_cpu_ms_per_req"],
                "translated_cpu_ms": res["translated"]["server_cpu_ms_per_req"],
                "upstream_cpu_ms": res["direct"]["server_cpu_ms_per_req"],
            })  # fmt: skip
    R.stop_server(srv)
    print("\nbig prompts: added p50 over direct (ms), relay CPU per request (ms)")
    for s in out["summary"]:
        print(f"  {s['size']:>5} round {s['round'] + 1}: same-format +{s['same_format_added_p50_ms']} ms ({s['same_format_cpu_ms']} ms CPU)"
              f"  translated +{s['translated_added_p50_ms']} ms ({s['translated_cpu_ms']} ms CPU)")  # fmt: skip
    return out


if __name__ == "__main__":  # print the sizes of the generated transcripts
    for label, size in SIZES.items():
        a, b = transcript(size)
        print(label, len(json.dumps(a)), len(json.dumps(b)), len(a["messages"]))

